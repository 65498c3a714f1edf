"""Representation diagnostics on features whose answers are known."""

import math

import pytest
import torch

from bench.eval.diagnostics import alignment, diagnostics, effective_rank, invariance, is_collapsed, uniformity


def _gauss(n=2000, d=32, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_effective_rank_tracks_rank():
    assert effective_rank(torch.ones(500, 32) * 3) == pytest.approx(1.0, abs=0.01)
    low = _gauss(d=4) @ _gauss(n=4, d=32, seed=1)  # rank 4 in 32 dims
    assert 3.0 < effective_rank(low) <= 4.01
    assert 0.9 * 32 < effective_rank(_gauss()) <= 32
    assert effective_rank(torch.zeros(10, 8)) == 0.0


def test_alignment_and_invariance_of_identical_views():
    z = _gauss()
    assert alignment(z, z) == pytest.approx(0.0, abs=1e-6)
    assert invariance(z, z) == pytest.approx(1.0, abs=1e-5)
    assert alignment(z, 2 * z) == pytest.approx(0.0, abs=1e-6)  # scale-free: features are normalized
    other = _gauss(seed=1)
    assert alignment(z, other) == pytest.approx(2.0, abs=0.1)  # independent unit vectors: E||a-b||^2 = 2
    assert abs(invariance(z, other)) < 0.05


def test_uniformity():
    assert uniformity(torch.ones(100, 16)) == pytest.approx(0.0, abs=1e-6)
    spread = uniformity(_gauss(n=5000))  # > 4096 rows: subsampled, seeded
    assert spread < -3.0 and spread == uniformity(_gauss(n=5000))


def test_collapse_flag():
    assert is_collapsed(torch.ones(100, 64) * 7)
    assert is_collapsed(torch.ones(100, 64) + 1e-7 * _gauss(100, 64))
    assert not is_collapsed(_gauss())


def test_diagnostics_dict_is_finite():
    z1 = _gauss()
    out = diagnostics(_gauss(seed=2), z1, z1 + 0.1 * _gauss(seed=3))
    keys = {"effective_rank", "alignment", "uniformity", "invariance", "collapsed", "feature_std"}
    assert set(out) == keys
    assert out["collapsed"] is False
    assert all(math.isfinite(v) for k, v in out.items() if k != "collapsed")
    collapsed = diagnostics(torch.ones(50, 8), torch.ones(50, 8), torch.ones(50, 8))
    assert collapsed["collapsed"] is True and collapsed["uniformity"] == pytest.approx(0.0, abs=1e-6)
    assert all(math.isfinite(v) for k, v in collapsed.items() if k != "collapsed")
