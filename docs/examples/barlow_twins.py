"""Barlow Twins as an ssl-bench plug-in: `python -m bench run --suite quick --plugin
docs/examples/barlow_twins.py --methods barlow-twins,simclr` (docs/plugins.md walks through it).

Two augmented views of each image go through the backbone and a projector; the loss drives the
cross-correlation matrix of the two batches of (batch-normalized) projections towards the
identity: its diagonal to 1 (invariance to the augmentation), its off-diagonal to 0 (redundancy
reduction), the latter weighted by lambda.

[0] Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", 2021,
    https://arxiv.org/abs/2103.03230
Recipe: lightly's BarlowTwinsProjectionHead and BarlowTwinsLoss (lambda 5e-3); the CIFAR
optimizer of solo-learn's Barlow Twins scripts (LARS, lr 0.3 at batch 256, eta 0.02 with
clipping, weight decay 1e-4) and its loss scale 0.1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead

from methods import AUGMENTED, DataInfo, Method, OptimConfig, register
from methods.base import Logs, forward_views


@dataclass(frozen=True)
class BarlowTwinsConfig:
    proj_hidden_dim: int = 2048
    proj_output_dim: int = 2048
    lambda_param: float = 5e-3        # weight of the off-diagonal (redundancy) term
    scale_loss: float = 0.1           # solo-learn's CIFAR scale of the whole loss
    forward_views: str = "separate"   # one backbone pass per view, as the built-in methods


@register
class BarlowTwins(Method):
    name = "barlow-twins"
    paradigm = "non-contrastive"
    views = (AUGMENTED, AUGMENTED)
    Config = BarlowTwinsConfig
    optim = OptimConfig(name="lars", lr=0.3, lr_batch_size=256, weight_decay=1e-4,
                        lars_trust_coefficient=0.02, lars_clip_lr=True)
    reference = "Zbontar et al. 2021, arXiv:2103.03230"

    def __init__(self, cfg: BarlowTwinsConfig, backbone, data: DataInfo) -> None:
        super().__init__(cfg, backbone, data)
        self.projection = BarlowTwinsProjectionHead(backbone.num_features, cfg.proj_hidden_dim,
                                                    cfg.proj_output_dim)
        self.criterion = BarlowTwinsLoss(lambda_param=cfg.lambda_param)

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        z1, z2 = forward_views(lambda x: self.projection(self.backbone(x)), views, self.cfg.forward_views)
        loss = self.cfg.scale_loss * self.criterion(z1, z2)
        return loss, {"barlow": loss.detach()}
