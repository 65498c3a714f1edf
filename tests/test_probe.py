"""Linear probe: agrees with scikit-learn, never selects on test data, splits deterministically."""

import inspect
import json

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from bench.eval.probe import _LogRegPath, fit_logreg, linear_probe, select_l2, stratified_split

@pytest.fixture(autouse=True)
def _one_thread():
    """These problems are tiny: extra threads only add sync overhead, and on a shared 2-core
    machine oversubscribed OpenMP pools made one sklearn fit 50x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


GRID = tuple(float(v) for v in np.logspace(-5, 1, 7))  # short grid keeps the tests fast


def _signal_data(n=800, d=20, c=4, seed=0):
    g = np.random.default_rng(seed)
    y = g.integers(0, c, n)
    x = g.standard_normal((n, d)) + 0.8 * g.standard_normal((c, d))[y]
    return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)


def _objective(w, b, x, y, l2):
    logits = x @ w + b
    lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
    return float(np.mean(lse - logits[np.arange(len(y)), y]) + 0.5 * l2 * (w**2).sum())


def _gradient_norm2(w, b, x, y, l2):
    """||grad||^2 of the objective at (w, b), in float64."""
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    gw, gb = x.T @ p / len(y) + l2 * w, p.mean(0)
    return float((gw**2).sum() + (gb**2).sum())


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_matches_sklearn_at_fixed_C(C):
    x, y = load_digits(return_X_y=True)
    xtr, ytr, xte, yte = x[:1200], y[:1200], x[1200:], y[1200:]
    mean, std = xtr.mean(0), xtr.std(0)
    std[std == 0] = 1.0
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    sk = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(xtr, ytr)
    l2 = 1.0 / (C * len(xtr))  # sklearn: C * sum CE + ||W||^2 / 2  ==  n*C * (mean CE + l2/2 ||W||^2)
    w, b = fit_logreg(torch.as_tensor(xtr, dtype=torch.float32), torch.as_tensor(ytr), 10, l2,
                      max_iter=2000, tol=1e-6)
    w, b = w.double().numpy(), b.double().numpy()
    acc = 100.0 * np.mean((xte @ w + b).argmax(1) == yte)
    # both solutions are optimal to their tolerance, not equal: test points near the decision
    # boundary may go either way. 1 point of the 597 test images allows 5 such flips.
    assert abs(acc - 100.0 * sk.score(xte, yte)) <= 1.0
    obj_torch = _objective(w, b, xtr, ytr, l2)
    obj_sk = _objective(sk.coef_.T, sk.intercept_, xtr, ytr, l2)
    assert obj_torch <= obj_sk * (1 + 1e-4) + 1e-6
    assert np.linalg.norm(w - sk.coef_.T) <= 0.02 * np.linalg.norm(sk.coef_)
    # Softmax ignores a common shift of the intercepts, and the solvers start from different
    # ones (0 vs log class frequencies): compare them centered.
    b_sk = sk.intercept_ - sk.intercept_.mean()
    assert np.allclose(b - b.mean(), b_sk, atol=0.05 * max(1.0, np.abs(b_sk).max()))


def test_grid_path_matches_independent_fits():
    """The search carries one optimizer (and its curvature memory) along the grid; each point
    must still be the minimizer of its own objective."""
    x, y = _signal_data()
    x = (x - x.mean(0)) / x.std(0)
    solver = _LogRegPath(x, y, 4, max_iter=500, tol=1e-6)
    xd, yd = x.double().numpy(), y.numpy()
    for l2 in sorted(GRID, reverse=True):
        w_path, b_path = solver.solve(l2)
        w, b = fit_logreg(x, y, 4, l2, max_iter=500, tol=1e-6)
        path = w_path.double().numpy(), b_path.double().numpy()
        fresh = w.double().numpy(), b.double().numpy()
        # Where each solve stops depends on float32 rounding (the BLAS kernel), so the two are
        # compared by what the stopping rule guarantees: a mu-strongly convex objective is within
        # ||g||^2 / (2 mu) of its minimum. mu >= l2 for W (the penalty); the bias block's curvature
        # is the softmax's (~0.1 and more on these data), hence mu = min(l2, 0.1).
        g2 = [_gradient_norm2(*sol, xd, yd, l2) for sol in (path, fresh)]
        # each met the stopping rule, max|g| <= 1e-6 over 84 parameters (1.5x: float32 rounding)
        assert max(g2) <= 84 * (1.5e-6) ** 2
        gap = sum(g2) / (2 * min(l2, 0.1))
        assert abs(_objective(*path, xd, yd, l2) - _objective(*fresh, xd, yd, l2)) <= gap + 1e-9


def test_selection_never_sees_test_data():
    assert not [p for p in inspect.signature(select_l2).parameters if "test" in p]
    x, y = _signal_data()
    tr_x, tr_y, te_x, te_y = x[:600], y[:600], x[600:], y[600:]
    ref = linear_probe(tr_x, tr_y, te_x, te_y, 4, grid=GRID)
    g = torch.Generator().manual_seed(3)
    other = linear_probe(tr_x, tr_y, torch.randn(50, 20, generator=g) * 5,
                         te_y[torch.randperm(len(te_y), generator=g)][:50], 4, grid=GRID)
    assert other.l2 == ref.l2 and other.val_top1 == ref.val_top1
    assert (ref.l2, ref.val_top1) == select_l2(tr_x, tr_y, 4, GRID)
    assert ref.top1 > 60.0  # the linear signal is found


def test_split_is_stratified_and_seeded():
    y = torch.as_tensor(np.repeat(np.arange(5), [10, 20, 30, 40, 101]))
    fit, val = stratified_split(y, 0.2, seed=0)
    assert sorted(torch.cat([fit, val]).tolist()) == list(range(len(y)))
    assert torch.bincount(y[val], minlength=5).tolist() == [2, 4, 6, 8, 20]
    fit2, val2 = stratified_split(y, 0.2, seed=0)
    assert torch.equal(val, val2) and torch.equal(fit, fit2)
    assert not torch.equal(val, stratified_split(y, 0.2, seed=1)[1])


def test_ties_prefer_larger_l2():
    x, y = _signal_data()
    # W ~ 0 under such penalties: both predict from the intercepts alone, i.e. identically --
    # provided one class is the most frequent in the fit part (else rounding breaks the tie).
    fit, _ = stratified_split(y, 0.2, seed=0)
    counts = torch.bincount(y[fit], minlength=4).sort(descending=True).values
    assert counts[0] > counts[1]
    l2, scores = select_l2(x, y, 4, (1e4, 1e6))
    assert scores[1e4] == scores[1e6] and l2 == 1e6


def test_protocol_is_json():
    x, y = _signal_data(n=400)
    res = linear_probe(x[:300], y[:300], x[300:], y[300:], 4, grid=GRID, seed=2)
    proto = json.loads(json.dumps(res.protocol(), allow_nan=False))
    assert proto["l2"] == res.l2 and proto["l2_grid"] == list(GRID) and proto["seed"] == 2
    assert res.n_train == 300 and res.n_val == 60 and res.n_test == 100
