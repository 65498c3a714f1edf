"""Drift tolerances measured, not asserted: `python -m bench check --suite S --calibrate DIR ...`.

What differs between two machines with the same package versions is float summation order
(another CPU's BLAS kernels, another thread count). Training is chaotic: one changed rounding
grows into a different trajectory, so a re-run elsewhere lands like a draw from a distribution
around the reference, never on it. Its spread is measured from runs of the reference's own
command (`runs/` of one or more results directories):

- thread deltas: seed 0 at thread counts other than the reference's (1 and 4 stand in for
  another CPU's kernels), each minus the reference value;
- the seed spread: the sample std over seeds at one thread count (pooled over thread counts).
  A new seed re-draws the initialisation, the data order and the augmentations, so it bounds
  how far a diverged trajectory goes.

Per (method, metric) the std `sigma` is the run's own seed std, shrunk towards the std pooled
over all methods of the same metric (same evaluation set, so the same granularity: a metric on
the 360-image digits test split moves in steps of 0.28 points, one on 10k images in 0.01), with
the pooled estimate weighted as PRIOR_DOF degrees of freedom. A check run on another machine is
modelled as a second draw around the same seed, so |now - reference| has std sqrt(2)*sigma, and

    tolerance = max(Z * sqrt(2) * sigma,  THREAD_MARGIN * max |thread delta|,  MIN_IMAGES images)

with Z = 3.5: two-sided 4.7e-4 per metric under a normal model, about 4% that one of 80 metrics
fails by chance alone. A metric whose tolerance would exceed MAX_USEFUL points is published but
not checked (`checked: false`): a check that wide would not catch a broken recipe, and failing on
noise would teach people to ignore the check. Both are recorded per metric in the reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.errors import UserError
from bench.threads import threads_of

Z = 3.5              # normal quantile of the per-metric false-alarm rate (two-sided 4.7e-4)
THREAD_MARGIN = 1.25 # an observed thread-count delta must hold with room to spare
MIN_IMAGES = 2       # never tighter than two test images' worth of accuracy
PRIOR_DOF = 2        # weight of the metric-wide pooled std against a run's own seed std
MAX_USEFUL = 6.0     # accuracy points; a wider tolerance is recorded but not checked


@dataclass(frozen=True)
class Sample:
    """One calibration run's value of one metric."""
    threads: int | None
    seed: int
    value: float


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def collect(reference: dict[str, Any], results: list[dict[str, Any]]) -> tuple[dict[str, dict[str, list[Sample]]],
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
        cfg = r.get("config") or {}
        m, seed = cfg.get("method"), cfg.get("seed")
        threads = threads_of((r.get("timings") or {}).get("device"))
        if threads is None:
            raise UserError(f"run {r.get('run_id')}: its device {(r.get('timings') or {}).get('device')!r} "
                            "records no CPU thread count; calibrate with CPU runs")
        if threads == ref_threads and seed == 0:
            continue  # the reference itself (on this machine a bit-exact repeat of it)
        for k, v in (r.get("metrics") or {}).items():
            if m in samples and k in samples[m] and _is_num(v):
                samples[m][k].append(Sample(threads, int(seed), float(v)))
        for k, p in (r.get("protocols") or {}).items():
            n = p.get("n_test") if isinstance(p, dict) else None
            if isinstance(n, int) and n > 0:
                sizes.setdefault(m, {})[k] = n
    return samples, sizes


def reference_threads(reference: dict[str, Any]) -> int | None:
    """The thread count a reference was made with: its `threads`, else parsed from `device`."""
    t = reference.get("threads")
    if isinstance(t, int) and not isinstance(t, bool) and t > 0:
        return t
    return threads_of(reference.get("device"))


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


def derive(reference: dict[str, Any], results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per (method, metric): the measured spread and the tolerance derived from it."""
    ref_threads = reference_threads(reference)
    samples, sizes = collect(reference, results)
    own = {m: {k: seed_spread(xs) for k, xs in ms.items()} for m, ms in samples.items()}
    pooled: dict[str, tuple[float, int]] = {}
    for k in {k for ms in own.values() for k in ms}:
        parts = [own[m][k] for m in own if k in own[m] and own[m][k][1] > 0]
        dof = sum(d for _, d in parts)
        pooled[k] = (sum(v * d for v, d in parts) / dof if dof else 0.0, dof)
    if not any(d for _, d in pooled.values()):
        raise UserError("no metric has two seeds at one thread count: calibration needs runs of seeds 0..N-1 "
                        "(e.g. `bench run --seeds 3`) beside the thread-count runs")
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for m, ms in samples.items():
        for k, xs in ms.items():
            var, dof = own[m][k]
            pvar, pdof = pooled[k]
            w = min(PRIOR_DOF, pdof)
            sigma = math.sqrt((var * dof + pvar * w) / (dof + w)) if dof + w else 0.0
            ref = xs[0].value
            deltas = {str(s.threads): round(s.value - ref, 4) for s in xs[1:] if s.seed == 0}
            n_test = sizes.get(m, {}).get(k)
            floor = MIN_IMAGES * 100.0 / n_test if n_test else 0.0
            biggest = max((abs(d) for d in deltas.values()), default=0.0)
            tol = max(Z * math.sqrt(2.0) * sigma, THREAD_MARGIN * biggest, floor)
            tol = math.ceil(tol * 100.0) / 100.0  # two decimals, rounded up
            seeds = sorted({s.seed for s in xs})
            out.setdefault(m, {})[k] = {
                "tolerance": tol, "checked": tol <= MAX_USEFUL,
                "spread": {"thread_deltas": deltas, "seed_std": round(math.sqrt(var), 4), "seed_dof": dof,
                           "metric_pooled_std": round(math.sqrt(pvar), 4), "metric_pooled_dof": pdof,
                           "sigma": round(sigma, 4), "seeds": seeds, "n_test": n_test,
                           "reference_threads": ref_threads},
            }
    return out


def method_text() -> dict[str, Any]:
    """How the tolerances were derived, stored in the reference beside them."""
    return {
        "rule": "tolerance = max(Z*sqrt(2)*sigma, THREAD_MARGIN*max|thread delta|, MIN_IMAGES test images), "
                "rounded up to 0.01; sigma = the seed std shrunk towards the std pooled over all methods of the "
                "same metric (pooled weighted as PRIOR_DOF degrees of freedom); metrics whose tolerance exceeds "
                "MAX_USEFUL points are published but not checked",
        "Z": Z, "THREAD_MARGIN": THREAD_MARGIN, "MIN_IMAGES": MIN_IMAGES, "PRIOR_DOF": PRIOR_DOF,
        "MAX_USEFUL": MAX_USEFUL,
        "model": "a re-run on another machine diverges from the reference like a second draw around the same "
                 "seed: |now - reference| has std sqrt(2)*sigma; thread counts 1, 2 and 4 stand in for another "
                 "CPU's kernels, seeds show how far a diverged trajectory goes",
    }
