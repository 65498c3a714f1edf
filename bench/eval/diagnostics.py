"""Representation diagnostics: effective rank (RankMe), alignment/uniformity, invariance, collapse."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

RANK_MAX_ROWS = 10_000  # RankMe on a row subsample: SVD cost grows with N, the estimate barely does
UNIFORMITY_MAX_ROWS = 4096  # all pairs of 4096 rows are 8.4M distances, ~34 MB in float32
# Per-dimension std of unit vectors spread over D dims is ~1/sqrt(D) (0.044 at D=512, 0.022 at
# D=2048), so 1e-4 only flags COMPLETE collapse (every input mapped to ~one point); partial,
# dimensional collapse shows up as a low effective_rank instead.
COLLAPSE_THRESHOLD = 1e-4


def _subsample(x: Tensor, max_rows: int, seed: int = 0) -> Tensor:
    """Seeded row subsample (the same rows for the same N and seed, on any device)."""
    if x.shape[0] <= max_rows:
        return x
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(x.shape[0], generator=gen)[:max_rows]
    return x[idx.to(x.device)]


def _check_2d(name: str, x: Tensor, min_rows: int = 1) -> Tensor:
    if x.ndim != 2 or x.shape[0] < min_rows:
        raise ValueError(f"{name} must be (N, D) with N >= {min_rows}, got shape {tuple(x.shape)}")
    return x.float()


def effective_rank(feats: Tensor) -> float:
    """RankMe (Garrido et al. 2023): exp of the entropy of the normalized singular values."""
    x = _subsample(_check_2d("feats", feats), RANK_MAX_ROWS)
    x = x.double()  # float64: the Gram matrix squares the condition number
    # Singular values from the eigenvalues of the smaller Gram matrix: several times faster than
    # an SVD of the (N, D) matrix, and the entropy is insensitive to the tiny values it blurs.
    gram = x.T @ x if x.shape[0] >= x.shape[1] else x @ x.T
    s = torch.linalg.eigvalsh(gram).clamp_min(0).sqrt()
    total = s.sum()
    if total <= 0:
        return 0.0  # all-zero features span nothing
    p = s / total + 1e-7  # eps as in the paper, keeps log finite for zero singular values
    return math.exp(float(-(p * p.log()).sum()))


def alignment(z1: Tensor, z2: Tensor, alpha: float = 2) -> float:
    """Wang & Isola 2020: mean ||z1 - z2||^alpha over L2-normalized positive pairs (0 is best)."""
    z1, z2 = _check_2d("z1", z1), _check_2d("z2", z2).to(z1.device)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
    d = (F.normalize(z1, dim=1) - F.normalize(z2, dim=1)).norm(dim=1)
    return float(d.pow(alpha).mean())


def uniformity(z: Tensor, t: float = 2) -> float:
    """Wang & Isola 2020: log mean exp(-t ||zi - zj||^2) over distinct pairs of L2-normalized rows
    (<= 4096 seeded rows); 0 for collapsed features, more negative = more uniform."""
    z = F.normalize(_subsample(_check_2d("z", z, min_rows=2), UNIFORMITY_MAX_ROWS), dim=1)
    sq = torch.pdist(z).pow(2)
    # logsumexp - log(count) is the log-mean without underflow when all distances are large.
    return float(torch.logsumexp(-t * sq, dim=0) - math.log(sq.numel()))


def invariance(z1: Tensor, z2: Tensor) -> float:
    """Mean cosine similarity between the features of two augmented views (1 = fully invariant)."""
    z1, z2 = _check_2d("z1", z1), _check_2d("z2", z2).to(z1.device)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 differ in shape: {tuple(z1.shape)} vs {tuple(z2.shape)}")
    return float(F.cosine_similarity(z1, z2, dim=1).mean())


def feature_std(feats: Tensor) -> float:
    """Mean over dimensions of the per-dimension std of L2-normalized features."""
    z = F.normalize(_check_2d("feats", feats, min_rows=2), dim=1)
    return float(z.std(dim=0, unbiased=False).mean())


def is_collapsed(feats: Tensor, threshold: float = COLLAPSE_THRESHOLD) -> bool:
    """True when :func:`feature_std` is below ``threshold`` (complete collapse, see COLLAPSE_THRESHOLD)."""
    return feature_std(feats) < threshold


def diagnostics(feats: Tensor, z1: Tensor, z2: Tensor) -> dict[str, float | bool]:
    """All diagnostics: ``feats`` for rank/uniformity/collapse, views ``z1``/``z2`` for the pair ones."""
    std = feature_std(feats)
    return {
        "effective_rank": effective_rank(feats),
        "alignment": alignment(z1, z2),
        "uniformity": uniformity(feats),
        "invariance": invariance(z1, z2),
        "collapsed": std < COLLAPSE_THRESHOLD,
        "feature_std": std,
    }
