"""The classifier every LSI row trains: the suite's backbone + a linear head, trained with
(soft) labels by the harness's ONE training loop (bench/engine/train.py), and scored once on
the test split (top-1).

A row differs only in what a batch holds: the clean images (`none`), the suite's augmented
views (`standard`), a pixel-mixed batch (`mixup`), or the augmented views plus decoded latent
interpolations (`lsi-*`). The loss is always the soft-target cross-entropy averaged over every
image of the batch (real images carry their one-hot label). The recipe is the `supervised`
baseline's (methods/baselines.py): SGD 0.1 @ 256, momentum 0.9, wd 5e-4 on weights, linear
warmup then cosine, the lr scaled linearly with the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.backbones import Backbone
from bench.engine.augment import normalize
from bench.lsi import mixing
from bench.lsi.suites import ROW_GENERATOR
from methods.base import AUGMENTED, CLEAN, DataInfo, Logs, Method
from methods.baselines import Supervised


@dataclass(frozen=True)
class RowConfig:
    """How one row builds its batches (stored with every run)."""
    row: str
    mixing: str                # none | mixup | lsi
    augment: bool              # the suite's augmentation applied to every real image first
    ratio: float = 0.0         # lsi: generated images per real image
    lam: str = ""              # lsi: lambda distribution
    mixup_alpha: float = 0.0   # mixup: Beta(alpha, alpha)
    generator: str = ""        # lsi: the generator kind
    generator_key: str = ""    # lsi: the cache key of the exact generator used


def row_config(row: str, ratio: float, lam: str, alpha: float, generator_key: str = "") -> RowConfig:
    if row == "none":
        return RowConfig(row, "none", augment=False)
    if row == "standard":
        return RowConfig(row, "none", augment=True)
    if row == "mixup":
        return RowConfig(row, "mixup", augment=True, mixup_alpha=alpha)
    return RowConfig(row, "lsi", augment=True, ratio=ratio, lam=lam, generator=ROW_GENERATOR[row],
                     generator_key=generator_key)


class Classifier(Method):
    """Backbone + linear head on soft targets; not a registered method (it has no SSL use)."""
    name = "lsi-classifier"
    paradigm = "supervised"
    views = (AUGMENTED,)
    Config = RowConfig
    optim = Supervised.optim      # the supervised baseline's recipe
    uses_labels = True

    def __init__(self, cfg: RowConfig, backbone: Backbone, data: DataInfo, codec: mixing.LatentCodec | None = None) -> None:
        super().__init__(cfg, backbone, data)
        self.views = (AUGMENTED,) if cfg.augment else (CLEAN,)
        self.head = nn.Linear(backbone.num_features, data.num_classes)
        if cfg.mixing == "lsi" and codec is None:
            raise ValueError(f"row {cfg.row} needs a generator")
        # a list, not an attribute: the frozen generator is no submodule, so it is neither in the
        # optimizer, nor in the checkpoint, nor switched to train mode by the loop
        self._codec = [codec] if codec is not None else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def batch(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and soft targets one step trains on."""
        k = self.data.num_classes
        if self.cfg.mixing == "mixup":
            return mixing.mixup(x, labels, k, self.cfg.mixup_alpha)
        targets = mixing.one_hot(labels, k)
        if self.cfg.mixing == "lsi":
            generated, soft, _, _ = mixing.lsi(x, labels, k, self._codec[0], self.cfg.ratio, self.cfg.lam)
            return torch.cat([x, generated.to(x.dtype)]), torch.cat([targets, soft])
        return x, targets

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        x, targets = self.batch(views[0], labels)
        logits = self(x)
        loss = mixing.soft_cross_entropy(logits, targets)
        real = labels.shape[0]
        acc = (logits[:real].argmax(1) == labels).float().mean()  # on the real images of the batch
        return loss, {"ce": loss.detach(), "train_acc": acc.detach(), "batch_images": float(x.shape[0])}


@torch.no_grad()
def top1(model: Classifier, images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...],
         std: tuple[float, ...], device: torch.device, batch: int = 1024) -> float:
    """Test top-1 (%) of the classifier in eval mode on un-augmented, normalized images."""
    was = model.training
    model.eval()
    correct = 0
    try:
        for s in range(0, len(images), batch):
            x = normalize(images[s:s + batch].to(device), mean, std)
            correct += int((model(x).argmax(1).cpu() == labels[s:s + batch]).sum())
    finally:
        model.train(was)
    return 100.0 * correct / len(images)
