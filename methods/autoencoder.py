"""Pieces shared by the autoencoding methods (VAE, AASAE, AAE) and the CNN masked-input
reconstruction variant of MAE: the residual upsampling decoder of the official AASAE code
(Lightning-Universe/paper-AAVAE `src/models/decoder.py` at commit 1fc158d; docs/protocols.md),
the Gaussian log-likelihood with a fixed log-scale, the analytic KL(q || N(0, I)) and the
masked-patch reconstruction loss of MAE (norm_pix_loss).

Every function here is hand-written (no library has them in this form) and is tested
against hand-computed values in tests/test_losses.py.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------- losses
def gaussian_nll(x_hat: torch.Tensor, target: torch.Tensor, log_scale: float | torch.Tensor = 0.0) -> torch.Tensor:
    """-log N(target; x_hat, sigma^2) summed over C x H x W, one value per sample (B,).

    sigma = exp(log_scale / 2) + 1e-6 (the official code's parametrisation; log_scale fixed
    at 0 gives sigma ~ 1, i.e. 0.5 * squared error + 0.5 * log(2 pi) per pixel).
    """
    if isinstance(log_scale, torch.Tensor):  # learnable scale
        sigma = torch.exp(log_scale.float() / 2) + 1e-6
        log_sigma = torch.log(sigma)
    else:  # a Python number stays on the host: no host->device copy (GPU sync) per step
        sigma = math.exp(log_scale / 2) + 1e-6
        log_sigma = math.log(sigma)
    err = (target.float() - x_hat.float()) / sigma
    nll = 0.5 * err.pow(2) + log_sigma + 0.5 * math.log(2 * math.pi)
    return nll.flatten(1).sum(1)


def kl_standard_normal(mu: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, std^2) || N(0, I)) summed over latent dimensions, one value per sample (B,)."""
    mu, std = mu.float(), std.float()
    return (0.5 * (std.pow(2) + mu.pow(2)) - 0.5 - torch.log(std)).sum(1)


def masked_patch_loss(pred: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor,
                      norm_pix: bool = True) -> torch.Tensor:
    """MAE loss: mean squared error per patch, averaged over the masked patches only.

    pred, patches: (B, L, P) predicted and true pixel values per patch; mask: (B, L), 1 =
    masked (scored), 0 = visible (ignored). With `norm_pix` each target patch is standardized
    by its own mean and (unbiased) variance, + 1e-6, as facebookresearch/mae `norm_pix_loss`.
    """
    target = patches.float()
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1e-6).sqrt()
    per_patch = (pred.float() - target).pow(2).mean(dim=-1)
    mask = mask.float()
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


# ----------------------------------------------------------------------------- decoder
# Layout and initialisation follow the official decoder at Lightning-Universe/paper-AAVAE
# commit 1fc158d (`src/models/decoder.py`): BatchNorm-free BasicBlocks whose convs all carry
# biases, PyTorch's default init, no zero-init of residual branches, and a 1x1-conv skip on the
# first block of every stage (an older commit, 00a2417, had BatchNorm and bias-free convs).
def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, padding=1)


class UpBlock(nn.Module):
    """BatchNorm-free BasicBlock of the AASAE decoder: optional nearest upsampling to `size`
    first (applied to both the residual branch and the skip, as the official block does);
    the first block of a stage has a 1x1-conv skip, the others the identity."""

    def __init__(self, cin: int, cout: int, size: int | None = None, first: bool = False) -> None:
        super().__init__()
        self.size = size
        self.conv1, self.conv2 = _conv3x3(cin, cout), _conv3x3(cout, cout)
        self.skip = nn.Conv2d(cin, cout, kernel_size=1) if first or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is not None:
            x = F.interpolate(x, size=(self.size, self.size), mode="nearest")
        out = self.conv2(F.relu(self.conv1(x)))
        return F.relu(out + self.skip(x))


def upsampling_sizes(s0: int, size: int) -> list[int]:
    """Resolutions of the up-stages from s0 to `size`, each ~2x the previous and the last
    exactly `size`: 4 -> 32 gives [8, 16, 32] (the official CIFAR decoder), 4 -> 28 gives
    [7, 14, 28], 4 -> 8 gives [8], 1 -> 8 gives [2, 4, 8]."""
    n_up = math.ceil(math.log2(size / s0)) if size > s0 else 0
    return [math.ceil(size / 2 ** k) for k in range(n_up - 1, -1, -1)]


class ResidualUpsampler(nn.Module):
    """Feature map (B, cin, s0, s0) -> image (B, out_channels, size, size).

    conv1x1 -> width, ReLU; stages of `blocks` UpBlocks with widths width/2, width/4, ...
    (floored at 8), the last stages upsampling ~2x each to exactly `size` (at least 4 stages,
    as decoder18's [2,2,2,2]; at 32px from 4x4 this is the official 4 -> 8 -> 16 -> 32); then
    conv3x3 -> head_width, ReLU, conv3x3 -> out_channels. As the official decoder: no
    BatchNorm, biases everywhere, PyTorch's default init.
    """

    def __init__(self, cin: int, width: int, size: int, s0: int, out_channels: int,
                 blocks: int = 2, head_width: int = 64, min_stages: int = 4) -> None:
        super().__init__()
        ups = upsampling_sizes(s0, size)
        n_stages = max(min_stages, len(ups))
        ups = [None] * (n_stages - len(ups)) + ups
        self.stem = nn.Conv2d(cin, width, kernel_size=1)
        layers, c = [], width
        for i, up in enumerate(ups):
            cout = max(8, width // 2 ** (i + 1))
            layers += [UpBlock(c, cout, up, first=True)] + [UpBlock(cout, cout) for _ in range(blocks - 1)]
            c = cout
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(_conv3x3(c, head_width), nn.ReLU(inplace=True),
                                  _conv3x3(head_width, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(F.relu(self.stem(x))))


class LatentDecoder(nn.Module):
    """The AASAE decoder: z (B, latent) -> Linear(latent, h)+ReLU -> Linear(h, h)+ReLU ->
    reshape (h/16, 4, 4) -> conv1x1 -> h -> residual up-stages -> image (B, C, size, size)."""

    def __init__(self, latent_dim: int, width: int, size: int, channels: int, blocks: int = 2,
                 head_width: int = 64) -> None:
        super().__init__()
        if width % 16:
            raise ValueError(f"decoder width {width} must be a multiple of 16 (reshaped to (h/16, 4, 4))")
        self.width = width
        self.fc = nn.Sequential(nn.Linear(latent_dim, width), nn.ReLU(inplace=True),
                                nn.Linear(width, width), nn.ReLU(inplace=True))
        self.up = ResidualUpsampler(width // 16, width, size, 4, channels, blocks, head_width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.up(self.fc(z).view(z.shape[0], self.width // 16, 4, 4))


def decoder_size(width: int, blocks: int, head_width: int, feature_dim: int) -> tuple[int, int, int]:
    """Resolve the decoder's (width, blocks per up-stage, head width); 0 = auto.

    ResNet-18-class backbones (>= 512-d features, the GPU suites) get the official decoder18:
    width h, 2 blocks per stage, a 64-channel head (~0.4x the encoder's compute at 32px).
    Narrower CPU backbones (resnet-tiny: [1,1,1,1] blocks, widths 32-256, stride-2 stem) get
    width h/4, 1 block per stage and a 32-channel head, which keeps the same ~0.4x ratio on
    Fashion-MNIST (the official layout would cost ~3x their encoder there).
    """
    wide = feature_dim >= 512
    auto_width = feature_dim if wide else max(16, feature_dim // 4 // 16 * 16)  # a multiple of 16
    return width or auto_width, blocks or (2 if wide else 1), head_width or (64 if wide else 32)


# ----------------------------------------------------------------------------- encoder head
class GaussianHead(nn.Module):
    """The official ProjectionHeadVAE: Linear(h, h)-BN-ReLU, then mu = Linear(h, d, no bias)
    and logvar = Linear(h, d, no bias) of the diagonal Gaussian q(z | x)."""

    def __init__(self, feature_dim: int, latent_dim: int) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU())
        self.mu = nn.Linear(feature_dim, latent_dim, bias=False)
        self.logvar = nn.Linear(feature_dim, latent_dim, bias=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(h)
        return self.mu(h), self.logvar(h)


def sample_gaussian(mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised z ~ N(mu, std^2) with std = exp(logvar / 2) + 1e-6; returns (z, std)."""
    std = torch.exp(logvar / 2) + 1e-6
    return mu + std * torch.randn_like(std), std
