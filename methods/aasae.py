"""AASAE: an autoencoder whose encoder sees an *augmented* view while the decoder must
reconstruct the *clean* image, so augmentations act as the regularizer a VAE gets from its
KL term (which is switched off); the latent is still sampled ("stochastic").

[0] Falcon et al., "Augmentation-Augmented Stochastic Autoencoders" (v1 "AAVAE"), 2021,
    https://arxiv.org/abs/2107.12329
Recipe: the official code, Lightning-Universe/paper-AAVAE (`src/vae.py`, `--denoising`):
encoder = the suite backbone; head Linear(h,h)-BN-ReLU -> mu, logvar (Linear(h,128), no
bias); z = mu + std * eps, std = exp(logvar/2) + 1e-6; residual upsampling decoder;
loss = kl_coeff * KL(q || N(0,I)) - log N(clean; x_hat, sigma), summed over C x H x W and
averaged over the batch, sigma = exp(log_scale/2) + 1e-6 with log_scale fixed at 0, and
kl_coeff = 0. Adam lr 2.5e-4 (batch 256), no weight decay, warmup then constant lr.
Evaluation features = the backbone's pooled output (before the head), as in the paper.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.backbones import Backbone
from methods.autoencoder import GaussianHead, LatentDecoder, decoder_size, gaussian_nll, kl_standard_normal, sample_gaussian
from methods.base import AUGMENTED, CLEAN, DataInfo, Method, OptimConfig, register, Logs


@dataclass(frozen=True)
class AASAEConfig:
    latent_dim: int = 128          # size of z (official: 128)
    kl_coeff: float = 0.0          # weight of KL(q || N(0, I)); 0 = AASAE, > 0 = a denoising VAE
    log_scale: float = 0.0         # fixed log-variance of p(x | z): sigma = exp(log_scale/2) + 1e-6
    decoder_width: int = 0         # decoder width h; 0 = auto: feature size if >= 512-d (official), else 1/4
    decoder_blocks: int = 0        # residual blocks per up-stage; 0 = auto: 2 if >= 512-d (decoder18), else 1
    decoder_head_width: int = 0    # channels of the last 3x3 conv; 0 = auto: 64 if >= 512-d (official), else 32


@register
class AASAE(Method):
    name = "aasae"
    paradigm = "autoencoding"
    views = (AUGMENTED, CLEAN)     # encoder input, reconstruction target
    Config = AASAEConfig
    optim = OptimConfig(name="adam", lr=2.5e-4, lr_batch_size=256, weight_decay=0.0, schedule="constant")
    native_aug = {}  # the shared CIFAR pipeline is the AASAE CIFAR input transform
    reference = "Falcon et al. 2021, arXiv:2107.12329"

    def __init__(self, cfg: AASAEConfig, backbone: Backbone, data: DataInfo) -> None:
        super().__init__(cfg, backbone, data)
        h = backbone.num_features
        self.head = GaussianHead(h, cfg.latent_dim)
        width, blocks, head_width = decoder_size(cfg.decoder_width, cfg.decoder_blocks, cfg.decoder_head_width, h)
        self.decoder = LatentDecoder(cfg.latent_dim, width, data.size, data.channels, blocks, head_width)

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        augmented, clean = views
        # q(z | augmented view): the encoder never sees the image it must reconstruct
        mu, logvar = self.head(self.backbone(augmented))
        z, std = sample_gaussian(mu, logvar)
        x_hat = self.decoder(z)
        # -log p(clean | z): the reconstruction target is the un-augmented image
        nll = gaussian_nll(x_hat, clean, self.cfg.log_scale)
        kl = kl_standard_normal(mu, std)
        loss = (self.cfg.kl_coeff * kl + nll).mean()
        return loss, {"nll": nll.mean().detach(), "kl": kl.mean().detach()}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean of the clean image (no sampling)."""
        mu, _ = self.head(self.backbone(x))
        return self.decoder(mu)
