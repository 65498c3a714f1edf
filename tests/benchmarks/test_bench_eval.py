"""Evaluation kernels at the fmnist-ci scale: kNN (10k bank x 10k queries, 256-d, k=200)
against a bare matmul + topk, and the linear probe with its 19-point L2 search (the suites' default grid)."""
from __future__ import annotations

import pytest
import torch

from bench.eval.knn import knn_top1
from bench.eval.probe import l2_grid, linear_probe


def _features(n: int, d: int = 256, classes: int = 10, seed: int = 0):
    centers = torch.randn(classes, d, generator=torch.Generator().manual_seed(1234))  # shared by all splits
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    return centers[y] * 0.3 + torch.randn(n, d, generator=g), y


@pytest.fixture(scope="module")
def knn_data():
    bank, yb = _features(10_000, seed=0)
    test, yt = _features(10_000, seed=1)
    return bank, yb, test, yt


def test_knn_top1(benchmark, knn_data):
    bank, yb, test, yt = knn_data
    acc = benchmark.pedantic(knn_top1, args=(bank, yb, test, yt, 10), kwargs={"k": 200, "temperature": 0.1},
                             rounds=3, warmup_rounds=1)
    assert 0 <= acc <= 100


def test_knn_bare_matmul_topk(benchmark, knn_data):
    bank, _, test, _ = knn_data

    def bare():
        return (test @ bank.T).topk(200, dim=1)

    benchmark.pedantic(bare, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("n_train", [2_000, 10_000])
def test_linear_probe_with_search(benchmark, n_train):
    xtr, ytr = _features(n_train, seed=2)
    xte, yte = _features(2_000, seed=3)
    res = benchmark.pedantic(linear_probe, args=(xtr, ytr, xte, yte, 10), kwargs={"grid": l2_grid()},
                             rounds=1, warmup_rounds=0)
    assert res.top1 > 10
