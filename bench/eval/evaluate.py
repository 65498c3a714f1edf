"""Evaluation of a trained encoder, identical for every method and baseline.

Features are extracted ONCE per checkpoint (un-augmented, eval mode, no_grad, large batches)
and every evaluation reuses them: kNN at two settings, the linear probe, label efficiency
(1%/10%), transfer targets and diagnostics. Every metric is stored with its protocol. No
evaluation hyperparameter ever sees test labels: the probe's L2 strength is chosen on a
held-out part of the TRAIN split (bench/eval/probe.py).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from bench.eval import diagnostics as diag
from bench.engine.augment import Augment, normalize
from bench.eval.knn import knn_correct, knn_top1
from bench.eval.probe import linear_probe
from bench.config import EvalConfig

import datasets as ds


@dataclass
class EvalSet:
    """A labelled train/test pair the encoder is evaluated on (the suite's own, or a transfer target)."""
    name: str
    train: ds.ImageData
    test: ds.ImageData


@torch.no_grad()
def extract_features(encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                     mean: tuple[float, ...], std: tuple[float, ...], device: torch.device,
                     batch: int = 1024) -> torch.Tensor:
    """uint8 images -> float32 features on `device`, in large no_grad (bf16 on CUDA) batches."""
    feats = []
    for i in range(0, images.shape[0], batch):
        x = normalize(images[i:i + batch].to(device, non_blocking=True), mean, std)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            feats.append(encode(x).float())
    return torch.cat(feats)


def features_digest(feats: torch.Tensor) -> str:
    """Hash of a feature matrix, stored so `bench features` can prove it re-derived the same array."""
    return hashlib.sha256(feats.detach().cpu().numpy().astype(np.float32).tobytes()).hexdigest()[:16]


FINGERPRINT_ROWS = 32  # rows whose projections are stored
FINGERPRINT_DIMS = 8   # random directions each row is projected on


def features_fingerprint(feats: torch.Tensor) -> dict[str, Any]:
    """A small summary of a feature matrix that survives float summation order: the projections
    of its first rows and of its column mean on fixed random directions, and its RMS. The digest
    proves bit-identity on the same machine; this lets `bench features` elsewhere show that the
    features agree within FINGERPRINT_RTOL (`fingerprint_difference`) when the digest cannot."""
    x = feats.detach().cpu().double()
    r = torch.randn(x.shape[1], FINGERPRINT_DIMS, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return {"shape": list(x.shape), "rms": float(x.pow(2).mean().sqrt()) if x.numel() else 0.0,
            "rows": (x[:FINGERPRINT_ROWS] @ r).tolist(), "mean": (x.mean(0) @ r).tolist() if len(x) else []}


# Features re-derived from the same checkpoint differ only by the forward pass's rounding: ~1e-6
# of their scale between CPU kernels and thread counts, ~1e-3 with TF32/bf16 kernels on a GPU;
# 1e-2 leaves room above both. A broken re-derivation (another checkpoint, normalization or
# subset) differs by order 1.
FINGERPRINT_RTOL = 1e-2


def fingerprint_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Largest difference of two fingerprints' projections, relative to the projections' scale
    (RMS * sqrt(dim): the std of a row's projection on a standard normal direction); inf when
    the shapes differ."""
    if a.get("shape") != b.get("shape"):
        return math.inf
    scale = max(float(a.get("rms", 0.0)), 1e-12) * math.sqrt(max(a["shape"][1], 1))
    rows_a = list(a.get("rows", [])) + [a.get("mean", [])]
    rows_b = list(b.get("rows", [])) + [b.get("mean", [])]
    diffs = [abs(x - y) for ra, rb in zip(rows_a, rows_b) for x, y in zip(ra, rb)]
    return max(diffs, default=0.0) / scale


def evaluate_set(encode, es: EvalSet, cfg: EvalConfig, mean, std, device, seed: int,
                 prefix: str, with_label_fractions: bool) -> tuple[dict, dict, dict]:
    """kNN (both settings) + linear probe (+ label fractions) on one EvalSet."""
    ftr = extract_features(encode, es.train.images, mean, std, device, cfg.feature_batch)
    fte = extract_features(encode, es.test.images, mean, std, device, cfg.feature_batch)
    ytr, yte = es.train.labels.to(device), es.test.labels.to(device)
    k = es.train.num_classes
    sizes = {"train": int(ftr.shape[0]), "test": int(fte.shape[0])}
    common = {"dataset": es.name, "features": "encode(x): backbone output before any head, un-augmented, eval mode",
              "split_sizes": sizes}
    metrics, protocols, correct = {}, {}, {}
    for key, kk, t in ((f"{prefix}knn_top1", cfg.knn_k, cfg.knn_t), (f"{prefix}knn20_top1", cfg.knn_k_small, cfg.knn_t_small)):
        correct[key] = knn_correct(ftr, ytr, fte, yte, k, k=kk, temperature=t)
        metrics[key] = 100.0 * correct[key].sum().item() / correct[key].numel()  # = knn_top1
        protocols[key] = {**common, "eval": "kNN", "k": kk, "temperature": t, "similarity": "cosine",
                          "vote": "weighted exp(sim/T)", "bank": "un-augmented train features"}
    grid = cfg.probe_l2_grid()
    res = linear_probe(ftr, ytr, fte, yte, k, grid=grid, val_fraction=cfg.probe_val_fraction, seed=seed)
    metrics[f"{prefix}linear_top1"] = res.top1
    correct[f"{prefix}linear_top1"] = res.correct
    protocols[f"{prefix}linear_top1"] = {**common, "eval": "linear probe", **res.protocol()}
    if with_label_fractions:
        for frac in cfg.label_fractions:
            idx = label_subset(es.train.labels, frac, seed).to(device)
            key = f"{prefix}linear_{_pct(frac)}_top1"
            sub = linear_probe(ftr[idx], ytr[idx], fte, yte, k, grid=grid,
                               val_fraction=cfg.probe_val_fraction, seed=seed)
            metrics[key] = sub.top1
            correct[key] = sub.correct
            protocols[key] = {**common, "eval": f"linear probe on {frac:.0%} of train labels",
                              "label_subset": f"class-balanced, >= {MIN_PER_CLASS} per class, seed {seed}",
                              **sub.protocol()}
    digests = {f"{es.name}/train": features_digest(ftr), f"{es.name}/test": features_digest(fte)}
    prints = {f"{es.name}/train": features_fingerprint(ftr), f"{es.name}/test": features_fingerprint(fte)}
    labels = es.test.labels.cpu().numpy()
    return metrics, protocols, {"digests": digests, "fingerprints": prints, "test_features": fte,
                                "correct": {m: c.cpu().numpy() for m, c in correct.items()},
                                "labels": {m: labels for m in correct}}


def knn_accuracy(encode, es: EvalSet, cfg: EvalConfig, mean, std, device: torch.device) -> float:
    """kNN top-1 at the suite's k and T of `encode` on `es` (bank: its un-augmented train split),
    measured as the final `knn_top1` is: the learning-curve point."""
    ftr = extract_features(encode, es.train.images, mean, std, device, cfg.feature_batch)
    fte = extract_features(encode, es.test.images, mean, std, device, cfg.feature_batch)
    return knn_top1(ftr, es.train.labels.to(device), fte, es.test.labels.to(device), es.train.num_classes,
                    k=cfg.knn_k, temperature=cfg.knn_t)


MIN_PER_CLASS = 2  # the probe's held-out split needs one label per class on each side


def label_subset(labels: torch.Tensor, frac: float, seed: int, min_per_class: int = MIN_PER_CLASS) -> torch.Tensor:
    """Fixed class-balanced `frac` of the train labels (seeded; all of them at 1); at least
    `min_per_class` per class, so that tiny datasets (1% of digits is 1.4 images per class) still
    get a held-out split for choosing the L2 strength from train labels only. The LSI suites'
    label fractions use it too."""
    idx = ds.balanced_subset(labels, frac, seed=seed)
    if int(torch.bincount(labels[idx]).min()) < min_per_class:
        idx = ds.balanced_subset(labels, min_per_class, seed=seed)
    return idx


def _pct(frac: float) -> str:
    return f"{frac * 100:g}pct"


def evaluate(encode, main: EvalSet, transfer: dict[str, EvalSet | str], cfg: EvalConfig,
             aug: Augment, device: torch.device, seed: int,
             predictions: dict[str, dict[str, np.ndarray]] | None = None) -> dict[str, Any]:
    """All evaluations of one encoder. `transfer` maps a target name to its EvalSet, or to
    the reason it is skipped (e.g. data missing). `predictions`, when given, is filled with
    every metric's per-test-image correctness (`correct`) and test labels (`labels`)."""
    mean, std = aug.mean, aug.std
    metrics, protocols, info = evaluate_set(encode, main, cfg, mean, std, device, seed, "", True)
    skipped = {}
    for name, target in transfer.items():
        if isinstance(target, str):
            skipped[name] = target
            continue
        m, p, i = evaluate_set(encode, target, cfg, mean, std, device, seed, f"transfer_{name}_", False)
        metrics.update(m)
        protocols.update(p)
        info["digests"].update(i["digests"])
        info["fingerprints"].update(i["fingerprints"])
        info["correct"].update(i["correct"])
        info["labels"].update(i["labels"])
    if predictions is not None:
        predictions.update(correct=info["correct"], labels=info["labels"])
    diagnostics = run_diagnostics(encode, main.test.images, info["test_features"], aug, device, seed)
    return {"metrics": metrics, "protocols": protocols, "diagnostics": diagnostics,
            "transfer_skipped": skipped, "feature_digests": info["digests"],
            "feature_fingerprints": info["fingerprints"]}


@torch.no_grad()
def run_diagnostics(encode, images: torch.Tensor, feats: torch.Tensor, aug: Augment,
                    device: torch.device, seed: int, n_views: int = 2048) -> dict[str, Any]:
    """RankMe and uniformity of the un-augmented test features; alignment and invariance on two
    augmented views of up to `n_views` test images."""
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(images.shape[0], generator=gen)[:n_views]
    x = images[idx].to(device)
    # kornia draws its augmentation parameters from the global RNG (it takes no generator), so the
    # views are made reproducible by seeding it; evaluation runs after training, so nothing later
    # in the run depends on the RNG state this leaves
    torch.manual_seed(seed)
    z1 = torch.cat([encode(aug(c)).float() for c in x.split(512)])
    z2 = torch.cat([encode(aug(c)).float() for c in x.split(512)])
    out = diag.diagnostics(feats, z1, z2)
    out["protocol"] = {"features": "test split, un-augmented", "views": f"{len(idx)} test images x 2 suite augmentations",
                       "collapse": "mean per-dimension std of L2-normalized features below threshold"}
    return out
