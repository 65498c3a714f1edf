"""Intervals and ties of the leaderboard (issue #17; the statistics are bench/eval/intervals.py).

For every leaderboard row and metric column: a 95% interval — the run's stored bootstrap
interval over test images for one seed, Student's t-interval on the seed mean for several —
and, for the self-supervised rows, whether the row is significantly different from the
column's best: McNemar's exact test on per-image predictions when the two rows share one seed,
a paired t-test over the seeds they share when they share two or more, Holm-corrected over the
comparisons of the column. Runs stored without predictions (made before issue #17) get no
interval and no tie test for one seed; the page says so.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from bench.eval import intervals as iv

from .frame import BASELINE, HI, LO

NO_PREDICTIONS = "no per-image predictions stored"


class PredictionCache:
    """Loads each run's predictions.npz once."""

    def __init__(self) -> None:
        self._cache: dict[str, iv.Predictions | None] = {}

    def __call__(self, run: pd.Series) -> iv.Predictions | None:
        d, name = run.get("directory"), run.get("predictions")
        if not isinstance(d, Path) or not isinstance(name, str):
            return None
        key = str(d / name)
        if key not in self._cache:
            self._cache[key] = iv.load_predictions(d, name)
        return self._cache[key]


def by_seed(runs: pd.DataFrame, metric: str) -> dict[int, pd.Series]:
    """The ok runs of one row that hold `metric`, by seed."""
    if metric not in runs:
        return {}
    ok = runs[(runs["status"] == "ok") & runs[metric].notna()]
    return {int(r["seed"]): r for _, r in ok.iterrows()}


def compare(a: dict[int, pd.Series], b: dict[int, pd.Series], metric: str,
            preds: Callable[[pd.Series], iv.Predictions | None]) -> tuple[float | None, str]:
    """Two-sided p-value that rows `a` and `b` (runs by seed) differ on `metric`, and which
    test gave it; (None, why) when no paired test is possible."""
    common = sorted(set(a) & set(b))
    if len(common) >= 2:
        p = iv.paired_t([float(a[s][metric]) for s in common], [float(b[s][metric]) for s in common])
        return p, f"paired t-test over {len(common)} seeds ({', '.join(map(str, common))})"
    if len(common) == 1:
        s = common[0]
        pa, pb = preds(a[s]), preds(b[s])
        if pa is None or pb is None:
            return None, NO_PREDICTIONS
        pair = pa.paired(pb, metric)
        if pair is None:
            return None, "predictions not on the same test images"
        return iv.mcnemar_exact(*pair), f"McNemar exact test, seed {s}, {len(pair[0])} test images"
    return None, "no seed in common"


def row_interval(runs: dict[int, pd.Series], metric: str) -> tuple[float, float, str]:
    """(lo, hi, how) of one row: a t-interval over >= 2 seeds, else the one run's bootstrap interval."""
    values = [float(r[metric]) for r in runs.values()]
    if len(values) >= 2:
        lo, hi = iv.t_interval(values)
        return lo, hi, f"t-interval over {len(values)} seeds"
    if len(values) == 1:
        r = next(iter(runs.values()))
        lo, hi = _num(r.get(metric + LO)), _num(r.get(metric + HI))
        if not (math.isnan(lo) or math.isnan(hi)):
            return lo, hi, "bootstrap over test images"
    return math.nan, math.nan, ""


def add_uncertainty(board: pd.DataFrame, df: pd.DataFrame, cols: list[str]) -> None:
    """Add per column c to `board` (in place): c_ci_lo, c_ci_hi, c_ci_method (the 95% interval),
    c_tied (True: not significantly different from the column's top row; False: significantly
    worse; None: the top row itself, a baseline, or no test possible), c_p (Holm-adjusted p-value against the best), c_test
    (the test, or why there is none) and c_sig_rank (1 for the top row, the rows that look
    equal to it and every row tied with it, else the rank by mean)."""
    if board.empty:
        return
    preds = PredictionCache()
    rows = {i: df[(df["suite"] == r["suite"]) & (df["label"] == r["label"])] for i, r in board.iterrows()}
    for c in cols:
        seeds = {i: by_seed(g, c) for i, g in rows.items()}
        ci = {i: row_interval(seeds[i], c) for i in board.index}
        board[c + "_ci_lo"] = [ci[i][0] for i in board.index]
        board[c + "_ci_hi"] = [ci[i][1] for i in board.index]
        board[c + "_ci_method"] = [ci[i][2] for i in board.index]
        tied: dict[Any, bool | None] = {i: None for i in board.index}
        p_adj: dict[Any, float] = {}
        test: dict[Any, str] = {i: "" for i in board.index}
        for _suite, g in board.groupby("suite", dropna=False, sort=False):
            ssl = g[(g["paradigm"] != BASELINE) & g[c + "_mean"].notna()]
            if ssl.empty:
                continue
            # the reference: the top row by the unrounded mean (the first of equal ones, in display
            # order); every other ranked row is tested against it, equal-looking ones included
            ref = ssl[c + "_mean"].idxmax()
            test[ref] = "top row of the column (the reference)"
            raw: dict[Any, float] = {}
            for i in ssl.index:
                if i == ref:
                    continue
                p, how = compare(seeds[ref], seeds[i], c, preds)
                test[i] = how
                if p is not None:
                    raw[i] = p
            for i, q in iv.holm(raw).items():
                p_adj[i] = q
                tied[i] = bool(q >= iv.ALPHA)
        board[c + "_tied"] = pd.Series(tied, dtype=object)
        board[c + "_p"] = [p_adj.get(i, math.nan) for i in board.index]
        board[c + "_test"] = [test[i] for i in board.index]
        board[c + "_sig_rank"] = [1.0 if (bool(board.at[i, c + "_best"]) or tied[i]) else board.at[i, c + "_rank"]
                                  for i in board.index]


def fmt_ci(lo: Any, hi: Any) -> str | None:
    """'[lo, hi]' with one decimal, None when there is no interval."""
    lo, hi = _num(lo), _num(hi)
    if math.isnan(lo) or math.isnan(hi):
        return None
    return f"[{lo:.1f}, {hi:.1f}]"


def tie_title(r: pd.Series, c: str) -> str | None:
    """The tooltip / legend text of a tie mark: the test and its Holm-adjusted p-value."""
    if r.get(c + "_tied") is not True:
        return None
    return f"not significantly different from the column's top row: {r[c + '_test']}, Holm-adjusted p = {r[c + '_p']:.3g}"


def missing_tests(board: pd.DataFrame, cols: list[str]) -> list[str]:
    """Labels of the ranked rows that got no tie test in some column because their runs stored no predictions."""
    out = []
    for _, r in board.iterrows():
        if r["paradigm"] != BASELINE and any(r.get(c + "_test") == NO_PREDICTIONS for c in cols):
            out.append(str(r["label"]))
    return out


def _num(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


__all__ = ["add_uncertainty", "compare", "by_seed", "fmt_ci", "missing_tests", "tie_title", "PredictionCache",
           "row_interval", "NO_PREDICTIONS"]
