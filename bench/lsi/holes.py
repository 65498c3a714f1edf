"""Are there "holes" along interpolation paths? Measures per generator, and the picture.

Liu et al.'s argument for the uniform prior: an AAE matches its codes to the prior, and a
uniform prior's support, the cube [-1, 1]^d, is convex, so a straight line between two codes
never leaves it; a Gaussian prior puts its codes near the shell of radius sqrt(d), and a line
between two of them cuts through the shell's inside, where no training image was ever encoded
(a "hole"), so what the decoder makes there need not look like data.

All measures use `hole_pairs` inter-class pairs of TRAIN images (fixed, seed 0), un-augmented,
encoded by the generator in eval mode; z_lam = lam*z_i + (1-lam)*z_j. No test image is used.

(a) in latent space
- `prior_inside`: share of midpoints z_0.5 inside the prior's support (uniform: the cube; 1 by
  convexity; Gaussian priors have unbounded support: 1 too). Reported for the record.
- `logp_end`, `logp_mid`: mean log-density per dimension of the generator's own prior at the
  encoded codes and at the midpoints (uniform: -log 2 inside the cube). For N(0, I) the midpoint
  is nearer the origin, so its density is HIGHER: density alone does not show a hole.
- `radius_end`, `radius_mid`: mean ||z|| / sqrt(d): the shell the codes live on vs where the
  midpoints fall.
- `disc_enc`, `disc_mid` (the AAEs only): the AAE's own discriminator's mean probability
  "looks like a prior sample" for encoded codes and for codes z_lam, lam ~ U(0, 1).
- `critic_acc`: a two-sample test: logistic regression on the standardized features [z, z^2]
  (so it can see a radial hole) trained on half of {encoded codes} vs {interpolated codes,
  lam ~ U(0, 1)} and scored on the other half (2-fold, balanced). 100% = they live elsewhere.
  50% is NOT the no-hole value: blending two independent codes shrinks their spread under any
  prior (the blend of two U(-1, 1) draws is not uniform), so a critic on [z, z^2] beats 50% even
  when the codes match their prior exactly. Compare it between generators, not with 50%.

(b) in image space
- `nn_rec`, `nn_mid`: mean L2 distance (pixels in [0, 1]) from the decoding of a code to its
  nearest train image other than the images the code came from: for reconstructions (lam = 1)
  and for decoded midpoints (lam = 0.5). `nn_ratio` = nn_mid / nn_rec: about 1 when midpoints
  decode to images as close to the data as reconstructions are, larger when they fall off it.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.engine.augment import normalize
from bench.lsi.generators import Codec

LOG_HALF = -math.log(2.0)


def fixed_pairs(labels: torch.Tensor, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` inter-class pairs of train indices, fixed by `seed` (the same for every generator)."""
    g = torch.Generator().manual_seed(seed)
    y = labels.cpu()
    i = torch.randint(len(y), (4 * n,), generator=g)
    j = torch.randint(len(y), (4 * n,), generator=g)
    keep = (y[i] != y[j]).nonzero().squeeze(1)[:n]
    return i[keep], j[keep]


def prior_logpdf(z: torch.Tensor, prior: str) -> torch.Tensor:
    """log p(z) per dimension, one value per code (uniform: -log 2 inside the cube, -inf outside)."""
    d = z.shape[1]
    if prior == "uniform":
        inside = (z.abs() <= 1.0).all(1)
        return torch.where(inside, torch.full_like(z[:, 0], LOG_HALF), torch.full_like(z[:, 0], -math.inf))
    return (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(1) / d


def _in_support(z: torch.Tensor, prior: str) -> torch.Tensor:
    if prior == "uniform":
        return (z.abs() <= 1.0 + 1e-6).all(1).float()
    return torch.ones(z.shape[0])


def _nearest(x: torch.Tensor, bank: torch.Tensor, exclude: list[torch.Tensor]) -> torch.Tensor:
    """Distance of each row of x to its nearest row of bank, the indices in `exclude` left out."""
    d = torch.cdist(x.flatten(1).double(), bank.flatten(1).double())
    rows = torch.arange(len(x))
    for ex in exclude:
        d[rows, ex] = math.inf
    return d.min(1).values


def _critic_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    """2-fold held-out accuracy (%) of a logistic regression on [z, z^2] telling a from b."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    n = min(len(a), len(b))
    x = np.concatenate([a[:n], b[:n]])
    x = np.concatenate([x, x ** 2], 1)
    y = np.r_[np.zeros(n), np.ones(n)]
    fold = np.r_[np.arange(n) % 2, np.arange(n) % 2]
    correct = 0
    for f in (0, 1):
        tr, te = fold != f, fold == f
        scaler = StandardScaler().fit(x[tr])
        clf = LogisticRegression(max_iter=2000).fit(scaler.transform(x[tr]), y[tr])
        correct += int((clf.predict(scaler.transform(x[te])) == y[te]).sum())
    return 100.0 * correct / len(y)


@torch.no_grad()
def measure(codec: Codec, images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...],
            std: tuple[float, ...], n_pairs: int, device: torch.device) -> dict[str, Any]:
    """The hole measures of one generator on `n_pairs` fixed inter-class pairs of train images."""
    i, j = fixed_pairs(labels, n_pairs)
    x = normalize(images.to(device), mean, std)
    z = torch.cat([codec.encode(x[s:s + 1024]).float() for s in range(0, len(x), 1024)])
    zi, zj = z[i.to(device)], z[j.to(device)]
    mid = 0.5 * zi + 0.5 * zj
    g = torch.Generator().manual_seed(1)
    lam = torch.rand(len(i), generator=g).to(device).unsqueeze(1)
    path = lam * zi + (1 - lam) * zj
    d = z.shape[1]
    out: dict[str, Any] = {"pairs": len(i), "latent_dim": d, "prior": codec.prior,
                           "prior_inside": float(_in_support(mid.cpu(), codec.prior).mean()),
                           "logp_end": float(prior_logpdf(zi, codec.prior).mean()),
                           "logp_mid": float(prior_logpdf(mid, codec.prior).mean()),
                           "radius_end": float(zi.norm(dim=1).mean() / math.sqrt(d)),
                           "radius_mid": float(mid.norm(dim=1).mean() / math.sqrt(d))}
    disc = codec.discriminator()
    if disc is not None:
        out["disc_enc"] = float(torch.sigmoid(disc(zi)).mean())
        out["disc_mid"] = float(torch.sigmoid(disc(path)).mean())
    # encoded codes of other train images than the pairs' (every third image) vs interpolated codes
    others = z[torch.arange(0, len(z), 3, device=device)][: len(i)]
    out["critic_acc"] = _critic_accuracy(others.cpu().numpy(), path.cpu().numpy())
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    bank = images.float().to(device) / 255.0
    rec = codec.decode(zi) * s + m
    dec_mid = codec.decode(mid) * s + m
    i_d, j_d = i.to(device), j.to(device)
    out["nn_rec"] = float(_nearest(rec, bank, [i_d]).mean())
    out["nn_mid"] = float(_nearest(dec_mid, bank, [i_d, j_d]).mean())
    out["nn_ratio"] = out["nn_mid"] / out["nn_rec"] if out["nn_rec"] > 0 else math.nan
    return out


@torch.no_grad()
def interpolation_grid(codec: Codec, images: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...],
                       std: tuple[float, ...], classes: tuple[int, int], pairs: int, steps: int,
                       device: torch.device, path: Path, scale: int = 1) -> Path:
    """PNG: per row, a train image of class a, the decodings of lam*z_a + (1-lam)*z_b for lam
    = 1 ... 0 in `steps` steps, and a train image of class b (fixed images: the first of each class)."""
    from torchvision.utils import save_image
    a, b = classes
    ia = (labels == a).nonzero().squeeze(1)[:pairs].cpu()
    ib = (labels == b).nonzero().squeeze(1)[:pairs].cpu()
    k = min(len(ia), len(ib))
    ia, ib = ia[:k], ib[:k]
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    xa = normalize(images[ia].to(device), mean, std)
    xb = normalize(images[ib].to(device), mean, std)
    za, zb = codec.encode(xa).float(), codec.encode(xb).float()
    lams = torch.linspace(1.0, 0.0, steps, device=device)
    tiles = []
    for r in range(k):
        z = lams.unsqueeze(1) * za[r] + (1 - lams.unsqueeze(1)) * zb[r]
        row = torch.cat([xa[r:r + 1], codec.decode(z), xb[r:r + 1]]) * s + m
        tiles.append(row.clamp(0, 1))
    grid = torch.cat(tiles)
    if scale > 1:  # tiny images: nearest-neighbour upscaling keeps the pixels visible
        grid = grid.repeat_interleave(scale, 2).repeat_interleave(scale, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid.cpu(), path, nrow=steps + 2, padding=2, pad_value=1.0)
    return path
