"""Drift tolerances measured, not asserted: `python -m bench check --suite S --calibrate DIR ...`.

What differs between two machines with the same package versions is float summation order
(another CPU's BLAS kernels, another thread count). Training is chaotic: one changed rounding
grows into a different trajectory, so a re-run elsewhere lands near the reference, not on it.
How near is measured from runs of the reference's own command (`runs/` of results directories):

- thread deltas: seed 0 at thread counts other than the reference's (1, 3 and 4 stand in for
  another CPU's kernels), each minus the reference value. E[delta^2] is the variance of exactly
  what `bench check` sees on another machine: one perturbed run minus the reference;
- the seed spread: the sample std over seeds at one thread count. A new seed re-draws the
  initialisation, the data order and the augmentations: it shows how far a trajectory that has
  fully diverged goes, so it caps the thread spread (two such draws differ by sqrt(2) std).

Per (method, metric) both are shrunk towards the same quantity pooled over the methods of that
metric that are alike in training: trained methods with trained methods, untrained baselines
(pixels, random-init: only the evaluation's own rounding moves them) with each other. The same
metric is the same evaluation set, so the same granularity: a metric on the 359-image digits
test split moves in steps of 0.28 points, one on 10k images in 0.01. The pool is weighted as
PRIOR_DOF observations, which steadies estimates made of two or three runs. Then

    sigma     = min(thread RMS, sqrt(2) * seed std)
    tolerance = max(q * sigma,  THREAD_MARGIN * max |thread delta|,  MIN_IMAGES test images)

where q is Student's t quantile for a two-sided false-alarm rate ALPHA per metric (4.7e-4, the
normal model's 3.5 sigma: about 4% that one of 80 metrics fails by chance alone), with as many
degrees of freedom as thread deltas went into the metric's pool: sigma is estimated, not known,
so its quantile is t's, not the normal's (q = 4.05 for 24 deltas, 6.9 for 6). A metric whose
tolerance would exceed MAX_USEFUL points is published but not checked (`checked: false`): a
check that wide would not catch a broken recipe, and one that fails on noise teaches people to
ignore it. Everything is recorded per metric in the reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.errors import UserError
from bench.results.check import is_number, reference_threads
from bench.results.store import RunRecord

ALPHA = 4.65e-4       # per-metric two-sided false-alarm rate (the normal model's 3.5 sigma)
THREAD_MARGIN = 1.25  # an observed thread-count delta must hold with room to spare
MIN_IMAGES = 5        # never tighter than five test images (another CPU moved untrained baselines by 2)
PRIOR_DOF = 2         # weight of the metric-wide pool, in observations
MAX_USEFUL = 6.0      # accuracy points; a wider tolerance is recorded but not checked


@dataclass(frozen=True)
class Sample:
    """One calibration run's value of one metric."""
    threads: int | None
    seed: int
    value: float


def collect(reference: dict[str, Any], results: list[RunRecord]) -> tuple[dict[str, dict[str, list[Sample]]],
                                                                             dict[str, dict[str, int]]]:
    """Samples per (method, metric), the reference itself included as (its threads, seed 0);
    and each metric's test-set size from its protocol (for the granularity floor)."""
    ref_threads = reference_threads(reference)
    samples: dict[str, dict[str, list[Sample]]] = {}
    sizes: dict[str, dict[str, int]] = {}
    for m, metrics in reference["methods"].items():
        for k, entry in metrics.items():
            samples.setdefault(m, {})[k] = [Sample(ref_threads, 0, float(entry["value"]))]
    for r in results:
        m, seed, threads = r.method, r.seed, r.threads
        if threads is None:
            raise UserError(f"run {r.run_id}: its device {r.timings.get('device')!r} "
                            "records no CPU thread count; calibrate with CPU runs")
        if threads == ref_threads and seed == 0:
            continue  # the reference itself (on this machine a bit-exact repeat of it)
        for k, v in r.metrics.items():
            if m in samples and k in samples[m] and is_number(v):
                samples[m][k].append(Sample(threads, int(seed), float(v)))
        for k, p in r.protocols.items():
            n = (p.get("n_test") or (p.get("split_sizes") or {}).get("test")) if isinstance(p, dict) else None
            if isinstance(n, int) and n > 0:
                sizes.setdefault(m, {})[k] = n
    return samples, sizes


def seed_spread(samples: list[Sample]) -> tuple[float, int]:
    """Pooled within-thread-count sample variance over seeds, and its degrees of freedom."""
    by: dict[int | None, dict[int, float]] = {}
    for s in samples:
        by.setdefault(s.threads, {})[s.seed] = s.value
    ss, dof = 0.0, 0
    for values in by.values():
        xs = list(values.values())
        if len(xs) > 1:
            mean = sum(xs) / len(xs)
            ss += sum((x - mean) ** 2 for x in xs)
            dof += len(xs) - 1
    return (ss / dof if dof else 0.0), dof


def _shrunk(own_ms: float, n: int, pooled_ms: float, pooled_n: int) -> float:
    """Mean square of one metric's n observations, shrunk towards the metric-wide pool."""
    w = min(PRIOR_DOF, pooled_n)
    return (own_ms * n + pooled_ms * w) / (n + w) if n + w else 0.0


def derive(reference: dict[str, Any], results: list[RunRecord]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per (method, metric): the measured spread and the tolerance derived from it."""
    ref_threads = reference_threads(reference)
    samples, sizes = collect(reference, results)
    deltas = {m: {k: {str(s.threads): s.value - xs[0].value for s in xs[1:] if s.seed == 0}
                  for k, xs in ms.items()} for m, ms in samples.items()}
    seeds = {m: {k: seed_spread(xs) for k, xs in ms.items()} for m, ms in samples.items()}
    if not any(d for ms in deltas.values() for d in ms.values()):
        raise UserError("no run of seed 0 at another thread count than the reference's: calibration needs e.g. "
                        "`bench run --threads 1` beside the seed runs")
    if not any(dof for ms in seeds.values() for _, dof in ms.values()):
        raise UserError("no metric has two seeds at one thread count: calibration needs runs of seeds 0..N-1 "
                        "(e.g. `bench run --seeds 3`) beside the thread-count runs")
    trains = {m: _trains(m) for m in samples}
    pooled_t: dict[tuple[str, bool], tuple[float, int]] = {}
    pooled_s: dict[tuple[str, bool], tuple[float, int]] = {}
    for key in {(k, trains[m]) for m, ms in samples.items() for k in ms}:
        k, group = key
        alike = [m for m in samples if trains[m] == group and k in samples[m]]
        ds = [d for m in alike for d in deltas[m][k].values()]
        pooled_t[key] = (sum(d * d for d in ds) / len(ds) if ds else 0.0, len(ds))
        parts = [seeds[m][k] for m in alike if seeds[m][k][1] > 0]
        dof = sum(d for _, d in parts)
        pooled_s[key] = (sum(v * d for v, d in parts) / dof if dof else 0.0, dof)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m, ms in samples.items():
        for k in ms:
            key = (k, trains[m])
            d = deltas[m][k]
            thread_rms = math.sqrt(_shrunk(sum(x * x for x in d.values()) / len(d) if d else 0.0, len(d),
                                           *pooled_t[key]))
            var, dof = seeds[m][k]
            seed_std = math.sqrt(_shrunk(var, dof, *pooled_s[key]))
            sigma = min(thread_rms, math.sqrt(2.0) * seed_std) if pooled_s[key][1] else thread_rms
            n_test = sizes.get(m, {}).get(k)
            floor = MIN_IMAGES * 100.0 / n_test if n_test else 0.0
            biggest = max((abs(x) for x in d.values()), default=0.0)
            q = quantile(pooled_t[key][1])
            tol = max(q * sigma, THREAD_MARGIN * biggest, floor)
            tol = math.ceil(round(tol * 100.0, 6)) / 100.0  # two decimals, rounded up
            out.setdefault(m, {})[k] = {
                "tolerance": tol, "checked": tol <= MAX_USEFUL,
                "spread": {"thread_deltas": {t: round(x, 4) for t, x in d.items()},
                           "thread_rms": round(thread_rms, 4),
                           "seed_std_own": round(math.sqrt(var), 4), "seed_dof": dof,
                           "seed_std": round(seed_std, 4), "sigma": round(sigma, 4), "quantile": round(q, 3),
                           "seeds": sorted({s.seed for s in ms[k]}), "n_test": n_test,
                           "reference_threads": ref_threads},
            }
    return out


def quantile(dof: int) -> float:
    """Student's t quantile for ALPHA two-sided with `dof` degrees of freedom (normal when many)."""
    from scipy.stats import norm, t
    return float(t.ppf(1.0 - ALPHA / 2.0, dof)) if dof >= 1 else float(norm.ppf(1.0 - ALPHA / 2.0))


def _trains(method: str) -> bool:
    """Whether a method trains (an unknown name counts as trained: the conservative pool)."""
    import methods
    try:
        return bool(methods.get(method).trains)
    except UserError:
        return True


def method_text() -> dict[str, Any]:
    """How the tolerances were derived, stored in the reference beside them."""
    return {
        "rule": "sigma = min(thread RMS, sqrt(2) * seed std), each shrunk towards the same quantity pooled over "
                "the methods of the metric alike in training (trained / untrained baselines; the pool weighted as "
                "PRIOR_DOF observations); tolerance = max(q*sigma, THREAD_MARGIN*max|thread delta|, MIN_IMAGES "
                "test images), rounded up to 0.01, q = Student's t quantile (two-sided ALPHA, degrees of freedom = "
                "the thread deltas in the pool); "
                "metrics whose tolerance exceeds MAX_USEFUL points are published but not checked",
        "ALPHA": ALPHA, "THREAD_MARGIN": THREAD_MARGIN, "MIN_IMAGES": MIN_IMAGES, "PRIOR_DOF": PRIOR_DOF,
        "MAX_USEFUL": MAX_USEFUL,
        "model": "a re-run on another machine is the reference's run perturbed in its rounding; thread counts "
                 "other than the reference's stand in for another CPU's kernels (E[delta^2] is the variance of "
                 "now - reference); seeds show how far a fully diverged trajectory goes and cap it",
    }
