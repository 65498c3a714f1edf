"""Weighted kNN classifier on frozen features (InstDisc protocol, as lightly's ``knn_predict``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from typing import Any


def knn_predict(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 2048,
) -> Tensor:
    """Predict int64 labels for ``test_feats`` by a temperature-weighted vote of the k nearest
    (cosine) training features. Runs on the device of ``train_feats``."""
    if k < 1 or chunk_size < 1 or temperature <= 0:
        raise ValueError("k and chunk_size must be >= 1 and temperature > 0")
    device = train_feats.device
    bank = F.normalize(train_feats.float(), dim=1)
    labels = train_labels.to(device=device, dtype=torch.long)
    k = min(k, bank.shape[0])  # a small bank votes with all of its samples
    preds = []
    # Chunk the test set so the similarity matrix is (chunk, N_bank), never (N_test, N_bank).
    for start in range(0, test_feats.shape[0], chunk_size):
        q = F.normalize(test_feats[start : start + chunk_size].to(device).float(), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weights = (sim / temperature).exp()
        scores = torch.zeros(q.shape[0], num_classes, device=device)
        scores.scatter_add_(1, labels[idx], weights)
        preds.append(scores.argmax(dim=1))
    if not preds:
        return torch.empty(0, dtype=torch.long, device=device)
    return torch.cat(preds)


def knn_top1(train_feats: Tensor, train_labels: Tensor, test_feats: Tensor, test_labels: Tensor, num_classes: int,
             **options: Any) -> float:
    """Top-1 accuracy (percent) of :func:`knn_predict` on ``test_labels`` (options: k, temperature, chunk_size)."""
    correct = knn_correct(train_feats, train_labels, test_feats, test_labels, num_classes, **options)
    return 100.0 * correct.sum().item() / correct.numel()


def knn_correct(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 2048,
) -> Tensor:
    """Per-test-sample correctness (bool) of :func:`knn_predict`: what :func:`knn_top1` averages,
    kept per image for the paired tests and intervals (bench/eval/intervals.py)."""
    preds = knn_predict(train_feats, train_labels, test_feats, num_classes, k, temperature, chunk_size)
    if preds.numel() == 0:
        raise ValueError("knn_top1 needs at least one test sample")
    return preds == test_labels.to(preds.device)
