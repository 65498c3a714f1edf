"""Linear probe: multinomial logistic regression on frozen features, solved with full-batch L-BFGS.

Protocol (after ssl-transfer's ``linear.py``): standardize with the TRAIN mean/std, choose the L2
strength on a seeded, class-stratified held-out part of TRAIN, refit on all of TRAIN with it and
score the test split once. Our ``l2`` penalizes the MEAN cross-entropy:
``mean CE + l2/2 * ||W||^2`` (bias unpenalized), which is scikit-learn's ``LogisticRegression(C)``
with ``l2 = 1 / (C * n_samples)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from bench.eval.lbfgs import LBFGS

# The L2 grid, defined here once (EvalConfig's probe_grid_* defaults are these numbers).
# ssl-transfer searches torch.logspace(-6, 5, 45) as sklearn's 1/C, a penalty on the SUM of the
# losses; ours penalizes the MEAN, so their wd is our l2 = wd / n_train. With n_train of 1e3..1e5
# their range maps to about 1e-11..1e2 here; we search 1e-7..1e2 in half decades (19 points):
# weaker penalties than 1e-7 leave the solution unchanged at the solver's stopping rule.
GRID_MIN, GRID_MAX, GRID_POINTS = -7.0, 2.0, 19


def l2_grid(lo: float = GRID_MIN, hi: float = GRID_MAX, points: int = GRID_POINTS) -> tuple[float, ...]:
    """The probe's L2 grid: ``points`` values log-spaced from 10**lo to 10**hi."""
    return tuple(float(v) for v in np.logspace(lo, hi, points))


# Same stopping rule as sklearn's lbfgs (gtol=tol=1e-4 on the max |gradient| of the mean objective).
DEFAULT_TOL = 1e-4
_HISTORY = 50  # L-BFGS memory pairs, carried along the grid (with the preconditioner 10, 20 and 50 are within ~15% in time)


@dataclass
class ProbeResult:
    """Outcome of :func:`linear_probe`; ``n_val`` rows are part of the ``n_train`` rows."""

    top1: float
    l2: float
    val_top1: dict[float, float]
    n_train: int
    n_val: int
    n_test: int
    seed: int = 0
    val_fraction: float = 0.2
    max_iter: int = 200
    tol: float = DEFAULT_TOL
    grid: tuple[float, ...] = field(default=())
    # per-test-image correctness of the refit probe (bool, on the features' device): the
    # paired tests and bootstrap intervals of bench/eval/intervals.py use it; not part of the protocol
    correct: Tensor | None = field(default=None, repr=False)

    def protocol(self) -> dict:
        """JSON-serializable description of how ``top1`` was obtained."""
        grid = list(self.grid) or list(self.val_top1)
        return {
            "classifier": "multinomial logistic regression, L2 penalty on weights (bias unpenalized)",
            "objective": "mean cross-entropy + l2/2 * ||W||^2",
            "solver": "full-batch L-BFGS (bench.eval.lbfgs: compact inverse-Hessian form; Wolfe line "
            "search, approximate Wolfe once loss differences reach rounding), initial inverse "
            "Hessian = the inverse Hessian diagonal in the features' principal axes, set per l2; "
            "float32 matmuls, float64 parameters and loss sum",
            "path": "grid solved from largest to smallest l2, each warm-started from the previous "
            "solution with the L-BFGS memory carried over",
            "history_size": _HISTORY,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "standardization": "per-feature mean/std of the train split, applied to test",
            "selection": "held-out accuracy on a class-stratified part of train; ties -> larger l2; "
            "then refit on all of train and score test once",
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "l2_grid": grid,
            "val_top1": [self.val_top1.get(v) for v in grid],
            "l2": self.l2,
            "sklearn_C": 1.0 / (self.l2 * self.n_train) if self.l2 > 0 else None,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "n_test": self.n_test,
            "top1": self.top1,
        }


def _standardizer(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False)
    # Constant features carry no signal; dividing by 1 keeps them at 0 instead of NaN.
    return mean, torch.where(std > 1e-8, std, torch.ones_like(std))


class _LogRegPath:
    """Solves ``mean CE + l2/2 ||W||^2`` for a sequence of l2 values on fixed data, one L-BFGS
    throughout: its curvature memory carries over from one l2 to the next."""

    def __init__(self, x: Tensor, y: Tensor, num_classes: int, max_iter: int, tol: float,
                 init: tuple[Tensor, Tensor] | None = None) -> None:
        self.x = x.float().contiguous()
        self.n, d = self.x.shape
        self.k, self.nw = num_classes, num_classes * d
        self.max_iter, self.tol = max_iter, tol
        # Sample-major (N, K) logits: x @ W and resid.T @ x are the fastest layouts for K ~ 10
        # output columns on CPU BLAS (measured: ~1.4 and ~2 ms at 8000 x 256 on 2 cores).
        self.y = y.to(self.x.device, torch.long)[:, None]
        self.onehot = F.one_hot(self.y[:, 0], num_classes).float()
        self.grad = torch.empty(self.nw + num_classes, device=self.x.device)
        if init is None:
            wt = torch.zeros(num_classes, d, device=self.x.device)
            # Intercepts at the log class frequencies: the exact optimum when W = 0, so strongly
            # regularized fits start converged in b (unpenalized, hence badly scaled against W).
            b = self.onehot.sum(0).clamp_min(0.5).div(self.n).log()
        else:
            wt, b = init[0].T.to(self.x), init[1].to(self.x)
        # Parameters and optimizer state in float64 (2.6k numbers: free); the GEMMs in float32.
        self.theta = torch.cat([wt.reshape(-1), b]).double()
        self.opt = LBFGS(history=_HISTORY)
        self.l2: float | None = None
        # Preconditioner basis: the principal axes of the features. Along them the Hessian of the
        # mean CE is nearly diagonal, and its diagonal costs one GEMM (see _set_preconditioner).
        _, basis = torch.linalg.eigh((self.x.T @ self.x).double() / self.n)
        self.basis = basis.float()
        self.x_rot_sq = (self.x @ self.basis).pow_(2)  # (N, D) squared coordinates along the axes

    @torch.no_grad()
    def _objective(self, theta: Tensor) -> tuple[float, Tensor]:
        # Analytic gradient: no autograd graph, this runs a few hundred times per search.
        l2, nw = self.l2, self.nw
        th = theta.float()
        wt = th[:nw].view(self.k, -1)
        logp = torch.addmm(th[nw:], self.x, wt.T).log_softmax(1)
        # Loss summed in float64: the line search compares losses, and a float32 mean CE (ulp ~2e-7)
        # hides the last decreases, so near tol the search stalls with the gradient still too big.
        ce = -logp.gather(1, self.y).sum(dtype=torch.float64) / self.n
        loss = ce + 0.5 * l2 * theta[:nw].pow(2).sum()
        resid = logp.exp_().sub_(self.onehot)  # softmax - onehot, (N, K)
        grad = self.grad  # written in place: no concatenation per call
        torch.addmm(wt, resid.T, self.x, beta=l2, alpha=1.0 / self.n, out=grad[:nw].view(self.k, -1))
        torch.sum(resid, 0, out=grad[nw:]).div_(self.n)
        return float(loss), grad.double()

    def _shift_memory(self, delta: float) -> None:
        """Turn the L-BFGS memory of the previous l2 into that of ``previous + delta``: the objectives
        differ by ``delta/2 ||W||^2``, so every gradient difference moves by ``delta * s`` (exactly,
        W part only). The first step for the new l2 is then a quasi-Newton predictor along the
        solution path instead of a restart."""
        if self.opt.S is None:
            return
        y = self.opt.Y.clone()
        y[:, : self.nw] += delta * self.opt.S[:, : self.nw]
        self.opt.set_memory(self.opt.S, y)

    @torch.no_grad()
    def _set_preconditioner(self) -> None:
        """L-BFGS's initial inverse Hessian for this l2, from the current solution: per class k and
        principal axis u_j, 1 / (mean_n p_nk (1 - p_nk) (x_n . u_j)^2 + l2), i.e. the inverse of the
        Hessian's diagonal in that basis (exact up to the cross terms). Along the solution path the
        weakly penalized end is badly conditioned; measured on 8000 x 256 features, 10-point grid:
        153 instead of 1,118 evaluations, and every point now reaches tol (docs/performance.md)."""
        nw, k = self.nw, self.k
        th = self.theta.float()
        p = torch.addmm(th[nw:], self.x, th[:nw].view(k, -1).T).softmax(1)
        v = p * (1 - p)  # (N, K): diagonal of each sample's softmax Hessian
        h_w = torch.addmm(torch.full((k, self.x.shape[1]), self.l2, device=v.device), v.T,
                          self.x_rot_sq, alpha=1.0 / self.n)
        h_b = v.mean(0)
        # floors: null directions of the data (dead features) with l2 = 0 have no curvature at all
        h_w = h_w.clamp_min(1e-6 * float(h_w.max()) + 1e-30)
        h_b = h_b.clamp_min(1e-6 * float(h_b.max()) + 1e-30)
        basis = self.basis

        def apply(vec: Tensor) -> Tensor:
            w = vec[:nw].view(k, -1).float()
            w = ((w @ basis) / h_w) @ basis.T
            return torch.cat([w.reshape(-1), vec[nw:].float() / h_b]).to(vec.dtype)

        self.opt.precond = apply

    def solve(self, l2: float) -> tuple[Tensor, Tensor]:
        """Minimize for ``l2`` starting from the current solution; returns copies ``(W (D,K), b)``."""
        if l2 < 0:
            raise ValueError(f"l2 must be >= 0, got {l2}")
        if self.l2 is not None and l2 != self.l2:
            self._shift_memory(l2 - self.l2)
        self.l2 = float(l2)
        self._set_preconditioner()
        self.theta, _, _ = self.opt.minimize(self._objective, self.theta, self.max_iter, self.tol)
        w = self.theta[: self.nw].view(self.k, -1).T.float().clone()
        return w, self.theta[self.nw:].float().clone()


def fit_logreg(
    x: Tensor,
    y: Tensor,
    num_classes: int,
    l2: float,
    max_iter: int = 200,
    init: tuple[Tensor, Tensor] | None = None,
    tol: float = DEFAULT_TOL,
) -> tuple[Tensor, Tensor]:
    """Minimize ``mean CE(x @ W + b, y) + l2/2 * ||W||^2``; returns ``(W (D, K), b (K,))``.

    ``x`` is used as given (no standardization). ``init`` warm-starts from a previous solution.
    """
    return _LogRegPath(x, y, num_classes, max_iter, tol, init).solve(l2)


def _top1(w: Tensor, b: Tensor, x: Tensor, y: Tensor) -> float:
    correct = ((x.float() @ w + b).argmax(1) == y.to(x.device)).sum().item()
    return 100.0 * correct / len(y)


def stratified_split(y: Tensor, val_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Sorted ``(fit_idx, val_idx)`` with ``round(val_fraction * n_c)`` (at least 1) held out per
    class (at least one row of each class stays in fit); deterministic per seed."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    labels = y.detach().cpu().numpy()
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        # at least one held-out row per class that has two or more (tiny label subsets)
        val.append(idx[: min(max(1, int(round(val_fraction * len(idx)))), len(idx) - 1)])
    val_idx = np.sort(np.concatenate(val))
    if len(val_idx) == 0:
        raise ValueError("held-out split is empty: too few train samples per class")
    fit_mask = np.ones(len(labels), dtype=bool)
    fit_mask[val_idx] = False
    fit_idx = np.flatnonzero(fit_mask)
    return torch.as_tensor(fit_idx, device=y.device), torch.as_tensor(val_idx, device=y.device)


def _select(
    train_x: Tensor, train_y: Tensor, num_classes: int, grid: Sequence[float],
    val_fraction: float, seed: int, max_iter: int, tol: float,
) -> tuple[float, dict[float, float], tuple[Tensor, Tensor], int]:
    """Grid search on a held-out part of train; also returns the chosen model (a warm start)."""
    if not grid:
        raise ValueError("l2 grid is empty")
    train_y = train_y.to(train_x.device)
    fit_idx, val_idx = stratified_split(train_y, val_fraction, seed)
    x_fit, y_fit, y_val = train_x[fit_idx].float(), train_y[fit_idx], train_y[val_idx]
    mean, std = _standardizer(x_fit)  # stats of the fit part only: the held-out part stays unseen
    x_fit = (x_fit - mean) / std
    x_val = (train_x[val_idx].float() - mean) / std
    scores: dict[float, float] = {}
    models: dict[float, tuple[Tensor, Tensor]] = {}
    # Strongest penalty first: its solution is ~0 (W) and log-priors (b), where the solver starts;
    # each next value starts from the previous solution with the curvature memory carried over.
    solver = _LogRegPath(x_fit, y_fit, num_classes, max_iter, tol)
    for l2 in sorted({float(v) for v in grid}, reverse=True):
        models[l2] = solver.solve(l2)
        scores[l2] = _top1(*models[l2], x_val, y_val)
    best = max(scores, key=lambda v: (scores[v], v))  # ties -> larger l2 (simpler model)
    return best, {float(v): scores[float(v)] for v in grid}, models[best], len(val_idx)


def select_l2(
    train_x: Tensor, train_y: Tensor, num_classes: int, grid: Sequence[float] | None = None,
    val_fraction: float = 0.2, seed: int = 0, max_iter: int = 200, tol: float = DEFAULT_TOL,
) -> tuple[float, dict[float, float]]:
    """Choose l2 from ``grid`` (default :func:`l2_grid`) by held-out accuracy on TRAIN only;
    returns (l2, {l2: val top1 %})."""
    grid = l2_grid() if grid is None else grid
    best, scores, _, _ = _select(train_x, train_y, num_classes, grid, val_fraction, seed, max_iter, tol)
    return best, scores


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    grid: Sequence[float] | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 200,
    tol: float = DEFAULT_TOL,
) -> ProbeResult:
    """Select l2 on train (from ``grid``, default :func:`l2_grid`), refit on all of train, report
    test top-1 (percent). Device of train_x."""
    grid = l2_grid() if grid is None else grid
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D, got {tuple(train_x.shape)} "
                         f"and {tuple(test_x.shape)}")
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("features and labels differ in length")
    if len(test_x) == 0:
        raise ValueError("test split is empty")
    # Selection sees train only; test enters below, after l2 is fixed.
    l2, val_top1, init, n_val = _select(train_x, train_y, num_classes, grid, val_fraction, seed,
                                        max_iter, tol)
    x = train_x.float()
    mean, std = _standardizer(x)
    w, b = fit_logreg((x - mean) / std, train_y, num_classes, l2, max_iter, init, tol)
    test_x = (test_x.to(x.device).float() - mean) / std
    # the same arithmetic as _top1, keeping the per-image correctness
    correct = (test_x.float() @ w + b).argmax(1) == test_y.to(test_x.device)
    top1 = 100.0 * correct.sum().item() / len(test_y)
    return ProbeResult(
        top1=top1, l2=l2, val_top1=val_top1, n_train=len(train_x), n_val=n_val, n_test=len(test_x),
        seed=seed, val_fraction=val_fraction, max_iter=max_iter, tol=tol,
        grid=tuple(float(v) for v in grid), correct=correct,
    )
