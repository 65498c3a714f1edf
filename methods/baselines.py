"""Baselines evaluated by the same code as every method, so each SSL number has a floor and a
ceiling beside it:

- `pixels`: the raw, normalized pixels, flattened, as features (no network);
- `random-init`: the suite backbone, untrained (seeded init);
- `supervised`: the suite backbone trained with labels (cross-entropy through a linear
  head), with the same augmentation and training budget as the SSL methods.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bench.backbones import Backbone
from methods.base import AUGMENTED, CLEAN, DataInfo, Method, OptimConfig, register, Logs


@dataclass(frozen=True)
class NoConfig:
    pass


@register
class Pixels(Method):
    name = "pixels"
    paradigm = "baseline"
    views = (CLEAN,)
    Config = NoConfig
    trains = False

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


@register
class RandomInit(Method):
    name = "random-init"
    paradigm = "baseline"
    views = (CLEAN,)
    Config = NoConfig
    trains = False


@dataclass(frozen=True)
class SupervisedConfig:
    label_smoothing: float = 0.0


@register
class Supervised(Method):
    name = "supervised"
    uses_labels = True
    paradigm = "baseline"
    views = (AUGMENTED,)
    Config = SupervisedConfig
    optim = OptimConfig(name="sgd", lr=0.1, lr_batch_size=256, weight_decay=5e-4)

    def __init__(self, cfg: SupervisedConfig, backbone: Backbone, data: DataInfo) -> None:
        super().__init__(cfg, backbone, data)
        self.head = nn.Linear(backbone.num_features, data.num_classes)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        logits = self.head(self.backbone(views[0]))
        loss = self.criterion(logits, labels)
        acc = (logits.argmax(1) == labels).float().mean()
        return loss, {"ce": loss.detach(), "train_acc": acc}
