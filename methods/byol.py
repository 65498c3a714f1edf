"""BYOL: an online network (backbone, projector, predictor) predicts the projection that a
target network, an exponential moving average of the online backbone + projector, makes of
another augmented view of the same image; no negatives, the loss is a negative cosine
similarity, symmetrised over the two views, and the target branch gets no gradient.

[0] Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
    2020, https://arxiv.org/abs/2006.07733
Recipe: lightly (`examples/pytorch/byol.py`, cifar10 benchmark: projector (d, 2d, 256),
predictor (256, 2d, 256), SGD lr 0.06 x batch/128, wd 5e-4) with solo-learn's momentum
schedule (0.99 -> 1.0, cosine over training); solo-learn's CIFAR recipe uses 4096-d hidden
layers and LARS lr 1.0 (docs/protocols.md). Native augmentation: asymmetric jitter strengths
(0.4, 0.4, 0.2, 0.1) and solarization (solo-learn; the harness draws one solarization
probability for both views).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule

from bench.backbones import Backbone
from methods.base import AUGMENTED, DataInfo, Logs, Method, OptimConfig, forward_views, register


@dataclass(frozen=True)
class BYOLConfig:
    proj_hidden_dim: int = 0       # 0 = 2 x the backbone's feature size (lightly cifar10: 1024 for ResNet-18)
    proj_output_dim: int = 256     # projection (and prediction) size
    pred_hidden_dim: int = 0       # 0 = 2 x the backbone's feature size
    momentum_start: float = 0.99   # target EMA momentum at step 0 ...
    momentum_end: float = 1.0      # ... rising to this by the last step (cosine schedule)
    forward_views: str = "separate"  # separate: one pass per view and network (BatchNorm per view), as lightly; joint: one pass


@register
class BYOL(Method):
    name = "byol"
    paradigm = "non-contrastive"
    views = (AUGMENTED, AUGMENTED)
    Config = BYOLConfig
    optim = OptimConfig(name="sgd", lr=0.06, lr_batch_size=128, weight_decay=5e-4)
    native_aug = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1, "solarize_p": 0.1}
    reference = "Grill et al. 2020, arXiv:2006.07733"

    def __init__(self, cfg: BYOLConfig, backbone: Backbone, data: DataInfo) -> None:
        super().__init__(cfg, backbone, data)
        d = backbone.num_features
        self.projection = BYOLProjectionHead(d, cfg.proj_hidden_dim or 2 * d, cfg.proj_output_dim)
        self.prediction = BYOLPredictionHead(cfg.proj_output_dim, cfg.pred_hidden_dim or 2 * d, cfg.proj_output_dim)
        # the target network: a frozen copy, moved only by the moving average in on_step_end
        self.backbone_momentum = copy.deepcopy(backbone)
        self.projection_momentum = copy.deepcopy(self.projection)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_momentum)
        self.criterion = NegativeCosineSimilarity()
        self.momentum = cfg.momentum_start  # set per step by on_step_start (also right after a resume)

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        mode = self.cfg.forward_views  # separate (default): one pass per view, as lightly
        p0, p1 = forward_views(lambda x: self.prediction(self.projection(self.backbone(x))), views, mode)
        with torch.no_grad():
            z0, z1 = forward_views(lambda x: self.projection_momentum(self.backbone_momentum(x)), views, mode)
        # each view's online prediction regresses the target projection of the other view
        loss = 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))
        return loss, {"neg_cosine": loss.detach(), "momentum": self.momentum}

    def on_step_start(self, step: int, total_steps: int) -> None:
        """This step's EMA momentum (0.99 -> 1, cosine over training): logged by this step's
        training_step and used by its on_step_end."""
        self.momentum = cosine_schedule(step, total_steps, self.cfg.momentum_start, self.cfg.momentum_end)

    @torch.no_grad()
    def on_step_end(self, step: int, total_steps: int) -> None:
        """EMA update of the target network after the optimizer step, at this step's momentum."""
        update_momentum(self.backbone, self.backbone_momentum, m=self.momentum)
        update_momentum(self.projection, self.projection_momentum, m=self.momentum)
