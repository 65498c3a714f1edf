"""VAE: maximise the evidence lower bound of a latent-variable model: an encoder outputs a
diagonal Gaussian q(z | x), a decoder reconstructs x from a sample z, and the KL term pulls
q(z | x) towards the prior N(0, I). Input and reconstruction target are the same clean image.

[0] Kingma & Welling, "Auto-Encoding Variational Bayes", 2013, https://arxiv.org/abs/1312.6114
Baseline of AASAE [1] and built exactly like it (official code, Lightning-Universe/paper-AAVAE
`src/vae.py` without `--denoising`): same encoder head, decoder, fixed-scale Gaussian
likelihood (summed over C x H x W, mean over the batch) and optimizer. The KL weight beta is a
config field: 1.0 is the true ELBO (our default); the official script defaults to 0.1.
[1] Falcon et al., "Augmentation-Augmented Stochastic Autoencoders", 2021,
    https://arxiv.org/abs/2107.12329
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.backbones import Backbone
from methods.autoencoder import GaussianHead, LatentDecoder, decoder_size, gaussian_nll, kl_standard_normal, sample_gaussian
from methods.base import CLEAN, DataInfo, Method, OptimConfig, register, Logs


@dataclass(frozen=True)
class VAEConfig:
    latent_dim: int = 128          # size of z (as AASAE)
    kl_coeff: float = 1.0          # beta, the weight of KL(q || N(0, I)); 1 = ELBO (official default 0.1)
    log_scale: float = 0.0         # fixed log-variance of p(x | z): sigma = exp(log_scale/2) + 1e-6
    decoder_width: int = 0         # decoder width h; 0 = auto: feature size if >= 512-d (official), else 1/4
    decoder_blocks: int = 0        # residual blocks per up-stage; 0 = auto: 2 if >= 512-d (decoder18), else 1
    decoder_head_width: int = 0    # channels of the last 3x3 conv; 0 = auto: 64 if >= 512-d (official), else 32


@register
class VAE(Method):
    name = "vae"
    paradigm = "autoencoding"
    views = (CLEAN,)               # no augmentation: input = reconstruction target
    Config = VAEConfig
    optim = OptimConfig(name="adam", lr=2.5e-4, lr_batch_size=256, weight_decay=0.0, schedule="constant")
    native_aug = {}  # consumes clean images only; the augmentation recipe does not apply
    reference = "Kingma & Welling 2013, arXiv:1312.6114 (as the AASAE baseline, arXiv:2107.12329)"

    def __init__(self, cfg: VAEConfig, backbone: Backbone, data: DataInfo) -> None:
        super().__init__(cfg, backbone, data)
        h = backbone.num_features
        self.head = GaussianHead(h, cfg.latent_dim)
        width, blocks, head_width = decoder_size(cfg.decoder_width, cfg.decoder_blocks, cfg.decoder_head_width, h)
        self.decoder = LatentDecoder(cfg.latent_dim, width, data.size, data.channels, blocks, head_width)

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        (x,) = views
        mu, logvar = self.head(self.backbone(x))
        z, std = sample_gaussian(mu, logvar)          # reparameterisation trick
        nll = gaussian_nll(self.decoder(z), x, self.cfg.log_scale)
        kl = kl_standard_normal(mu, std)
        loss = (nll + self.cfg.kl_coeff * kl).mean()  # negative (beta-)ELBO
        nll_mean, kl_mean = nll.mean().detach(), kl.mean().detach()
        return loss, {"nll": nll_mean, "kl": kl_mean, "elbo": -(nll_mean + kl_mean)}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean (no sampling)."""
        mu, _ = self.head(self.backbone(x))
        return self.decoder(mu)
