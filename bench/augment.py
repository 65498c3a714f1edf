"""The suite's ONE batched augmentation pipeline (kornia, per-sample random parameters).

It runs on the device where the model trains, on uint8 batches that already live there, so
there is no PIL and no per-sample Python in the hot loop. Its parameters belong to the
suite, not to the method: every method in a suite sees the same distribution of views.
Defaults are the CIFAR recipe (lightly SimCLRTransform(input_size=32, cj_strength=0.5,
gaussian_blur=0.0), the AASAE CIFAR input transform).
"""
from __future__ import annotations

from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn


@dataclass(frozen=True)
class AugConfig:
    crop_scale_min: float = 0.08   # RandomResizedCrop scale range (min, 1.0)
    hflip_p: float = 0.5           # horizontal flip probability
    jitter_p: float = 0.8          # probability of colour jitter
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4        # ignored for 1-channel data (no colour)
    hue: float = 0.1               # ignored for 1-channel data
    grayscale_p: float = 0.2       # ignored for 1-channel data (already gray)
    blur_p: float = 0.0            # no blur at 32px (SimCLR CIFAR recipe)
    solarize_p: float = 0.0

    def describe(self) -> str:
        return (f"RandomResizedCrop(scale={self.crop_scale_min}-1), HFlip(p={self.hflip_p}), "
                f"ColorJitter({self.brightness},{self.contrast},{self.saturation},{self.hue}, p={self.jitter_p}), "
                f"Grayscale(p={self.grayscale_p}), Blur(p={self.blur_p}), Solarize(p={self.solarize_p})")


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (B,C,H,W) -> float, scaled to [0,1] and standardized per channel."""
    m = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


class Augment(nn.Module):
    """uint8 batch -> augmented, normalized float batch. Channel handling is explicit."""

    def __init__(self, cfg: AugConfig, size: int, channels: int,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.cfg, self.mean, self.std = cfg, mean, std
        ops: list[nn.Module] = [K.RandomResizedCrop((size, size), scale=(cfg.crop_scale_min, 1.0))]
        if cfg.hflip_p > 0:
            ops.append(K.RandomHorizontalFlip(p=cfg.hflip_p))
        if cfg.jitter_p > 0:
            if channels == 3:
                ops.append(K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.jitter_p))
            else:  # saturation and hue are undefined for one channel
                ops.append(K.ColorJitter(cfg.brightness, cfg.contrast, 0.0, 0.0, p=cfg.jitter_p))
        if cfg.grayscale_p > 0 and channels == 3:
            ops.append(K.RandomGrayscale(p=cfg.grayscale_p))
        if cfg.blur_p > 0:
            k = max(3, (size // 10) | 1)  # odd kernel ~10% of the image, as in SimCLR
            ops.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=cfg.blur_p))
        if cfg.solarize_p > 0:
            ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=cfg.solarize_p))
        self.ops = nn.Sequential(*ops)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.ops(images.float() / 255.0).clamp_(0.0, 1.0)
        m = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - m) / s
