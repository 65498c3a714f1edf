"""VICReg: two augmented views go through the backbone and a wide 3-layer "expander"; the
loss keeps the two embeddings close (invariance), keeps every embedding dimension's standard
deviation above 1 across the batch (variance) and decorrelates the dimensions (covariance),
which prevents collapse without negatives, momentum encoders or stop-gradients.

[0] Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
    Self-Supervised Learning", 2021, https://arxiv.org/abs/2105.04906
Recipe: solo-learn `scripts/pretrain/cifar/vicreg.yaml` (expander 512 -> 2048 -> 2048 -> 2048
on ResNet-18, weights 25/25/1, LARS lr 0.3 x batch/256, wd 1e-4; native augmentation min crop
scale 0.2 + solarization 0.1, with BYOL's jitter strengths (0.4, 0.4, 0.2, 0.1) as in the
paper) with lightly's VICRegLoss. LARS (bench/engine/lars.py) as
solo-learn pairs it with that lr: trust coefficient 0.02 with lr clipping, biases and norms
plain SGD (config fields `lars_trust_coefficient`, `lars_clip_lr`; the official VICReg / lightly
form, 0.001 without clipping, trained 2.2 kNN points lower on held-out train images).
Plain SGD at lightly's
example lr (0.06 x batch/128) diverged on the quick suite (loss -> inf right after warmup).
lightly has no VICReg head: the expander is its BarlowTwinsProjectionHead (Linear-BN-ReLU,
Linear-BN-ReLU, Linear), exactly the VICReg expander. Expander widths scale with the backbone
(0 = 4 x feature size: 2048 for ResNet-18, as solo-learn; 8192 for a 2048-d ResNet-50, as the
paper), so tiny CPU backbones get a proportionally small expander.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from lightly.loss import VICRegLoss
from lightly.loss.vicreg_loss import invariance_loss
from lightly.models.modules import BarlowTwinsProjectionHead

from bench.backbones import Backbone
from methods.base import AUGMENTED, DataInfo, Logs, Method, OptimConfig, forward_views, register


@dataclass(frozen=True)
class VICRegConfig:
    proj_hidden_dim: int = 0       # expander hidden width; 0 = 4 x backbone feature size (2048 for ResNet-18)
    proj_output_dim: int = 0       # embedding size; 0 = same as the hidden width (solo-learn: 2048)
    sim_weight: float = 25.0       # lambda, invariance (MSE between the two embeddings)
    var_weight: float = 25.0       # mu, variance hinge (std >= 1 per dimension)
    cov_weight: float = 1.0        # nu, off-diagonal covariance penalty
    gather_distributed: bool = True  # variance/covariance over the global batch under DDP
    forward_views: str = "separate"  # separate: one pass per view (BatchNorm per view), as lightly; joint: one pass over both


@register
class VICReg(Method):
    name = "vicreg"
    paradigm = "non-contrastive"
    views = (AUGMENTED, AUGMENTED)
    Config = VICRegConfig
    # solo-learn's pairing of lr 0.3 with trust coefficient 0.02 and lr clipping (docs/parity.md:
    # +2.2 kNN points over lightly's 0.001 without clipping on held-out train images, 2 seeds)
    optim = OptimConfig(name="lars", lr=0.3, lr_batch_size=256, weight_decay=1e-4, momentum=0.9,
                        lars_trust_coefficient=0.02, lars_clip_lr=True)
    native_aug = {"crop_scale_min": 0.2, "solarize_p": 0.1, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1}
    reference = "Bardes et al. 2021, arXiv:2105.04906"

    def __init__(self, cfg: VICRegConfig, backbone: Backbone, data: DataInfo) -> None:
        super().__init__(cfg, backbone, data)
        d = backbone.num_features
        hidden = cfg.proj_hidden_dim or 4 * d
        self.expander = BarlowTwinsProjectionHead(d, hidden, cfg.proj_output_dim or hidden)
        self.criterion = VICRegLoss(lambda_param=cfg.sim_weight, mu_param=cfg.var_weight, nu_param=cfg.cov_weight,
                                    gather_distributed=cfg.gather_distributed)

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        z1, z2 = forward_views(lambda x: self.expander(self.backbone(x)), views, self.cfg.forward_views)
        loss = self.criterion(z1, z2)
        with torch.no_grad():  # invariance and per-dimension std for the log (collapse shows as std -> 0)
            inv, std = invariance_loss(z1, z2), z1.float().std(0).mean()
        return loss, {"vicreg": loss.detach(), "invariance": inv, "embedding_std": std}
