"""Published LSI numbers: publish (`--write-reference`), check (re-run and compare), and
measure the tolerances (`--calibrate`), in the harness's reference format.

The reference file is bench/results/check.py's (`format: ssl-bench-reference`, validated and
compared by the same code), with `kind: "lsi"`: its "methods" are the rows and each row's
metrics are `top1_<fraction>` (e.g. `top1_10pct`), the mean over the seeds of the test
top-1. A check re-runs the reference's command (`seeds`, `epochs`) into a fresh directory, at
the reference's CPU thread count, generators included (no cache), and compares every metric
with its tolerance. Hole measures and generator costs are published beside the metrics
(`holes`, `generators`) but never checked.

Tolerance rule (`--calibrate DIR ...`: runs of the reference's command at other thread counts,
standing in for another CPU's float rounding; constants from bench/results/tolerance.py):

    d        = mean over the seeds at another thread count - reference value   (per metric, per DIR)
    seed SE  = sqrt(2 / n) * seed std: the spread of the difference of two n-seed means whose
               trajectories fully diverged (the seed std shrunk towards the pool of its label
               fraction, weighted as PRIOR_DOF observations)
    rho      = RMS of d / seed SE over every metric: how far a changed rounding moves a mean, in
               units of its own seed noise (one number for the suite: 18 deltas, not 1 per metric)
    sigma    = min(rho, 1) * seed SE
    tolerance = max(q * sigma, THREAD_MARGIN * max |d|, MIN_IMAGES test images), rounded up to 0.01

with q Student's t quantile for a two-sided ALPHA and the pooled deltas as degrees of freedom.
A tolerance above MAX_USEFUL points is published with `checked: false`.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import shlex
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.lsi.data import fraction_name
from bench.lsi.generators import generator_run
from bench.lsi.runner import LSIOptions, current_runs, read_summary, run_config, run_key, run_lsi_suite
from bench.lsi.classifier import row_config
from bench.lsi.suites import ROW_GENERATOR, LSISuite
from bench.results import check as ref_check
from bench.results import store, tolerance
from bench.threads import cpu_threads, threads_of

KIND = "lsi"


@dataclass
class Record:
    """One classifier run in the shape bench/results/check.py compares (method = the row)."""
    method: str
    seed: int
    status: str
    reason: str | None
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def metric_name(fraction: float) -> str:
    return f"top1_{fraction_name(fraction)}"


def records(runs: list[dict[str, Any]]) -> list[Record]:
    return [Record(r["row"], int(r["seed"]), r["status"], r.get("reason"),
                   {metric_name(r["fraction"]): float(r["metrics"]["top1"])} if r["status"] == "ok" else {})
            for r in runs]


def command_line(suite: LSISuite, seeds: int, epochs: int | None) -> str:
    parts = ["python", "-m", "bench", "run", "--suite", suite.name, "--seeds", str(seeds)]
    if epochs is not None:
        parts += ["--epochs", str(epochs)]
    return " ".join(shlex.quote(p) for p in parts)


# ----------------------------------------------------------------------------- publish

def derive_command(suite: LSISuite, runs: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """(seeds, epochs) of the ONE `bench run` command that made exactly these runs with this
    code; UserError when no single command did (mixed epochs or seeds, stale configs, failures)."""
    others = sorted({r["suite"] for r in runs} - {suite.name})
    if others:
        raise UserError(f"the results directory holds runs of LSI suite(s) {', '.join(others)}; publish a "
                        f"directory with only suite {suite.name}")
    bad = [r for r in runs if r["status"] != "ok"]
    if bad:
        listed = "; ".join(f"{r['run_id']} {r['status']}: {r.get('reason')}" for r in bad[:3])
        raise UserError(f"{len(bad)} run(s) did not finish ok ({listed}); a reference is made of complete runs only")
    epochs = {r["config"]["train"]["epochs"] for r in runs}
    if len(epochs) != 1:
        raise UserError(f"the runs mix classifier epochs {sorted(epochs)}; publish the results of one command")
    ep = epochs.pop()
    seeds = sorted({int(r["seed"]) for r in runs})
    n = len(seeds)
    gens = summary.get("generators", {})
    for kind in suite.generators:  # every generator must be the one this code trains for the suite
        g = gens.get(kind)
        cfg = _generator_config(Path(summary["_out"]), g) if g else None
        if cfg is None or json.dumps(cfg, sort_keys=True) != json.dumps(generator_run(suite, kind).to_json(),
                                                                       sort_keys=True):
            raise UserError(f"generator {kind} in the results is not the one suite {suite.name} trains with this "
                            "code; re-run the suite into a new --out first")
    expected = {}
    for f in suite.lsi.label_fractions:
        for row in suite.rows:
            gen = gens.get(ROW_GENERATOR[row] or "", {})
            rc = row_config(row, suite.lsi.ratio, suite.lsi.lam, suite.lsi.mixup_alpha, gen.get("key", ""))
            for seed in range(n):
                expected[run_key(run_config(suite, rc, f, seed, ep))] = (row, f, seed)
    have = {r["key"] for r in runs}
    missing = [expected[k] for k in expected if k not in have]
    extra = sorted(r["run_id"] for r in runs if r["key"] not in expected)
    if missing or extra or seeds != list(range(n)):
        what = (f"missing {len(missing)} run(s), e.g. {missing[0]}" if missing
                else f"{len(extra)} run(s) another command made, e.g. {extra[0]}" if extra else f"seeds {seeds}")
        raise UserError(f"the runs are not those of one `bench run --suite {suite.name}` command with this code "
                        f"({what}); re-run the suite into a new --out first")
    return {"seeds": n, "epochs": None if ep == suite.train.epochs else ep}


def _generator_config(out: Path, g: dict[str, Any]) -> dict[str, Any] | None:
    path = out / "generators" / str(g.get("directory")) / "generator.json"
    try:
        return json.loads(path.read_text())["config"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None


def build_reference(suite: LSISuite, results_dir: Path) -> dict[str, Any]:
    runs = current_runs(results_dir)
    summary = {**read_summary(results_dir), "_out": str(results_dir)}
    cmd = derive_command(suite, runs, summary)
    values, _ = ref_check.means(records(runs))
    methods: dict[str, dict[str, dict[str, Any]]] = {}
    for row in suite.rows:
        methods[row] = {}
        for f in suite.lsi.label_fractions:
            k = metric_name(f)
            xs = [float(r["metrics"]["top1"]) for r in runs if r["row"] == row and r["fraction"] == f]
            mean = values[row][k]
            std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
            one = next(r for r in runs if r["row"] == row and r["fraction"] == f)
            methods[row][k] = {"value": mean, "tolerance": float(suite.tolerance), "std": std, "n": len(xs),
                               "n_test": one.get("n_test"), "n_labels": one["labels"]["n_labels"]}
    devices = sorted({str(r.get("timings", {}).get("device")) for r in runs})
    threads = sorted({t for t in (threads_of(d) for d in devices) if t is not None})
    commits = sorted({str(r.get("git_commit")) for r in runs})
    gens = {k: {x: g.get(x) for x in ("key", "train_s", "steps", "epochs", "train_images", "device", "method",
                                       "method_config", "final_losses")}
            for k, g in summary.get("generators", {}).items()}
    return {
        "format": ref_check.FORMAT, "format_version": ref_check.FORMAT_VERSION, "kind": KIND,
        "suite": suite.name, "command": command_line(suite, cmd["seeds"], cmd["epochs"]),
        "check_command": f"python -m bench check --suite {suite.name}",
        "methods_run": list(suite.rows), "seeds": cmd["seeds"], "epochs": cmd["epochs"], "sets": {},
        "git_commit": commits[0] if len(commits) == 1 else commits,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": runs[0].get("machine"), "device": devices[0] if len(devices) == 1 else devices,
        "threads": threads[0] if len(threads) == 1 else None,
        "python": runs[0].get("python"), "packages": runs[0].get("packages"),
        "default_tolerance": float(suite.tolerance), "tolerance_unit": "accuracy points (top-1 %)",
        "tolerance_source": "the suite's default, not measured (measure them with --calibrate)",
        "tolerances": {metric_name(f): float(suite.tolerance) for f in suite.lsi.label_fractions},
        "methods": methods, "generators": gens, "holes": summary.get("holes", {}),
    }


def publish(suite: LSISuite, results_dir: Path, path: Path, force: bool) -> int:
    from bench.lsi import report
    if path.exists() and not force:
        raise UserError(f"reference '{path}' already exists; pass --force to replace it "
                        "(or --reference DIR to write elsewhere)")
    ref = build_reference(suite, Path(results_dir))
    if path != Path("reports") / suite.name / ref_check.REFERENCE_FILE:
        ref["check_command"] += f" --reference {shlex.quote(str(path.parent))}"
    store.write_json(path, ref)
    html = report.write_report(Path(results_dir), path.parent / "leaderboard.html")
    n = sum(len(v) for v in ref["methods"].values())
    print(f"published {suite.name}: {path}")
    print(f"  {len(ref['methods'])} rows x {len(suite.lsi.label_fractions)} label fractions x {ref['seeds']} seeds, "
          f"{n} metrics, tolerance {ref['default_tolerance']:g} points (the suite's default: measure them with "
          "--calibrate)")
    print(f"  reproduce: {ref['command']}")
    print(f"  check:     {ref['check_command']}")
    print(f"  leaderboard: {html} (+ leaderboard.md, leaderboard.csv)")
    return 0


# ----------------------------------------------------------------------------- check

def load_reference(path: Path, suite: LSISuite) -> dict[str, Any]:
    ref = ref_check.load_reference(path, suite.name)
    where = f"reference file '{path}'"
    if ref.get("kind") != KIND:
        raise UserError(f"{where} is not an LSI reference (kind {ref.get('kind')!r}); publish one with "
                        f"`python -m bench check --suite {suite.name} --write-reference RESULTS_DIR`")
    unknown = [m for m in ref["methods"] if m not in suite.rows]
    if unknown:
        raise UserError(f"{where}: rows {', '.join(unknown)} are not rows of suite {suite.name}")
    ep = ref.get("epochs")
    if ep is not None and (not isinstance(ep, int) or isinstance(ep, bool) or ep < 1):
        raise UserError(f"{where}: 'epochs' must be a positive integer or null, got {ep!r}")
    return ref


def check(suite: LSISuite, path: Path, args: argparse.Namespace) -> int:
    from bench.cli.check import threads_line
    from bench.lsi import report
    reference = load_reference(path, suite)
    out = _fresh_out(args.out, suite.name)
    command = command_line(suite, reference["seeds"], reference.get("epochs"))
    _say(f"bench check {suite.name}: reference {path} "
         f"(published {reference.get('date', '?')}, git {reference.get('git_commit', '?')})")
    _say(f"re-running: {command} --out {out}")
    device = args.device or ref_check.reference_device(reference)
    _say(f"device: {device}" + ("" if args.device else f" (the reference ran on {reference.get('device', '?')})"))
    ref_threads = ref_check.reference_threads(reference)
    threads = args.threads or ref_threads
    _say(threads_line(threads, args.threads is not None, ref_threads))
    opts = LSIOptions(out=out, seeds=reference["seeds"], epochs=reference.get("epochs"), data_dir=args.data_dir,
                      device=device, download=not args.no_download)
    with cpu_threads(threads):
        runs = run_lsi_suite(suite, opts)
    report.write_report(out)
    rows = ref_check.compare(reference, records(runs), suite.tolerance)
    code, summary = ref_check.verdict(rows)
    store.write_json(out / "check.json", {"suite": suite.name, "reference": str(path),
                                          "status": "OK" if code == 0 else "DRIFT", "rows": [asdict(r) for r in rows]})
    print(f"bench check {suite.name}: reference {path}, re-run in {out}")
    print(ref_check.format_rows(rows))
    print(summary)
    if code:
        print(f"leaderboard of the re-run: {out / 'leaderboard.html'}")
    return code


def _fresh_out(given: Path | None, suite_name: str) -> Path:
    if given is None:
        return Path(tempfile.mkdtemp(prefix=f"bench-check-{suite_name}-"))
    out = Path(given)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out '{out}' is a file; bench check needs an empty or new directory")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out '{out}' is not empty; bench check re-runs from scratch (generators included), so "
                        "choose an empty or new directory (or leave --out out for a fresh temporary one)")
    return out


# ----------------------------------------------------------------------------- calibrate

def calibrate(suite: LSISuite, path: Path, dirs: list[Path]) -> int:
    """Measure every metric's tolerance from runs of the reference's command made at other
    thread counts (the module docstring gives the rule) and write it into the reference."""
    reference = load_reference(path, suite)
    ref_threads = ref_check.reference_threads(reference)
    if ref_threads is None:
        raise UserError(f"reference '{path}' records no CPU thread count; re-publish it from CPU runs")
    n = reference["seeds"]
    deltas: dict[tuple[str, str], list[float]] = {}
    used = []
    for d in dirs:
        if not Path(d).is_dir():
            raise UserError(f"--calibrate: '{d}' is not a directory")
        runs = current_runs(Path(d))
        summary = {**read_summary(Path(d)), "_out": str(d)}
        cmd = derive_command(suite, runs, summary)
        if cmd["seeds"] != n or cmd["epochs"] != reference.get("epochs"):
            raise UserError(f"--calibrate: '{d}' holds `{command_line(suite, cmd['seeds'], cmd['epochs'])}`, not the "
                            f"reference's `{reference['command']}`")
        threads = sorted({t for r in runs if (t := threads_of(r.get("timings", {}).get("device"))) is not None})
        if len(threads) != 1:
            raise UserError(f"--calibrate: the runs in '{d}' record no single CPU thread count ({threads})")
        if threads[0] == ref_threads:
            raise UserError(f"--calibrate: '{d}' was made at the reference's own thread count ({ref_threads}): on this "
                            "machine it repeats the reference bit-exactly; use another --threads")
        values, _ = ref_check.means(records(runs))
        for m, metrics in reference["methods"].items():
            for k, e in metrics.items():
                deltas.setdefault((m, k), []).append(values[m][k] - float(e["value"]))
        used.append({"dir": str(d), "threads": threads[0], "seeds": n})
    derived = derive(reference, deltas)
    for (m, k), d in derived.items():
        reference["methods"][m][k].update(d)
    reference["calibration"] = {
        "rule": "seed SE = sqrt(2/n) * seed std (shrunk towards its label fraction's pool, weighted as PRIOR_DOF "
                "observations); rho = RMS over every metric of thread delta / seed SE; sigma = min(rho, 1) * seed SE; "
                "tolerance = max(q*sigma, THREAD_MARGIN*max|thread delta|, MIN_IMAGES test images), rounded up to "
                "0.01; q = Student's t quantile (two-sided ALPHA, degrees of freedom = the pooled deltas); "
                "tolerances above MAX_USEFUL points are published but not checked (bench/lsi/check.py)",
        "ALPHA": tolerance.ALPHA, "THREAD_MARGIN": tolerance.THREAD_MARGIN, "MIN_IMAGES": tolerance.MIN_IMAGES,
        "PRIOR_DOF": tolerance.PRIOR_DOF, "MAX_USEFUL": tolerance.MAX_USEFUL, "runs": used,
        "reference_threads": ref_threads,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    ref_check.write_calibrated(path, reference, format_calibration(reference))
    return 0


def derive(reference: dict[str, Any], deltas: dict[tuple[str, str], list[float]]) -> dict[tuple[str, str], dict]:
    """Per (row, metric): the measured spread and the tolerance derived from it (module docstring)."""
    n = reference["seeds"]
    w = tolerance.PRIOR_DOF
    # each metric's seed SE: the seed std shrunk towards the pool of its label fraction, times sqrt(2/n)
    by_fraction: dict[str, list[float]] = {}
    for (m, k) in deltas:
        by_fraction.setdefault(k, []).append(float(reference["methods"][m][k].get("std", 0.0)))
    pool_var = {k: sum(s * s for s in v) / len(v) for k, v in by_fraction.items()}
    dof = max(n - 1, 0)
    se = {}
    for (m, k) in deltas:
        own = float(reference["methods"][m][k].get("std", 0.0))
        se[(m, k)] = math.sqrt(2.0 / n) * math.sqrt((own * own * dof + pool_var[k] * w) / (dof + w))
    # thread deltas in units of their metric's seed SE, pooled over every metric: rho
    z = [x / se[key] for key, d in deltas.items() for x in d if se[key] > 0]
    rho = math.sqrt(sum(v * v for v in z) / len(z)) if z else 1.0
    q = tolerance.quantile(len(z))
    out = {}
    for (m, k), d in deltas.items():
        e = reference["methods"][m][k]
        sigma = min(rho, 1.0) * se[(m, k)]
        n_test = e.get("n_test")
        floor = tolerance.MIN_IMAGES * 100.0 / n_test if n_test else 0.0
        biggest = max(abs(x) for x in d)
        tol = max(q * sigma, tolerance.THREAD_MARGIN * biggest, floor)
        tol = math.ceil(round(tol * 100.0, 6)) / 100.0
        out[(m, k)] = {"tolerance": tol, "checked": tol <= tolerance.MAX_USEFUL,
                       "spread": {"thread_deltas": [round(x, 4) for x in d], "seed_std_own": round(float(e.get("std", 0.0)), 4),
                                  "seed_se": round(se[(m, k)], 4), "rho": round(rho, 4), "sigma": round(sigma, 4),
                                  "quantile": round(q, 3), "deltas_pooled": len(z), "n_test": n_test}}
    return out


def format_calibration(reference: dict[str, Any]) -> str:
    head = ("row", "metric", "thread deltas", "seed std", "seed SE", "rho", "sigma", "tolerance", "checked")
    table = [head]
    for m, metrics in reference["methods"].items():
        for k, e in metrics.items():
            sp = e.get("spread") or {}
            table.append((m, k, " ".join(f"{x:+.2f}" for x in sp.get("thread_deltas", [])) or "–",
                          f"{sp.get('seed_std_own', 0):.2f}", f"{sp.get('seed_se', 0):.2f}", f"{sp.get('rho', 0):.2f}",
                          f"{sp.get('sigma', 0):.2f}", f"{e.get('tolerance', 0):.2f}",
                          "yes" if e.get("checked", True) else "no"))
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(t, widths)) for t in table)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
