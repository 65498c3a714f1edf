"""Uncertainty of accuracies: 95% intervals and paired significance tests (docs/protocols.md §3a).

- Within one run: a percentile bootstrap over the test images of the run's per-image
  correctness (BOOTSTRAP_RESAMPLES resamples, fixed seed BOOTSTRAP_SEED), stored per metric in
  result.json (`intervals`); the correctness itself is stored in the run directory
  (`predictions.npz`: one bool array per metric, with the test labels it was scored against).
- Across seeds: Student's t-interval on the mean of the per-seed accuracies.
- Two rows of a leaderboard column: McNemar's exact test on the same test images (one seed
  in common) or a paired t-test over the seeds they share (two or more), then Holm's step-down
  correction over the comparisons of one family (a column, an ablation panel).

All of it is computed from predictions already made; nothing here changes a metric's value.
"""
from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

LEVEL = 0.95                 # two-sided coverage of every interval
ALPHA = 0.05                 # significance level of every test (family-wise, Holm)
BOOTSTRAP_RESAMPLES = 2000   # enough for stable 2.5%/97.5% percentiles; ~0.1 s on 10k test images
BOOTSTRAP_SEED = 0           # fixed: the same run always gets the same interval
PREDICTIONS = "predictions.npz"
_CHUNK = 100                 # resamples drawn at once (memory: chunk x n int32)


def bootstrap_interval(correct: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval (in %) of the accuracy of per-image `correct` (bool):
    the test images are resampled with replacement `resamples` times."""
    c = np.asarray(correct, dtype=bool).ravel()
    n = len(c)
    if n == 0:
        raise ValueError("bootstrap_interval needs at least one test image")
    rng = np.random.default_rng(seed)
    acc = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        m = min(_CHUNK, resamples - start)
        idx = rng.integers(0, n, size=(m, n), dtype=np.int32 if n < 2**31 else np.int64)
        acc[start:start + m] = np.count_nonzero(c[idx], axis=1)
    tail = (1.0 - level) / 2
    lo, hi = np.quantile(acc * (100.0 / n), [tail, 1.0 - tail])
    return float(lo), float(hi)


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float] | None:
    """Student's t-interval (in the values' units) on the mean of `values` (one per seed),
    clipped to [0, 100]; None for fewer than two values."""
    from scipy import stats
    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if len(x) < 2:
        return None
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    m = float(x.mean())
    return max(0.0, m - half), min(100.0, m + half)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sided p-value of McNemar's exact test that two classifiers scored on the SAME test
    images (per-image correctness `a`, `b`) are equally accurate: a binomial test of the
    discordant pairs (a right / b wrong vs a wrong / b right) against p = 1/2."""
    from scipy import stats
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired predictions differ in shape: {a.shape} vs {b.shape}")
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(min(1.0, 2.0 * stats.binom.cdf(min(only_a, only_b), only_a + only_b, 0.5)))


def paired_t(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of the paired t-test over seeds (a[i], b[i] from the same seed).
    Identical differences: p = 1 when they are all 0, else 0 (no spread to weigh them by)."""
    from scipy import stats
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(d) < 2:
        raise ValueError("a paired t-test needs at least two pairs")
    if np.allclose(d, d[0], rtol=0.0, atol=1e-12):
        return 1.0 if abs(d[0]) <= 1e-12 else 0.0
    return float(stats.ttest_rel(a, b).pvalue)


def holm(pvalues: Mapping[Hashable, float]) -> dict[Hashable, float]:
    """Holm's step-down adjusted p-values (family-wise error rate): a comparison is significant
    at ALPHA when its adjusted p-value is below ALPHA."""
    order = sorted(pvalues, key=lambda k: pvalues[k])
    m, running, out = len(order), 0.0, {}
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[k]))
        out[k] = running
    return out


# ----------------------------------------------------------------------------- per-run storage

@dataclass
class Predictions:
    """A run's per-test-image correctness per metric, and the labels it was scored against."""
    correct: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]

    def paired(self, other: "Predictions", metric: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Both runs' correctness on `metric` when they scored the same test labels, else None."""
        if metric not in self.correct or metric not in other.correct:
            return None
        la, lb = self.labels.get(metric), other.labels.get(metric)
        if la is None or lb is None or la.shape != lb.shape or not np.array_equal(la, lb):
            return None
        return self.correct[metric], other.correct[metric]


def interval_record(correct: np.ndarray) -> dict[str, Any]:
    """One metric's stored interval (result.json `intervals[metric]`)."""
    lo, hi = bootstrap_interval(correct)
    return {"lo": lo, "hi": hi, "level": LEVEL, "method": "percentile bootstrap over test images",
            "resamples": BOOTSTRAP_RESAMPLES, "seed": BOOTSTRAP_SEED, "n_test": int(len(correct))}


def save_predictions(run_dir: Path, correct: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> str:
    """Write predictions.npz into `run_dir` atomically; returns its file name."""
    arrays = {f"correct.{k}": np.asarray(v, dtype=bool) for k, v in correct.items()}
    arrays.update({f"labels.{k}": np.asarray(v).astype(np.int32) for k, v in labels.items()})
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = run_dir / f".{PREDICTIONS}.{os.getpid()}.tmp"
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, run_dir / PREDICTIONS)
    return PREDICTIONS


def load_predictions(run_dir: Path | None, name: str | None = PREDICTIONS) -> Predictions | None:
    """A run's stored predictions, or None when it has none (older results) or they cannot be read."""
    if run_dir is None or not name:
        return None
    path = Path(run_dir) / name
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            correct = {k[len("correct."):]: z[k] for k in z.files if k.startswith("correct.")}
            labels = {k[len("labels."):]: z[k] for k in z.files if k.startswith("labels.")}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:  # damaged: no tie test, not a crash
        import sys
        print(f"warning: {path} cannot be read ({type(e).__name__}); its run shows no tie test", file=sys.stderr)
        return None
    return Predictions(correct, labels)


def record(run_dir: Path, correct: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Store a run's predictions and return what result.json gets: the file name and the
    bootstrap interval of every metric."""
    return {"predictions": save_predictions(run_dir, correct, labels),
            "intervals": {k: interval_record(v) for k, v in correct.items()}}


def describe() -> str:
    """The methods in one line (for reports)."""
    return (f"{LEVEL:.0%} intervals: one seed = percentile bootstrap over test images ({BOOTSTRAP_RESAMPLES} "
            f"resamples, seed {BOOTSTRAP_SEED}); n seeds = Student's t-interval on the seed mean. Ties: McNemar's exact "
            f"test on the same test images (one seed in common) or a paired t-test over the shared seeds, Holm-corrected "
            f"within each column, alpha = {ALPHA}")
