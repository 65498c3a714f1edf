"""The suite's ONE batched augmentation pipeline (kornia, per-sample random parameters).

It runs on the device where the model trains, on uint8 batches that already live there, so
there is no PIL and no per-sample Python in the hot loop. Its parameters belong to the
suite, not to the method: every method in a suite sees the same distribution of views.
Defaults are the CIFAR recipe (lightly SimCLRTransform(input_size=32, cj_strength=0.5,
gaussian_blur=0.0), the AASAE CIFAR input transform).

Two implementations of the same pipeline (`impl`):

- "kornia": kornia's augmentation modules applied one after another (the reference).
- "fused" (default): the SAME kornia modules draw the per-sample parameters (same generators,
  same calls, same order, so the same RNG stream and bit-identical parameters), and the
  pixels are computed with a few batched tensor ops instead of kornia's apply code:
  RandomResizedCrop + horizontal flip + the /255 scaling are one pair of per-sample
  interpolation matrices (out = Ry @ x @ Rxᵀ, exactly kornia's "crop the integer box, then
  bilinear resize with align_corners=True"), and colour jitter / grayscale are fused
  elementwise expressions of the same formulas (torchvision's, as kornia.ColorJitter).
  tests/test_perf.py::test_fused_augment_gives_kornias_views checks that both give the same
  views to float rounding.

Why: on 2 CPU cores kornia's RandomResizedCrop crops and resizes sample by sample in a Python
loop, and its ColorJitter runs ~150 small tensor ops per batch (rgb->hsv->rgb for the hue
step). Each op is a parallel region; when the cores are shared with other processes every
region waits for a descheduled thread, which is why 3-channel ColorJitter was seen anywhere
between ~300 and ~8,000 views/s. The fused path is a dozen large ops (see docs/performance.md).
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import kornia.augmentation as K
import torch
from torch import nn

from bench.config import AugConfig

IMPLS = ("fused", "kornia")
_GRAY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, kornia's rgb_to_grayscale and torchvision's


def normalize(images: torch.Tensor, mean: tuple[float, ...] | torch.Tensor,
              std: tuple[float, ...] | torch.Tensor) -> torch.Tensor:
    """uint8 (B,C,H,W) -> float, scaled to [0,1] and standardized per channel.

    Pass mean/std as tensors already on the device in hot loops: building them from Python
    numbers is a blocking host->device copy, i.e. a GPU synchronization, on every call.
    """
    m = torch.as_tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - m) / s


class Augment(nn.Module):
    """uint8 batch -> augmented, normalized float batch. Channel handling is explicit."""

    def __init__(self, cfg: AugConfig, size: int, channels: int,
                 mean: tuple[float, ...], std: tuple[float, ...], impl: str = "fused") -> None:
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.cfg, self.mean, self.std, self.impl = cfg, mean, std, impl
        self.size, self.channels = size, channels
        self.rrc = K.RandomResizedCrop((size, size), scale=(cfg.crop_scale_min, 1.0))
        ops: list[nn.Module] = [self.rrc]
        self.flip = self.jitter = self.gray = None
        if cfg.hflip_p > 0:
            self.flip = K.RandomHorizontalFlip(p=cfg.hflip_p)
            ops.append(self.flip)
        if cfg.jitter_p > 0:
            if channels == 3:
                self.jitter = K.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue, p=cfg.jitter_p)
            else:  # saturation and hue are undefined for one channel
                self.jitter = K.ColorJitter(cfg.brightness, cfg.contrast, 0.0, 0.0, p=cfg.jitter_p)
            ops.append(self.jitter)
        if cfg.grayscale_p > 0 and channels == 3:
            self.gray = K.RandomGrayscale(p=cfg.grayscale_p)
            ops.append(self.gray)
        tail: list[nn.Module] = []  # not fused (no current suite uses them): kornia applies them
        if cfg.blur_p > 0:
            k = max(3, (size // 10) | 1)  # odd kernel ~10% of the image, as in SimCLR
            tail.append(K.RandomGaussianBlur((k, k), (0.1, 2.0), p=cfg.blur_p))
        if cfg.solarize_p > 0:
            tail.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=cfg.solarize_p))
        self.ops = nn.Sequential(*ops, *tail)
        self.tail = nn.Sequential(*tail)
        # constants as (non-persistent) buffers: they follow .to(device), so no per-call host->device
        # copy (a blocking copy from a Python list would synchronize with the GPU on every call)
        self.register_buffer("_mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("_luma", torch.tensor(_GRAY, dtype=torch.float32), persistent=False)
        self.register_buffer("_hue_n", torch.tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1), persistent=False)

    def _apply(self, fn, *args, **kwargs):
        """kornia moves its random generators to the module's device on `.to()`; keep them on
        the CPU. The per-sample parameters are a few hundred numbers: drawing them on the host
        avoids the blocking copies and `.any()` checks that would synchronize with the GPU on
        every batch, and gives the same draws on every device."""
        out = super()._apply(fn, *args, **kwargs)
        for op in self.ops:
            op.set_rng_device_and_dtype(torch.device("cpu"), torch.float32)
        return out

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """The un-augmented (clean) view, with the constants already on the device."""
        return normalize(images, self._mean, self._std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Views are computed in float32 even inside the training loop's bf16 autocast region.
        with torch.autocast(images.device.type, enabled=False), _one_cpu_thread(images.device):
            if self.impl == "kornia":
                x = self.ops(images.float() / 255.0)
            else:
                x = self._fused(images)
                if len(self.tail):
                    x = self.tail(x)
            x = x.clamp_(0.0, 1.0)
            return x.sub_(self._mean.to(x.device)).div_(self._std.to(x.device))

    # ---- fused implementation ------------------------------------------------------------
    def _fused(self, images: torch.Tensor) -> torch.Tensor:
        """Crop+resize+flip+/255 as two batched matmuls, then jitter and grayscale."""
        b, c, h, w = images.shape
        shape = (b, c, h, w)
        dev = images.device
        # Parameters: drawn by kornia's own modules, in the order nn.Sequential would call them.
        crop = self.rrc.forward_parameters(shape)
        flip = self.flip.forward_parameters(shape)["batch_prob"] if self.flip is not None else None
        jit = self.jitter.forward_parameters(shape) if self.jitter is not None else None
        gray = self.gray.forward_parameters(shape)["batch_prob"] if self.gray is not None else None

        # One host->device copy of every per-sample number.
        src = crop["src"].long()  # (B,4,2) integer corners (x, y): kornia's crop_by_indices truncates the same way
        cols = [src[:, 0, 0], src[:, 1, 0], src[:, 0, 1], src[:, 3, 1]]
        cols.append(flip.float() if flip is not None else torch.zeros(b))
        if jit is not None:
            on = jit["batch_prob"].float()
            cols += [on, jit["brightness_factor"], jit["contrast_factor"], jit["saturation_factor"], jit["hue_factor"]]
        cols.append(gray.float() if gray is not None else torch.zeros(b))
        # All drawn on the host (see _apply): one pinned, asynchronous copy to the device.
        p_host = torch.stack([t.float().cpu() for t in cols], 1)
        if dev.type == "cuda":
            p_host = p_host.pin_memory()
        p = p_host.to(dev, non_blocking=True)
        x0, x1, y0, y1, flip_on = p[:, 0], p[:, 1], p[:, 2], p[:, 3], p[:, 4]

        ry = _resize_matrix(y0, y1, self.size, h) * (1.0 / 255.0)  # (B, S, H), includes the /255
        rx = _resize_matrix(x0, x1, self.size, w, flip_on)          # (B, S, W), a flip reverses its rows
        s = self.size
        # rows: (B, C*H, W) @ (B, W, S) -> (B, C*H, S); then columns per channel: (B, S, H) @ (B*C, H, S)
        x = torch.bmm(images.float().view(b, c * h, w), rx.transpose(1, 2))
        if c == 1:
            x = torch.bmm(ry, x).view(b, 1, s, s)
        else:
            x = torch.matmul(ry.unsqueeze(1), x.view(b, c, h, s))

        if jit is not None:
            x = self._jitter(x, p[:, 5:10], jit["order"].tolist(), jit)
        if gray is not None:
            g = _gray(x)
            x = torch.where(p[:, -1].view(b, 1, 1, 1) > 0.5, g.expand_as(x), x)
        return x

    def _jitter(self, x: torch.Tensor, f: torch.Tensor, order: list[int], params: dict) -> torch.Tensor:
        """kornia.ColorJitter's apply (torchvision formulas) as fused expressions.

        Samples not selected by the probability gate get neutral factors (x*1, a lerp with
        weight 1: unchanged up to float rounding); the hue step is masked instead.
        """
        b = x.shape[0]
        on = f[:, 0] > 0.5
        x = x.clamp_(0.0, 1.0)  # kornia clamps the input of the jitter
        neutral = (1.0, 1.0, 1.0, 0.0)
        keys = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
        for idx in order:
            # kornia skips a step only when every factor of the batch is neutral (e.g. 1-channel hue)
            if not bool((params[keys[idx]].cpu() != neutral[idx]).any()):  # host-side: no GPU sync
                continue
            fac = torch.where(on, f[:, 1 + idx], torch.full_like(f[:, 0], neutral[idx])).view(b, 1, 1, 1)
            if idx == 0:    # brightness: multiply
                x = x.mul_(fac).clamp_(0.0, 1.0)
            elif idx == 1:  # contrast: blend with the mean gray level of the image
                if x.shape[1] == 3:
                    mean = (x.mean((2, 3)) @ self._luma.to(x.device)).view(b, 1, 1, 1)
                else:
                    mean = x.mean((1, 2, 3), keepdim=True)
                x = torch.lerp(mean.expand_as(x), x, fac).clamp_(0.0, 1.0)
            elif idx == 2:  # saturation: blend with the grayscale image (RGB only)
                if x.shape[1] == 3:
                    x = torch.lerp(_gray(x).expand_as(x), x, fac).clamp_(0.0, 1.0)
            else:           # hue: rotate in HSV (RGB only)
                if x.shape[1] == 3:
                    x = torch.where(on.view(b, 1, 1, 1), _shift_hue(x, fac, self._hue_n.to(x.device)), x)
        return x


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """On the CPU, augment with one intra-op thread (the model keeps all of them).

    The pipeline is a few dozen small, memory-bound ops. With 2 OpenMP threads on 2 cores that
    other processes also use, every op is a parallel region that waits for a descheduled thread:
    measured 20-30x slower than one thread (fused: ~900 vs ~13,000-32,000 views/s at load 7 on
    2 cores; kornia's modules likewise ~700 vs ~10,000). Unloaded, one thread costs <1% of a step.
    """
    n = torch.get_num_threads()
    if device.type != "cpu" or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _resize_matrix(lo: torch.Tensor, hi: torch.Tensor, out: int, n: int,
                   flip: torch.Tensor | None = None) -> torch.Tensor:
    """(B, out, n) bilinear interpolation matrices that resize the inclusive pixel range
    [lo, hi] of an axis of length n to `out` pixels with align_corners=True, computed the way
    torch's upsample_bilinear2d does (float32 scale, truncated index, clamped right neighbour).
    Where `flip` is set the output order is reversed (a horizontal flip of the resized crop)."""
    b = lo.shape[0]
    length = hi - lo + 1                                                     # (B,)
    scale = (length - 1) / (out - 1) if out > 1 else torch.zeros_like(length)
    j = torch.arange(out, device=lo.device, dtype=torch.float32).expand(b, out)
    if flip is not None:
        j = torch.where(flip.view(b, 1) > 0.5, (out - 1) - j, j)
    src = scale.unsqueeze(1) * j                                             # (B, out), crop-local
    i0 = src.floor()
    lam = src - i0
    i1 = torch.minimum(i0 + 1, (length - 1).unsqueeze(1))
    base = lo.unsqueeze(1)
    m = torch.zeros(b, out, n, device=lo.device)
    m.scatter_(2, (base + i0).long().unsqueeze(2), (1.0 - lam).unsqueeze(2))
    return m.scatter_add_(2, (base + i1).long().unsqueeze(2), lam.unsqueeze(2))


def _gray(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _shift_hue(x: torch.Tensor, turns: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue of RGB `x` in [0,1] by `turns` (a fraction of the circle), keeping S and V.

    Same result as kornia's rgb_to_hsv -> add -> hsv_to_rgb (and torchvision's adjust_hue):
    hue in sixths h6 = [(g-b)/c, (b-r)/c + 2, (r-g)/c + 4][argmax] mod 6, and back with the
    closed form channel_n = v - c * clamp(min(k, 4 - k), 0, 1), k = (n + h6) mod 6, n = 5, 3, 1
    (`n` is that (1,3,1,1) tensor, on x's device).
    """
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    c = v - x.min(1)[0]
    safe = torch.where(c > 0, c, torch.ones_like(c))
    h6 = torch.where(v == r, (g - b) / safe, torch.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h6 = h6 + 6.0 * turns.view(-1, 1, 1)
    k = torch.remainder(n + h6.unsqueeze(1), 6.0)
    return v.unsqueeze(1) - c.unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


__all__ = ["AugConfig", "Augment", "IMPLS", "normalize"]
