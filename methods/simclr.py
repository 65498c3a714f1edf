"""SimCLR: two augmented views of each image; an MLP projection head; the NT-Xent
(normalized temperature-scaled cross-entropy) loss pulls the two views of an image together
and pushes the other 2N-2 views of the batch away.

[0] Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
    2020, https://arxiv.org/abs/2002.05709
Recipe: lightly docs/source/getting_started/benchmarks/cifar10_benchmark.py (head (d, d, 128), temperature 0.5,
SGD lr 0.06 x batch/128, wd 5e-4); solo-learn uses temperature 0.2 and LARS (see docs/protocols.md).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from bench.backbones import Backbone
from methods.base import AUGMENTED, DataInfo, Logs, Method, OptimConfig, forward_views, register


@dataclass(frozen=True)
class SimCLRConfig:
    proj_hidden_dim: int = 0      # 0 = the backbone's feature size, as in lightly's benchmark
    proj_output_dim: int = 128
    temperature: float = 0.5
    gather_distributed: bool = True  # negatives from every process under DDP
    forward_views: str = "separate"  # separate: one pass per view (BatchNorm per view), as lightly; joint: one pass over both


@register
class SimCLR(Method):
    name = "simclr"
    paradigm = "contrastive"
    views = (AUGMENTED, AUGMENTED)
    Config = SimCLRConfig
    optim = OptimConfig(name="sgd", lr=0.06, lr_batch_size=128, weight_decay=5e-4)
    native_aug = {}  # the shared CIFAR pipeline *is* the SimCLR recipe
    reference = "Chen et al. 2020, arXiv:2002.05709"

    def __init__(self, cfg: SimCLRConfig, backbone: Backbone, data: DataInfo) -> None:
        super().__init__(cfg, backbone, data)
        d = backbone.num_features
        self.projection = SimCLRProjectionHead(d, cfg.proj_hidden_dim or d, cfg.proj_output_dim)
        self.criterion = NTXentLoss(temperature=cfg.temperature, gather_distributed=cfg.gather_distributed)

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        # separate (default): one pass per view, BatchNorm statistics per view, as lightly's examples
        # (issue #14: the joint pass, statistics over both views, trained 0.7 kNN points lower)
        z1, z2 = forward_views(lambda x: self.projection(self.backbone(x)), views, self.cfg.forward_views)
        loss = self.criterion(z1, z2)
        return loss, {"ntxent": loss.detach()}
