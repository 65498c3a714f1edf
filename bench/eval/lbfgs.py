"""A lean L-BFGS for small, smooth, convex problems whose every evaluation is a big matmul.

Why not ``torch.optim.LBFGS``: its two-loop recursion and strong-Wolfe search cost ~200 small
tensor ops per iteration with a 50-pair memory, ~3 ms on 2 CPU cores, about as much as the linear
probe's whole objective (two 8000 x 256 x 10 GEMMs). Here the inverse-Hessian product uses the
compact representation (Byrd, Nocedal & Schnabel 1994, eq. 3.1): a few small matmuls, whatever
the memory size. The state is public so a caller can carry the curvature memory from one problem
to a nearby one (see ``bench.eval.probe``). Stopping rule as scikit-learn's lbfgs and
``torch.optim.LBFGS``: ``max |grad| <= tol``, or ``max_iter`` iterations.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

# f(x) -> (loss, gradient); x, gradient: flat float64 vectors, loss: a Python float.
Objective = Callable[[Tensor], tuple[float, Tensor]]


class LBFGS:
    """Minimizes an objective from a start point, keeping the last ``history`` pairs
    ``s = x_{k+1} - x_k`` and ``y = g_{k+1} - g_k`` as rows of ``S`` and ``Y``."""

    def __init__(self, history: int = 50, c1: float = 1e-4, c2: float = 0.9, eps_f: float = 1e-6,
                 max_ls: int = 25) -> None:
        self.history = history
        self.c1, self.c2 = c1, c2  # Wolfe: sufficient decrease, curvature (0.9: the usual for quasi-Newton)
        self.eps_f = eps_f  # relative loss change treated as rounding (Hager & Zhang's epsilon)
        self.max_ls = max_ls
        self.S: Tensor | None = None
        self.Y: Tensor | None = None
        self.SY: Tensor | None = None  # SY[i, j] = s_i . y_j, kept up to date pair by pair
        # H0 = gamma * P: P applies a fixed symmetric positive definite approximation of the inverse
        # Hessian (identity when None); gamma scales it to the latest curvature pair.
        self.precond: Callable[[Tensor], Tensor] | None = None
        self.evals = 0  # objective evaluations, all calls together

    # -- memory ------------------------------------------------------------------------------
    def reset(self) -> None:
        self.S = self.Y = self.SY = None

    def set_memory(self, S: Tensor, Y: Tensor) -> None:
        """Replace the pairs (e.g. shifted to a new objective); drops pairs with ``s.y <= 0``,
        which would make the inverse-Hessian model indefinite."""
        keep = (S * Y).sum(1) > 1e-10
        if not bool(keep.any()):
            self.reset()
            return
        self.S, self.Y = S[keep], Y[keep]
        self.SY = self.S @ self.Y.T

    def _push(self, s: Tensor, y: Tensor) -> None:
        if float(s.dot(y)) <= 1e-10:  # no curvature information along s: skip the pair
            return
        if self.S is None:
            self.S, self.Y, self.SY = s[None].clone(), y[None].clone(), s.dot(y).reshape(1, 1)
            return
        old = max(0, len(self.S) - self.history + 1)  # pairs to drop so that `history` remain
        self.S = torch.cat([self.S[old:], s[None]])
        self.Y = torch.cat([self.Y[old:], y[None]])
        # one new row and column instead of recomputing S @ Y.T (float64 GEMMs are slow on CPU)
        sy = torch.cat([self.SY[old:, old:], (self.S[:-1] @ y)[:, None]], 1)
        self.SY = torch.cat([sy, (self.Y @ s)[None]], 0)

    def direction(self, g: Tensor) -> Tensor:
        """``-H g`` with the compact L-BFGS inverse Hessian on top of ``H0 = gamma * P``
        (``-P g`` when the memory is empty; without ``P``, ``-g`` at most unit length in l1)."""
        P = self.precond if self.precond is not None else (lambda v: v)
        if self.S is None:
            return -P(g) if self.precond is not None else -g / max(1.0, float(g.abs().sum()))
        S, Y, sy = self.S, self.Y, self.SY
        gamma = float(sy[-1, -1] / Y[-1].dot(P(Y[-1])))
        R = sy.triu()
        hg = gamma * P(g)
        u = torch.linalg.solve_triangular(R, (S @ g)[:, None], upper=True)[:, 0]
        hytu = gamma * P(Y.T @ u)
        v = torch.diagonal(sy) * u + Y @ hytu - Y @ hg
        p = torch.linalg.solve_triangular(R.T, v[:, None], upper=False)[:, 0]
        return -(hg + S.T @ p - hytu)

    # -- minimization ------------------------------------------------------------------------
    def _line_search(self, f: Objective, x: Tensor, loss: float, g: Tensor, d: Tensor,
                     gd: float) -> tuple[Tensor, float, Tensor] | None:
        """A step ``t`` along ``d`` meeting the weak Wolfe conditions, or, once loss differences
        drown in rounding (a float32 loss resolves ~1e-9), Hager & Zhang's approximate Wolfe
        conditions, which judge by the slope: reliable where the loss is not. While the slope is still
        steep, extrapolate to where its secant reaches zero (exact on a quadratic); once the
        minimum is bracketed, secant steps on the slope inside the bracket."""
        eps = self.eps_f * abs(loss)
        lo, lo_dg, hi, hi_dg = 0.0, gd, math.inf, math.nan
        t = 1.0
        for _ in range(self.max_ls):
            x_t = x + t * d
            loss_t, g_t = f(x_t)
            self.evals += 1
            dg = float(g_t.dot(d))
            finite = math.isfinite(loss_t) and math.isfinite(dg)
            if finite and dg >= self.c2 * gd and (
                    loss_t <= loss + self.c1 * t * gd
                    or (loss_t <= loss + eps and dg <= (2 * self.c1 - 1) * gd)):
                return x_t, loss_t, g_t
            if not finite or dg > 0 or loss_t > loss + self.c1 * t * gd + eps:
                hi, hi_dg = t, (dg if finite else math.nan)  # past the minimum along d
            else:  # still descending steeply: go further, to where the slope's secant reaches 0
                t_sec = t - dg * (t - lo) / (dg - lo_dg) if dg > lo_dg else math.inf
                lo, lo_dg = t, dg
                if hi == math.inf:
                    t = min(max(t_sec, 1.1 * t), 10.0 * t)
                    continue
            # bracketed: the slope's secant between lo and hi, kept off the ends (bisection without hi's slope)
            width = hi - lo
            t_sec = lo - lo_dg * width / (hi_dg - lo_dg) if math.isfinite(hi_dg) and hi_dg > lo_dg else math.nan
            t = min(max(t_sec, lo + 0.1 * width), hi - 0.1 * width) if math.isfinite(t_sec) else lo + 0.5 * width
        return None

    def minimize(self, f: Objective, x: Tensor, max_iter: int, tol: float) -> tuple[Tensor, float, Tensor]:
        """Run from ``x`` (float64, flat) until ``max |g| <= tol`` or ``max_iter`` iterations;
        returns ``(x, loss, grad)``. A line search that finds no acceptable step (the
        objective's float precision reached) also stops."""
        loss, g = f(x)
        self.evals += 1
        for _ in range(max_iter):
            if float(g.abs().max()) <= tol:
                break
            d = self.direction(g)
            gd = float(g.dot(d))
            if not gd < 0:  # not a descent direction (stale memory): restart from steepest descent
                self.reset()
                d = self.direction(g)
                gd = float(g.dot(d))
            step = self._line_search(f, x, loss, g, d, gd)
            if step is None:
                break
            x_new, loss, g_new = step
            self._push(x_new - x, g_new - g)
            x, g = x_new, g_new
        return x, loss, g
