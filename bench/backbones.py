"""Backbone registry on timm. Every method in a suite is built on the same backbone spec.

`resnet18-cifar` is the shared CIFAR backbone of the SSL literature: ResNet-18 with a 3x3
stride-1 first conv and no max-pool (keeping the ImageNet stem on 32px images costs ~10
points, lightly #1419). Features = global average pool, before any head.

Besides the registered names, `get("timm:MODEL")` builds ANY timm model (random init,
`num_classes=0`, so its output is the pooled feature before any head), and
`timm:MODEL@s1` / `timm:MODEL@s2` give a timm ResNet-family model the small-image stem
(3x3 conv of stride 1 / 2, no max-pool) that resnet18-cifar / resnet-tiny use.
"""
from __future__ import annotations

import difflib
import functools
import sys
from dataclasses import dataclass
from typing import Any, Callable

import timm
import torch
from torch import nn
from timm.models import model_entrypoint
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer

from bench.errors import UserError
from bench.registry import Registry


class Backbone(nn.Module):
    """A timm trunk that maps images (B,C,H,W) to pooled features (B, num_features)."""

    def __init__(self, net: nn.Module, kind: str, patch_size: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.kind = kind  # "cnn" or "vit": MAE picks its variant from this
        self.patch_size = patch_size
        # the width of net(x): timm's head_hidden_size where the pre-logits head widens the trunk
        # (e.g. MobileNetV3's conv_head), else num_features
        self.num_features: int = getattr(net, "head_hidden_size", None) or net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    build_fn: Callable[[int, int], Backbone]  # (in_chans, image_size) -> Backbone

    def build(self, in_chans: int, image_size: int) -> Backbone:
        return self.build_fn(in_chans, image_size)


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def small_stem(net: ResNet, in_chans: int, stride: int) -> ResNet:
    """Replace the 7x7/2 conv (or a deep 3-conv stem) + max-pool stem by one 3x3 conv of the given stride."""
    width = net.bn1.num_features  # the stem's output width (conv1 is a Sequential in deep-stem variants)
    net.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=stride, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def _resnet18_cifar(in_chans: int, image_size: int) -> Backbone:
    net = timm.create_model("resnet18", num_classes=0, in_chans=in_chans)
    return Backbone(small_stem(net, in_chans, stride=1), "cnn")


def _resnet18(in_chans: int, image_size: int) -> Backbone:
    return Backbone(timm.create_model("resnet18", num_classes=0, in_chans=in_chans), "cnn")


def _resnet_tiny(stride: int) -> Callable[[int, int], Backbone]:
    def build(in_chans: int, image_size: int) -> Backbone:
        net = ResNet(BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=32,
                     num_classes=0, in_chans=in_chans)
        return Backbone(small_stem(net, in_chans, stride=stride), "cnn")
    return build


def _vit(arch: str, patch: int) -> Callable[[int, int], Backbone]:
    def build(in_chans: int, image_size: int) -> Backbone:
        net = timm.create_model(arch, num_classes=0, in_chans=in_chans, img_size=image_size,
                                patch_size=patch, global_pool="token")
        return Backbone(net, "vit", patch_size=patch)
    return build


BACKBONES.register("resnet18-cifar", BackboneSpec(
    "resnet18-cifar", "ResNet-18, 3x3 stride-1 stem, no max-pool, 512-d (GPU suites)", _resnet18_cifar))
BACKBONES.register("resnet18", BackboneSpec(
    "resnet18", "ResNet-18 with the ImageNet 7x7/2 stem and max-pool, 512-d (stem ablation)", _resnet18))
BACKBONES.register("resnet-tiny", BackboneSpec(
    "resnet-tiny", "ResNet-10-style [1,1,1,1] BasicBlocks, widths 32-256, 3x3/2 stem, 256-d (CPU suites, 28px)",
    _resnet_tiny(stride=2)))
BACKBONES.register("resnet-tiny-s1", BackboneSpec(
    "resnet-tiny-s1", "resnet-tiny with a 3x3 stride-1 stem, 256-d (CPU suites, tiny images such as 8px digits)",
    _resnet_tiny(stride=1)))
BACKBONES.register("vit-tiny-p4", BackboneSpec(
    "vit-tiny-p4", "ViT-Tiny (192-d, depth 12, 3 heads), patch 4 (64 tokens at 32px), CLS features",
    _vit("vit_tiny_patch16_224", 4)))


TIMM_PREFIX = "timm:"
SMALL_STEMS = {"s1": 1, "s2": 2}  # suffix -> stride of the 3x3 first conv (no max-pool either way)
TIMM_SYNTAX = "timm:MODEL[@s1|@s2]"
_RESNET_FAMILY = "resnet*, resnext*, seresnet*, ecaresnet*, wide_resnet*, res2net*, resnest*, skresnet* ..."


def get(name: str) -> BackboneSpec:
    """A registered backbone, or `timm:MODEL[@s1|@s2]` for any timm model; UserError if unknown."""
    if name in BACKBONES:  # first: a plug-in may register any name
        return BACKBONES.get(name)
    if name.startswith(TIMM_PREFIX):
        return timm_spec(name)
    try:
        return BACKBONES.get(name)
    except UserError as e:
        raise UserError(f"{e}, or {TIMM_SYNTAX} (any timm model)") from None


def timm_spec(name: str) -> BackboneSpec:
    """The spec of `timm:MODEL[@s1|@s2]`, its model name and stem checked before anything is built."""
    model, _, stem = name[len(TIMM_PREFIX):].partition("@")
    if not model:
        raise UserError(f"backbone {name!r}: name a timm model, e.g. timm:resnet50 or timm:resnet18@s1")
    if stem and stem not in SMALL_STEMS:
        raise UserError(f"backbone {name!r}: unknown stem '@{stem}'; choose @s1 (3x3 stride-1 conv, no max-pool) "
                        "or @s2 (3x3 stride-2 conv, no max-pool)")
    if "." in model:  # a pretrained tag selects weights, and these backbones are trained from scratch
        raise UserError(f"backbone {name!r}: no pretrained tag (the backbone starts from a random init); "
                        f"use timm:{model.split('.')[0]}")
    if not timm.is_model(model):
        close = difflib.get_close_matches(model, timm.list_models(), n=5)
        hint = (f"; close matches: {', '.join(TIMM_PREFIX + c for c in close)}" if close
                else "; timm.list_models('*pattern*') lists the names")
        raise UserError(f"unknown timm model {model!r} (backbone {name!r}){hint}")
    if stem and not is_resnet_family(model):
        raise UserError(f"backbone {name!r}: a small stem (@{stem}) replaces the conv1 + max-pool stem of timm's "
                        f"ResNet family ({_RESNET_FAMILY}); {model} has no such stem, use timm:{model}")
    what = f", 3x3 stride-{SMALL_STEMS[stem]} stem, no max-pool" if stem else ""
    return BackboneSpec(name, f"timm {model}{what} (random init, pooled features before the head)",
                        functools.partial(build_timm, model, SMALL_STEMS.get(stem)))


def is_resnet_family(model: str) -> bool:
    """Whether timm builds `model` with its ResNet class (conv1 + bn1 + maxpool stem): the models
    of the modules that use it (resnet, resnest, res2net, sknet), known without building one."""
    module = sys.modules[model_entrypoint(model).__module__]
    return getattr(module, "ResNet", None) is ResNet


def create_timm(model: str, in_chans: int, image_size: int) -> tuple[nn.Module, dict[str, Any]]:
    """timm.create_model(model, **kwargs) and those kwargs: pretrained=False, num_classes=0 (the
    output is the pooled feature before any head), in_chans, and img_size=image_size where the model
    takes one (ViTs and other patch-embedding models, which otherwise expect their default 224 px)."""
    kwargs: dict[str, Any] = dict(pretrained=False, num_classes=0, in_chans=in_chans, img_size=image_size)
    rng = torch.get_rng_state()
    try:
        try:
            return timm.create_model(model, **kwargs), kwargs
        except TypeError as e:  # raised when binding the constructor's arguments: no init has run yet
            if "img_size" not in str(e):
                raise
            torch.set_rng_state(rng)  # the build stays a function of the seed alone either way
            del kwargs["img_size"]
            return timm.create_model(model, **kwargs), kwargs
    except Exception as e:  # e.g. an image size the model cannot take: the user's choice, one line
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        raise UserError(f"timm:{model} cannot be built for {in_chans}-channel {image_size}px images ({reason})") from None


def build_timm(model: str, stem_stride: int | None, in_chans: int, image_size: int) -> Backbone:
    """`create_timm`'s net, with the small stem of `stem_stride` if given."""
    net, _ = create_timm(model, in_chans, image_size)
    if stem_stride is not None:
        if not (isinstance(net, ResNet) and hasattr(net, "maxpool")):
            raise UserError(f"timm:{model}: a small stem needs timm's ResNet family ({_RESNET_FAMILY})")
        small_stem(net, in_chans, stem_stride)
    patch = getattr(getattr(net, "patch_embed", None), "patch_size", None)
    if isinstance(net, VisionTransformer) or patch is not None:
        if patch is None:
            raise UserError(f"timm:{model}: its patch size cannot be read (no patch_embed.patch_size)")
        patch = int(patch[0] if isinstance(patch, (tuple, list)) else patch)
        if image_size < patch:
            raise UserError(f"timm:{model}: {image_size}px images are smaller than its {patch}px patches")
        backbone = Backbone(net, "vit", patch_size=patch)
    else:
        backbone = Backbone(net, "cnn")
    _dry_run(backbone, model, in_chans, image_size)
    return backbone


@torch.no_grad()
def _dry_run(backbone: Backbone, model: str, in_chans: int, image_size: int) -> None:
    """One image through the net in eval mode (no BatchNorm statistics change, no RNG drawn), so
    an image too small for the model's downsampling is one line now, not a failed run later."""
    was_training = backbone.training
    try:
        out = backbone.eval()(torch.zeros(1, in_chans, image_size, image_size))
    except RuntimeError as e:
        reason = str(e).splitlines()[0][:300]
        raise UserError(f"timm:{model} cannot take {in_chans}-channel {image_size}px images ({reason}); "
                        "choose a larger image size or a model that downsamples less (@s1/@s2 for ResNets)") from None
    finally:
        backbone.train(was_training)
    if out.shape != (1, backbone.num_features):  # features must be pooled vectors of the declared width
        raise UserError(f"timm:{model}: its output {tuple(out.shape)} is not a pooled (1, {backbone.num_features}) "
                        "feature vector")
