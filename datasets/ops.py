"""Transforms on whole ImageData splits and the class-balanced subset sampler."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from bench.errors import UserError

from .base import ImageData

_CHUNK = 1024  # images converted to float at a time: bounds memory (50k x 3 x 96 x 96 float32 = 5.5 GB)
LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.round_().clamp_(0, 255).to(torch.uint8)


def resize(data: ImageData, size: int) -> ImageData:
    """Bilinear (antialiased) resize to size x size, rounded back to uint8; mean/std kept."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"image size must be a positive integer, got {size!r}")
    if size == data.size and data.images.shape[3] == size:
        return data
    out = torch.empty((len(data), data.channels, size, size), dtype=torch.uint8)
    for i in range(0, len(data), _CHUNK):
        x = data.images[i:i + _CHUNK].float()
        out[i:i + _CHUNK] = _to_uint8(F.interpolate(x, size=(size, size), mode="bilinear",
                                                    align_corners=False, antialias=True))
    return replace(data, images=out)


def to_channels(data: ImageData, channels: int) -> ImageData:
    """Gray -> RGB by repeating, RGB -> gray by BT.601 luma; mean/std adjusted to match."""
    if channels not in (1, 3):
        raise UserError(f"channels must be 1 or 3, got {channels!r}")
    if channels == data.channels:
        return data
    if channels == 3:
        return replace(data, images=data.images.repeat(1, 3, 1, 1),
                       mean=data.mean * 3, std=data.std * 3)
    w = torch.tensor(LUMA).view(1, 3, 1, 1)
    out = torch.empty((len(data), 1, data.size, data.images.shape[3]), dtype=torch.uint8)
    for i in range(0, len(data), _CHUNK):
        out[i:i + _CHUNK] = _to_uint8((data.images[i:i + _CHUNK].float() * w).sum(1, keepdim=True))
    mean = sum(wi * m for wi, m in zip(LUMA, data.mean))  # exact: the mean is linear
    # The std of a weighted sum needs the channel covariances, which are not stored; natural
    # images have nearly perfectly correlated channels, for which the std is the weighted sum.
    std = sum(wi * s for wi, s in zip(LUMA, data.std))
    return replace(data, images=out, mean=(mean,), std=(std,))


def balanced_subset(labels: torch.Tensor, per_class_fraction_or_count: float | int, seed: int) -> torch.Tensor:
    """Sorted int64 indices of a class-balanced subset, fixed by `seed`.

    A float in (0, 1] keeps that fraction of every class (rounded, at least one per class);
    an int keeps exactly that many of every class (UserError if a class is smaller).
    """
    amount = per_class_fraction_or_count
    y = torch.as_tensor(labels).reshape(-1).cpu().numpy()
    classes, counts = np.unique(y, return_counts=True)
    if isinstance(amount, bool) or not isinstance(amount, (int, float, np.integer, np.floating)):
        raise UserError(f"subset size must be a fraction in (0, 1] or a per-class count, got {amount!r}")
    if isinstance(amount, (float, np.floating)):
        if not 0.0 < amount <= 1.0:
            raise UserError(f"subset fraction must be in (0, 1], got {amount}; use an int for a per-class count")
        take = np.maximum(1, np.round(counts * float(amount)).astype(np.int64))
    else:
        if amount < 1:
            raise UserError(f"per-class count must be >= 1, got {amount}")
        if len(counts) and counts.min() < amount:
            raise UserError(f"per-class count {amount} exceeds the smallest class "
                            f"(class {classes[counts.argmin()]} has {counts.min()}); use at most {counts.min()}")
        take = np.full(len(counts), int(amount), dtype=np.int64)
    rng = np.random.default_rng(seed)
    # Classes in sorted order, each with its own permutation drawn from one seeded stream.
    picked = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take)]
    idx = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(idx.astype(np.int64))
