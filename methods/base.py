"""The method plug-in shape shared by every method and baseline.

A method is an nn.Module built from (config, backbone, data info). The harness owns data,
augmentation, optimisation and evaluation; a method only says which views it consumes,
computes its loss in `training_step`, and exposes `encode` (backbone features, before any
head), which is all any evaluation uses.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from bench.backbones import Backbone
from bench.config import OptimConfig  # noqa: F401  (methods declare their recipe with it)
from bench.registry import Registry

AUGMENTED = "augmented"  # a fresh draw of the suite's augmentation pipeline
CLEAN = "clean"          # the un-augmented, normalized image

Logs = dict[str, "torch.Tensor | float"]  # what training_step logs besides the loss


@dataclass(frozen=True)
class DataInfo:
    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class Method(nn.Module):
    """Base class: subclasses set the class attributes and implement `training_step`."""

    name: ClassVar[str]
    paradigm: ClassVar[str]            # autoencoding | contrastive | non-contrastive | masked | baseline
    views: ClassVar[tuple[str, ...]]   # which views `training_step` receives, in order
    Config: ClassVar[type]             # frozen dataclass of the recipe's defaults
    optim: ClassVar[OptimConfig] = OptimConfig()
    native_aug: ClassVar[dict[str, Any]] = {}  # AugConfig overrides for `--aug native`
    trains: ClassVar[bool] = True      # False for baselines evaluated untrained (pixels, random-init)
    uses_labels: ClassVar[bool] = False  # trains on the labels (the supervised baseline): not on unlabeled data
    reference: ClassVar[str] = ""

    def __init__(self, cfg: Any, backbone: Backbone, data: DataInfo) -> None:
        super().__init__()
        self.cfg, self.backbone, self.data = cfg, backbone, data

    @property
    def variant(self) -> str:
        """What exactly ran (e.g. MAE on a CNN runs masked-input reconstruction)."""
        return self.name

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        """(loss to minimize, terms to log). Logged terms are detached 0-dim tensors (or Python
        numbers): the loop reads them one step later, so logging never stalls the GPU."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features every evaluation uses: the backbone output, before any head."""
        return self.backbone(x)

    def on_step_start(self, step: int, total_steps: int) -> None:
        """Hook before each step's forward (e.g. BYOL sets the momentum this step logs and uses)."""

    def on_step_end(self, step: int, total_steps: int) -> None:
        """Hook after each optimizer step (e.g. BYOL's momentum update)."""

    def after_optimizer_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> Logs:
        """Updates a method makes with optimizers of its own, after the harness's optimizer step
        on the same views (the AAE's regularization phase); returns terms to log."""
        return {}

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor | None:
        """Autoencoders return reconstructions of normalized `x` for the report's grid."""
        return None

    def no_weight_decay(self) -> set[int]:
        """ids of >1-D parameters exempt from weight decay (biases and norms, 1-D, always are):
        the tokens and position embeddings a timm ViT names in `no_weight_decay()`, as MAE and
        DeiT train them; CNN backbones name none."""
        net = self.backbone.net
        names = net.no_weight_decay() if hasattr(net, "no_weight_decay") else set()
        return {id(p) for n, p in net.named_parameters() if n in names}

    def optimized_parameters(self) -> list[nn.Parameter]:
        """Parameters the harness optimizer updates (a method with its own inner optimizer,
        such as the AAE discriminator, leaves those out)."""
        return [p for p in self.parameters() if p.requires_grad]


VIEW_FORWARDS = ("joint", "separate")


def forward_views(net: Callable[[torch.Tensor], torch.Tensor], views: list[torch.Tensor],
                  mode: str) -> list[torch.Tensor]:
    """`net` applied to each view. "joint": one pass over the concatenated views, so BatchNorm
    normalizes with statistics over all of them; "separate": one pass per view, statistics per
    view, as lightly's examples forward them (docs/protocols.md)."""
    if mode == "joint":
        return list(net(torch.cat(views)).chunk(len(views)))
    if mode == "separate":
        return [net(v) for v in views]
    from bench.errors import UserError
    raise UserError(f"forward_views={mode!r}: choose one of {', '.join(VIEW_FORWARDS)}")


METHODS: Registry[type[Method]] = Registry("method")
BASELINES: Registry[type[Method]] = Registry("baseline")


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: add a method to the registry under `cls.name`."""
    (BASELINES if cls.paradigm == "baseline" else METHODS).register(cls.name, cls)
    return cls


def get(name: str) -> type[Method]:
    """A method or baseline class by name (UserError listing both registries if unknown)."""
    if name in BASELINES:
        return BASELINES.get(name)
    if name not in METHODS:
        from bench.errors import UserError
        known = ", ".join(METHODS.names() + BASELINES.names())
        raise UserError(f"unknown method {name!r}; choose one of: {known}")
    return METHODS.get(name)
