"""Mixing a minibatch: pixel mixup (Zhang et al. 2018) and latent space interpolation (Liu et
al. 2018), with the soft targets both train on.

Pixel mixup [0]: the batch is shuffled, every image is blended with its shuffled partner,
x = lam*x_i + (1-lam)*x_j, with ONE lam ~ Beta(alpha, alpha) per batch, and the label is
blended alike. Pairs are random (same-class pairs included) and the mixed batch replaces the
real one, as in the paper's reference code.

Latent space interpolation [1]: the images of a batch are encoded by a generator trained
beforehand (an autoencoder), **inter-class** pairs (i, j) are drawn from a shuffled
permutation of the batch, their codes are interpolated, z = lam*z_i + (1-lam)*z_j, decoded,
and the decoded images join the batch as extra samples labelled lam*onehot(y_i) +
(1-lam)*onehot(y_j) (lam = 0.5: the plain two-hot label). Each batch holds B real + round(r*B)
generated images. A pair whose partner has the same label is re-drawn uniformly among the
batch's images of other classes (dropped only when the batch has a single class).

Every random draw comes from torch's global generator, which the training loop reseeds per
epoch (bench/engine/train.py), so a run is deterministic given its seed.

[0] Zhang et al., "mixup: Beyond Empirical Risk Minimization", ICLR 2018, arXiv:1710.09412
[1] Liu et al., "Data Augmentation via Latent Space Interpolation for Image Classification", ICPR 2018
"""
from __future__ import annotations

import math
from typing import Callable, Protocol

import torch
import torch.nn.functional as F

LAMBDAS = ("uniform", "half")


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return F.one_hot(labels, num_classes).float()


def soft_targets(y_i: torch.Tensor, y_j: torch.Tensor, lam: torch.Tensor, num_classes: int) -> torch.Tensor:
    """lam*onehot(y_i) + (1-lam)*onehot(y_j), one row per pair (lam: one value per row, or a scalar)."""
    lam = torch.as_tensor(lam, dtype=torch.float32, device=y_i.device).reshape(-1, 1)
    return lam * one_hot(y_i, num_classes) + (1.0 - lam) * one_hot(y_j, num_classes)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_c q_c log softmax(logits)_c. Linear in q, so for a two-hot target it
    is the lam-weighted sum of the two classes' cross-entropies (Liu et al.'s loss)."""
    return -(targets * F.log_softmax(logits.float(), dim=1)).sum(1).mean()


def inter_class_pairs(labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` index pairs (i, j) of the batch with labels[i] != labels[j].

    i runs over the batch (repeated when n > B), j is a shuffled permutation of it (a fresh one
    per repetition); a j with i's label is re-drawn uniformly among the batch's other-class
    images. Pairs without any other-class image (a one-class batch) are dropped, so fewer than
    n pairs can come back.
    """
    b = labels.shape[0]
    reps = max(1, math.ceil(n / b))
    dev = labels.device
    i = torch.arange(b, device=dev).repeat(reps)[:n]
    j = torch.cat([torch.randperm(b, device="cpu").to(dev) for _ in range(reps)])[:n]
    same = labels[i] == labels[j]
    if bool(same.any()):
        k = same.nonzero().squeeze(1)
        # iid uniform scores, masked to the other classes: the argmax is a uniform draw among them
        scores = torch.rand(len(k), b, device="cpu").to(dev)
        scores = scores.masked_fill(labels[i[k]].unsqueeze(1) == labels.unsqueeze(0), -1.0)
        best, pick = scores.max(1)
        j = j.clone()
        j[k] = pick
        keep = torch.ones(len(i), dtype=torch.bool, device=dev)
        keep[k] = best >= 0
        i, j = i[keep], j[keep]
    return i, j


def sample_lambda(n: int, kind: str, device: torch.device) -> torch.Tensor:
    """One lam per pair: U(0, 1) ("uniform") or the fixed 0.5 of the two-hot label ("half")."""
    if kind == "uniform":
        return torch.rand(n, device="cpu").to(device)
    if kind == "half":
        return torch.full((n,), 0.5, device=device)
    raise ValueError(f"lambda distribution {kind!r}: choose one of {', '.join(LAMBDAS)}")


def mixup(x: torch.Tensor, labels: torch.Tensor, num_classes: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel mixup of a batch: (mixed images, soft targets); one lam ~ Beta(alpha, alpha) per batch."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample()) if alpha > 0 else 1.0
    j = torch.randperm(x.shape[0], device="cpu").to(x.device)
    mixed = lam * x + (1.0 - lam) * x[j]
    return mixed, soft_targets(labels, labels[j], torch.full((x.shape[0],), lam), num_classes)


class LatentCodec(Protocol):
    """What LSI needs of a generator: normalized images -> codes -> normalized images."""

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def decode(self, z: torch.Tensor) -> torch.Tensor: ...


def interpolate(z: torch.Tensor, i: torch.Tensor, j: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """z_lam = lam*z_i + (1-lam)*z_j, one lam per pair."""
    lam = lam.to(z.dtype).unsqueeze(1)
    return lam * z[i] + (1.0 - lam) * z[j]


@torch.no_grad()
def lsi(x: torch.Tensor, labels: torch.Tensor, num_classes: int, codec: LatentCodec, ratio: float,
        lam_kind: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latent space interpolation of a batch: (generated images, their soft targets, i, j).

    `x` are the batch's (already augmented) normalized images; the codec encodes them once, and
    round(ratio*B) inter-class pairs are interpolated in its latent space and decoded."""
    n = round(ratio * x.shape[0])
    i, j = inter_class_pairs(labels, n)
    lam = sample_lambda(len(i), lam_kind, x.device)
    z = codec.encode(x)
    generated = codec.decode(interpolate(z, i, j, lam))
    return generated, soft_targets(labels[i], labels[j], lam, num_classes), i, j


Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
