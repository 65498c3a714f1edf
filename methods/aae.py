"""AAE with a uniform prior: a deterministic autoencoder whose latent code (squashed to
[-1, 1] by tanh) is matched to the prior U(-1, 1)^d adversarially: an MLP discriminator tells
encoder codes from prior samples while the encoder learns to fool it, and the decoder learns
to reconstruct the image. The uniform prior leaves no "holes" in the latent cube, so linear
interpolations between codes stay on the data manifold.

[0] Makhzani et al., "Adversarial Autoencoders", 2015, https://arxiv.org/abs/1511.05644
[1] Liu et al., "Data Augmentation via Latent Space Interpolation for Image Classification",
    ICPR 2018 (the uniform-prior AAE; its interpolation-based augmentation mixes codes of
    two *classes* with a soft label, i.e. it is supervised, so it is left out of pretraining).
Training alternates the two phases of [0] on every minibatch:
1. reconstruction phase: the harness's optimizer (the autoencoders' Adam recipe) updates
   encoder + decoder on -log N(x; x_hat, sigma), summed over C x H x W and averaged over the
   batch -- the same likelihood as VAE and AASAE, so the three differ only in how they
   regularize the latent space;
2. regularization phase (`after_optimizer_step`): the discriminator takes an Adam step on
   prior samples ("real") against codes of the just-updated encoder ("fake"), then the encoder,
   as the generator, takes an Adam step of its own to make the updated discriminator call its
   codes real. Both optimizers' states travel with the model's state_dict (`get_extra_state`).
Encoder/decoder are the AASAE ones (same head width, 128-d code, residual decoder).
`prior` (config): "uniform" (the default, the method above) or "gaussian", the "holes"
ablation of the latent-space-interpolation experiment (bench/lsi): the code is then NOT
tanh-squashed and the discriminator's prior samples are N(0, I), as in Makhzani et al.'s
Gaussian-prior AAE.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from bench.backbones import Backbone
from bench.config import added_field
from methods.autoencoder import LatentDecoder, decoder_size, gaussian_nll
from methods.base import CLEAN, DataInfo, Method, OptimConfig, register, Logs


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(prior sample) - log(1 - D(encoder code)), each term averaged over the batch."""
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating encoder ("generator") loss: -log D(encoder code), averaged."""
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def _average_across_ranks(params: list[nn.Parameter]) -> None:
    """Under torchrun the regularization phase runs outside DDP's forward, so DDP does not
    reduce its gradients: average them across ranks by hand so every replica stays identical."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(dist.get_world_size())


def _prior_draws(shape: torch.Size, device: torch.device, prior: str = "uniform") -> torch.Tensor:
    """Samples of U(-1, 1)^d (N(0, I) for prior="gaussian") for this process's rows (float32,
    whatever the code's dtype). Under torchrun every rank draws the GLOBAL batch's samples and
    keeps its slice, as the augmentation does: ranks never share prior samples, and the run
    equals one process on the global batch."""
    world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_available() and dist.is_initialized() else (1, 0)
    b = shape[0]
    if prior == "gaussian":
        draws = torch.randn((b * world, *shape[1:]), device=device)
    else:
        draws = torch.rand((b * world, *shape[1:]), device=device) * 2 - 1
    return draws[rank * b:(rank + 1) * b]


PRIORS = ("uniform", "gaussian")


@dataclass(frozen=True)
class AAEConfig:
    latent_dim: int = 128          # size of the code (as AASAE)
    log_scale: float = 0.0         # fixed log-variance of p(x | z), as VAE and AASAE: sigma = exp(log_scale/2) + 1e-6
    # uniform: tanh-squashed code, prior U(-1,1)^d (Liu et al.) | gaussian: unsquashed, N(0, I); stored only when
    # not "uniform", so AAE runs made before the field existed keep their run ids
    prior: str = added_field("uniform")
    disc_hidden: int = 512         # width of the discriminator's two hidden layers
    disc_lr: float = 2e-4          # discriminator Adam learning rate (own optimizer, no schedule)
    gen_lr: float = 2e-4           # encoder-as-generator Adam learning rate (own optimizer, no schedule)
    adv_beta1: float = 0.5         # beta1 of both adversarial Adams (GAN practice); beta2 = 0.999
    decoder_width: int = 0         # decoder width h; 0 = auto: feature size if >= 512-d (official), else 1/4
    decoder_blocks: int = 0        # residual blocks per up-stage; 0 = auto: 2 if >= 512-d (decoder18), else 1
    decoder_head_width: int = 0    # channels of the last 3x3 conv; 0 = auto: 64 if >= 512-d (official), else 32


@register
class AAE(Method):
    name = "aae"
    paradigm = "autoencoding"
    views = (CLEAN,)               # a plain autoencoder: input = reconstruction target
    Config = AAEConfig
    optim = OptimConfig(name="adam", lr=2.5e-4, lr_batch_size=256, weight_decay=0.0, schedule="constant")
    native_aug = {}  # consumes clean images only
    reference = "Makhzani et al. 2015, arXiv:1511.05644; uniform prior: Liu et al., ICPR 2018"

    def __init__(self, cfg: AAEConfig, backbone: Backbone, data: DataInfo) -> None:
        super().__init__(cfg, backbone, data)
        if cfg.prior not in PRIORS:
            from bench.errors import UserError
            raise UserError(f"aae.prior={cfg.prior!r}: choose one of {', '.join(PRIORS)}")
        h = backbone.num_features
        squash = nn.Tanh() if cfg.prior == "uniform" else nn.Identity()  # no parameters: same init either way
        self.head = nn.Sequential(nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU(),
                                  nn.Linear(h, cfg.latent_dim, bias=False), squash)
        width, blocks, head_width = decoder_size(cfg.decoder_width, cfg.decoder_blocks, cfg.decoder_head_width, h)
        self.decoder = LatentDecoder(cfg.latent_dim, width, data.size, data.channels, blocks, head_width)
        d = cfg.disc_hidden
        self.discriminator = nn.Sequential(nn.Linear(cfg.latent_dim, d), nn.LeakyReLU(0.2),
                                           nn.Linear(d, d), nn.LeakyReLU(0.2), nn.Linear(d, 1))
        betas = (cfg.adv_beta1, 0.999)
        self.disc_opt = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.disc_lr, betas=betas)
        self.gen_opt = torch.optim.Adam(self.encoder_parameters(), lr=cfg.gen_lr, betas=betas)

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [*self.backbone.parameters(), *self.head.parameters()]

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent code (in [-1, 1]^d under the uniform prior)."""
        return self.head(self.backbone(x))

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        """Reconstruction phase: -log p(x | z) of the code's decoding (the harness steps it)."""
        (x,) = views
        recon = gaussian_nll(self.decoder(self.code(x)), x, self.cfg.log_scale).mean()
        return recon, {"recon": recon.detach()}

    def after_optimizer_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> Logs:
        """Regularization phase: a discriminator step, then an encoder (generator) step."""
        (x,) = views
        z = self.code(x)
        prior = _prior_draws(z.shape, z.device, self.cfg.prior)
        real_logits, fake_logits = self.discriminator(torch.cat([prior, z.detach()])).chunk(2)
        d_loss = discriminator_loss(real_logits, fake_logits)
        self.disc_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        _average_across_ranks(list(self.discriminator.parameters()))
        self.disc_opt.step()
        # the encoder fools the just-updated discriminator, whose weights this loss leaves alone
        frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        g_loss = generator_loss(torch.func.functional_call(self.discriminator, frozen, (z,)))
        self.gen_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        _average_across_ranks(self.encoder_parameters())
        self.gen_opt.step()
        d_acc = 0.5 * ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean())
        return {"adv_d": d_loss.detach(), "adv_g": g_loss.detach(), "disc_acc": d_acc.detach()}

    def optimized_parameters(self) -> list[nn.Parameter]:
        """Encoder + decoder (the reconstruction phase); the discriminator has its own optimizer."""
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("discriminator.")]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.code(x))

    def get_extra_state(self) -> dict[str, Any]:
        """Both adversarial Adams' per-parameter states (step, moments: tensors in dicts, so
        torch.load(weights_only=True) reads them); their hyper-parameters come from the config."""
        return {"disc_opt_state": self.disc_opt.state_dict()["state"],
                "gen_opt_state": self.gen_opt.state_dict()["state"]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for opt, key in ((self.disc_opt, "disc_opt_state"), (self.gen_opt, "gen_opt_state")):
            opt.load_state_dict({"state": state[key], "param_groups": opt.state_dict()["param_groups"]})
