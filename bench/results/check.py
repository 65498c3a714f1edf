"""Published references and the drift check's logic (the command is bench/cli/check.py).

- read and validate a reference (`load_reference`), compare a re-run with it (`compare`,
  `verdict`): a metric holds when |now - value| <= its tolerance; a metric marked
  `checked: false` (measured spread too wide) is shown but never fails;
- publish (`publish`): derive the one `bench run` command that reproduces every stored config
  (refusing results no single command made), then write `results.json`, `leaderboard.html`
  and `leaderboard.md`; an existing reference is only replaced with `--force`;
- calibrate (`calibrate`): measure each metric's tolerance (bench/results/tolerance.py) from
  runs of the reference's command at other thread counts and seeds.

Reference file (JSON):

    {"format": "ssl-bench-reference", "format_version": 1, "suite": "fmnist-ci",
     "command": "python -m bench run --suite fmnist-ci --seeds 2 --set train.epochs=1",
     "check_command": "python -m bench check --suite fmnist-ci",
     "methods_run": ["simclr", "pixels"], "seeds": 2, "aug_mode": "shared",
     "sets": {"train": {"epochs": "1"}},
     "git_commit": "...", "date": "2025-01-01T00:00:00+00:00", "machine": {...}, "device": "cpu (2 threads)",
     "packages": {...}, "default_tolerance": 1.0, "tolerance_unit": "accuracy points (top-1 %)",
     "tolerances": {"knn_top1": 1.0, ...},                     # per-metric defaults
     "methods": {"simclr": {"knn_top1": {"value": 80.1, "tolerance": 1.0, "std": 0.2, "n": 2}, ...}, ...}}

The tolerance of a metric is the entry's own (measured by `--calibrate`), else the per-metric
default, else `default_tolerance` (the suite's `tolerance`).
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import RunSpec
from bench.errors import UserError
from bench.results.store import RunRecord
from bench.suites import resolve
from bench.threads import threads_of

REFERENCE_FILE = "results.json"
FORMAT = "ssl-bench-reference"
FORMAT_VERSION = 1
SCOPES = (("train", None), ("aug", None), ("eval", None), ("method_config", ""), ("optim", ".optim"))


def reference_path(given: Path | None, suite_name: str) -> Path:
    """The reference file: --reference as a directory or a .json file, else reports/<suite>."""
    p = Path(given) if given is not None else Path("reports") / suite_name
    if p.suffix == ".json" and not p.is_dir():
        return p
    return p / REFERENCE_FILE


# ----------------------------------------------------------------------------- reading a reference

def is_number(v: Any) -> bool:
    """A finite int or float (not a bool): what a stored metric or tolerance must be."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_reference(path: Path, suite_name: str) -> dict[str, Any]:
    """Read and validate a reference file; every problem is a one-line UserError."""
    if not path.is_file():
        raise UserError(f"reference file '{path}' not found; publish one with "
                        f"`python -m bench check --suite {suite_name} --write-reference RESULTS_DIR` "
                        "or point --reference at it")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"reference file '{path}' is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (UnicodeDecodeError, OSError) as e:
        raise UserError(f"reference file '{path}' cannot be read ({e})") from None
    validate_reference(data, path, suite_name)
    return data


def validate_reference(data: Any, path: Path | str, suite_name: str) -> None:
    where = f"reference file '{path}'"
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object at the top, got {type(data).__name__}")
    for key in ("suite", "seeds", "methods"):
        if key not in data:
            raise UserError(f"{where}: missing key {key!r} (expected suite, seeds, methods, sets)")
    if not isinstance(data["suite"], str):
        raise UserError(f"{where}: 'suite' must be a string, got {type(data['suite']).__name__}")
    if data["suite"] != suite_name:
        raise UserError(f"{where} is for suite {data['suite']!r}, not {suite_name!r}; use --reference reports/{suite_name}")
    if not isinstance(data["seeds"], int) or isinstance(data["seeds"], bool) or data["seeds"] < 1:
        raise UserError(f"{where}: 'seeds' must be a positive integer, got {data['seeds']!r}")
    sets = data.get("sets", {})
    if not isinstance(sets, dict) or not all(isinstance(s, str) and isinstance(kv, dict) and
                                             all(isinstance(k, str) and isinstance(v, str) for k, v in kv.items())
                                             for s, kv in sets.items()):
        raise UserError(f"{where}: 'sets' must map a scope to {{key: value-as-text}}, e.g. {{\"train\": {{\"epochs\": \"1\"}}}}")
    if data.get("aug_mode", "shared") not in ("shared", "native"):
        raise UserError(f"{where}: 'aug_mode' must be 'shared' or 'native', got {data.get('aug_mode')!r}")
    for key in ("default_tolerance",):
        if key in data and (not is_number(data[key]) or data[key] < 0):
            raise UserError(f"{where}: {key!r} must be a number >= 0, got {data[key]!r}")
    tols = data.get("tolerances", {})
    if not isinstance(tols, dict) or not all(is_number(v) and v >= 0 for v in tols.values()):
        raise UserError(f"{where}: 'tolerances' must map a metric to a number >= 0")
    methods = data["methods"]
    if not isinstance(methods, dict) or not methods:
        raise UserError(f"{where}: 'methods' must be a non-empty object {{method: {{metric: {{value, tolerance}}}}}}")
    for m, metrics in methods.items():
        if not isinstance(metrics, dict) or not metrics:
            raise UserError(f"{where}: methods.{m} must be a non-empty object {{metric: {{value, tolerance}}}}")
        for k, entry in metrics.items():
            if not isinstance(entry, dict) or "value" not in entry:
                raise UserError(f"{where}: methods.{m}.{k} must be an object with a numeric 'value'")
            if not is_number(entry["value"]):
                raise UserError(f"{where}: methods.{m}.{k}.value must be a finite number, got {entry['value']!r}")
            if "tolerance" in entry and (not is_number(entry["tolerance"]) or entry["tolerance"] < 0):
                raise UserError(f"{where}: methods.{m}.{k}.tolerance must be a number >= 0, got {entry['tolerance']!r}")
            if "checked" in entry and not isinstance(entry["checked"], bool):
                raise UserError(f"{where}: methods.{m}.{k}.checked must be true or false, got {entry['checked']!r}")
    run = data.get("methods_run", list(methods))
    if not isinstance(run, list) or not all(isinstance(m, str) for m in run):
        raise UserError(f"{where}: 'methods_run' must be a list of method names")
    absent = [m for m in methods if m not in run]
    if absent:
        raise UserError(f"{where}: methods {', '.join(absent)} have published numbers but are not in 'methods_run'")


def tolerance_of(reference: dict[str, Any], method: str, metric: str, fallback: float) -> float:
    entry = reference["methods"][method][metric]
    if "tolerance" in entry:
        return float(entry["tolerance"])
    if metric in reference.get("tolerances", {}):
        return float(reference["tolerances"][metric])
    return float(reference.get("default_tolerance", fallback))


# ----------------------------------------------------------------------------- comparing

@dataclass
class Row:
    method: str
    metric: str
    reference: float
    now: float | None
    delta: float | None
    tolerance: float
    status: str        # OK | DRIFT | MISSING | FAILED | UNCHECKED (published, too noisy to check)
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("OK", "UNCHECKED")


def means(results: list[RunRecord]) -> tuple[dict[str, dict[str, float]], dict[str, list[str]]]:
    """Mean over the ok seeds of every metric, per method; and each method's failure reasons."""
    values: dict[str, dict[str, list[float]]] = {}
    failures: dict[str, list[str]] = {}
    for r in results:
        if not r.ok:
            failures.setdefault(r.method, []).append(f"seed {r.seed} {r.status}: {r.reason}")
            continue
        method = r.method
        for k, v in r.metrics.items():
            if is_number(v):
                values.setdefault(method, {}).setdefault(k, []).append(float(v))
    return {m: {k: sum(v) / len(v) for k, v in ms.items()} for m, ms in values.items()}, failures


def compare(reference: dict[str, Any], results: list[RunRecord], fallback_tolerance: float = 1.0) -> list[Row]:
    """One Row per (method, metric) of the reference, against the mean of `results`."""
    now, failures = means(results)
    rows = []
    for method, metrics in reference["methods"].items():
        for metric, entry in metrics.items():
            ref = float(entry["value"])
            tol = tolerance_of(reference, method, metric, fallback_tolerance)
            if method in failures:
                rows.append(Row(method, metric, ref, None, None, tol, "FAILED", "; ".join(failures[method])))
                continue
            value = now.get(method, {}).get(metric)
            if value is None:
                why = "method not in the new run" if method not in now else "metric not in the new run"
                rows.append(Row(method, metric, ref, None, None, tol, "MISSING", why))
                continue
            delta = value - ref
            if entry.get("checked") is False:  # its measured spread is too wide for a useful check
                rows.append(Row(method, metric, ref, value, delta, tol, "UNCHECKED",
                                "measured spread too wide to check; see the reference's calibration"))
                continue
            # a hair of slack so that a delta equal to the tolerance holds despite float rounding
            status = "OK" if abs(delta) <= tol + 1e-9 else "DRIFT"
            rows.append(Row(method, metric, ref, value, delta, tol, status))
    return rows


def format_rows(rows: list[Row]) -> str:
    head = ("method", "metric", "reference", "now", "delta", "tolerance", "result")
    table = [head]
    for r in rows:
        table.append((r.method, r.metric, f"{r.reference:.2f}", "–" if r.now is None else f"{r.now:.2f}",
                      "–" if r.delta is None else f"{r.delta:+.2f}", f"{r.tolerance:.2f}",
                      r.status + (f" ({r.note})" if r.note else "")))
    widths = [max(len(t[i]) for t in table) for i in range(len(head) - 1)]
    lines = []
    for t in table:
        cells = [t[0].ljust(widths[0]), t[1].ljust(widths[1])] + [c.rjust(w) for c, w in zip(t[2:6], widths[2:6])]
        lines.append("  ".join(cells + [t[6]]))
    return "\n".join(lines)


def verdict(rows: list[Row]) -> tuple[int, str]:
    bad = [r for r in rows if not r.ok]
    unchecked = sum(r.status == "UNCHECKED" for r in rows)
    if not bad:
        if unchecked:
            return 0, (f"OK: all {len(rows) - unchecked} checked metrics within tolerance "
                       f"({unchecked} more published but not checked: their measured spread is too wide)")
        return 0, f"OK: all {len(rows)} published metrics within tolerance"
    items = []
    for r in bad[:8]:
        if r.now is None:
            items.append(f"{r.method} {r.metric} {r.status.lower()}")
        else:
            items.append(f"{r.method} {r.metric} (reference {r.reference:.2f}, now {r.now:.2f}, "
                         f"delta {r.delta:+.2f}, tolerance {r.tolerance:.2f})")
    more = f", and {len(bad) - 8} more" if len(bad) > 8 else ""
    return 1, f"DRIFT: {len(bad)} of {len(rows)} published metrics do not hold: " + "; ".join(items) + more


# ----------------------------------------------------------------------------- check

def reference_threads(reference: dict[str, Any]) -> int | None:
    """The thread count a reference was made with: its `threads`, else parsed from `device`."""
    t = reference.get("threads")
    if isinstance(t, int) and not isinstance(t, bool) and t > 0:
        return t
    return threads_of(reference.get("device"))


def reference_device(reference: dict[str, Any]) -> str:
    """cpu or cuda, as recorded in the reference (`timings.device` of its runs); else auto."""
    dev = reference.get("device")
    devs = dev if isinstance(dev, list) else [dev]
    kinds = {"cpu" if str(d).startswith("cpu") else "cuda" for d in devs if isinstance(d, str) and d and d != "None"}
    return kinds.pop() if len(kinds) == 1 else "auto"


def to_text(v: Any) -> str:
    """A resolved config value as the text `--set` parses back to the same value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, (list, tuple)):
        return ",".join(to_text(x) for x in v)
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, default=str)


def derive_command(suite, results: list[RunRecord]) -> dict[str, Any]:
    """The `bench run` arguments (methods, seeds, aug mode, --set overrides) that reproduce
    exactly the configs stored in `results`; UserError when no single command does."""
    aug_modes = {r.config.aug_mode for r in results}
    if len(aug_modes) != 1:
        raise UserError(f"the runs mix aug modes {sorted(map(str, aug_modes))}; publish one command's results")
    aug_mode = aug_modes.pop()
    seeds: dict[str, set[int]] = {}
    sets: dict[str, dict[str, str]] = {}
    origin: dict[tuple[str, str], str] = {}
    for r in results:
        cfg = r.config.to_json()
        method, seed = r.method, r.seed
        seeds.setdefault(method, set()).add(seed)
        base = json.loads(_canon(resolve(suite, RunSpec(suite.name, method, seed, aug_mode), {}).to_json()))
        for key, suffix in SCOPES:
            scope = key if suffix is None else f"{method}{suffix}"
            stored, default = cfg[key], base[key]
            for field, value in stored.items():
                if field in default and _canon(value) == _canon(default[field]):
                    continue
                text = to_text(value)
                prev = sets.setdefault(scope, {}).get(field)
                if prev is not None and prev != text:
                    raise UserError(f"the runs used different {scope}.{field} ({prev} in {origin[(scope, field)]}, "
                                    f"{text} in {r.run_id}); publish the results of one command")
                sets[scope][field] = text
                origin[(scope, field)] = r.run_id
    # shared scopes must be the same for every run, also where a run kept the default
    for scope in ("train", "aug", "eval"):
        for field, text in sets.get(scope, {}).items():
            for r in results:
                if to_text(getattr(getattr(r.config, scope), field, None)) != text:
                    raise UserError(f"the runs used different {scope}.{field} (e.g. {r.run_id}); "
                                    "publish the results of one command")
    counts = {m: sorted(s) for m, s in seeds.items()}
    n = max(len(s) for s in counts.values())
    for m, s in counts.items():
        if s != list(range(n)):
            raise UserError(f"method {m} has seeds {s}, expected 0..{n - 1} like the others; "
                            "publish the results of one `bench run --seeds N` command")
    sets = {s: kv for s, kv in sets.items() if kv}
    # the derived command must reproduce every stored config exactly
    for r in results:
        cfg = r.config.to_json()
        again = resolve(suite, RunSpec(suite.name, r.method, r.seed, aug_mode), sets).to_json()
        if _canon(again) != _canon(cfg):
            a, b = json.loads(_canon(again)), cfg
            diff = sorted(k for k in set(a) | set(b) if _canon(a.get(k)) != _canon(b.get(k)))
            raise UserError(f"run {r.run_id} cannot be reproduced by `bench run` with this code (its "
                            f"{', '.join(diff)} differ from what suite {suite.name} resolves to now); re-run it first")
    order = list(suite.methods) + list(suite.baselines)
    names = sorted(counts, key=lambda m: (order.index(m) if m in order else len(order), m))
    return {"methods_run": names, "seeds": n, "aug_mode": aug_mode, "sets": sets}


def command_line(suite_name: str, names: tuple[str, ...] | list[str], default: tuple[str, ...], seeds: int,
                 aug_mode: str, sets: dict[str, dict[str, str]]) -> str:
    parts = ["python", "-m", "bench", "run", "--suite", suite_name]
    if tuple(names) != tuple(default):
        parts += ["--methods", ",".join(names)]
    parts += ["--seeds", str(seeds)]
    if aug_mode != "shared":
        parts += ["--aug", aug_mode]
    for scope, kv in sets.items():
        for k, v in kv.items():
            parts += ["--set", f"{scope}.{k}={v}"]
    return " ".join(shlex.quote(p) for p in parts)


def build_reference(suite, results: list[RunRecord]) -> dict[str, Any]:
    """The reference record of `results` (all ok, all of `suite`)."""
    from bench.results import store
    others = sorted({r.config.suite for r in results} - {suite.name})
    if others:
        raise UserError(f"the results directory also holds runs of suite(s) {', '.join(others)}; "
                        f"publish a directory with only suite {suite.name}")
    bad = [r for r in results if not r.ok]
    if bad:
        listed = "; ".join(f"{r.run_id} {r.status}: {r.reason}" for r in bad[:3])
        raise UserError(f"{len(bad)} run(s) did not finish ok ({listed}); a reference is made of complete runs only: "
                        "re-run or remove them")
    cmd = derive_command(suite, results)
    default = tuple(suite.methods) + tuple(suite.baselines)
    values, _ = means(results)
    per: dict[str, dict[str, dict[str, Any]]] = {}
    metric_names: list[str] = []
    for m in cmd["methods_run"]:
        runs = [r for r in results if r.method == m]
        per[m] = {}
        for k, v in values.get(m, {}).items():
            xs = [float(r.metrics[k]) for r in runs if is_number(r.metrics.get(k))]
            std = (sum((x - v) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
            per[m][k] = {"value": v, "tolerance": float(suite.tolerance), "std": std, "n": len(xs)}
            if k not in metric_names:
                metric_names.append(k)
    commits = sorted({str(r.git_commit) for r in results})
    devices = sorted({str(r.timings.get("device")) for r in results})
    threads = sorted({t for t in (threads_of(d) for d in devices) if t is not None})
    command = command_line(suite.name, cmd["methods_run"], default, cmd["seeds"], cmd["aug_mode"], cmd["sets"])
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "schema_version": store.SCHEMA_VERSION,
        "suite": suite.name, "command": command, "check_command": f"python -m bench check --suite {suite.name}",
        "methods_run": cmd["methods_run"], "seeds": cmd["seeds"], "aug_mode": cmd["aug_mode"], "sets": cmd["sets"],
        "git_commit": commits[0] if len(commits) == 1 else commits,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": results[0].machine, "device": devices[0] if len(devices) == 1 else devices,
        "threads": threads[0] if len(threads) == 1 else None,
        "python": results[0].python, "packages": results[0].packages,
        "default_tolerance": float(suite.tolerance), "tolerance_unit": "accuracy points (top-1 %)",
        "tolerances": {k: float(suite.tolerance) for k in metric_names},
        "methods": per,
    }


def publish(suite, results_dir: Path, path: Path, force: bool) -> int:
    from bench import report
    from bench.results import store
    if path.exists() and not force:
        raise UserError(f"reference '{path}' already exists; pass --force to replace it "
                        "(or --reference DIR to write elsewhere)")
    results = store.load_results(results_dir)
    ref = build_reference(suite, results)
    if path != Path("reports") / suite.name / REFERENCE_FILE:
        ref["check_command"] += f" --reference {shlex.quote(str(path.parent))}"
    store.write_json(path, ref)
    html = report.write_report(results_dir, path.parent / "leaderboard.html")
    print(f"published {suite.name}: {path}")
    print(f"  {len(ref['methods'])} methods x {ref['seeds']} seed(s), "
          f"{sum(len(v) for v in ref['methods'].values())} metrics, tolerance {ref['default_tolerance']:g} points "
          f"(the suite's default, not measured: measure them with --calibrate)")
    print(f"  reproduce: {ref['command']}")
    print(f"  check:     {ref['check_command']}")
    print(f"  leaderboard: {html} (+ leaderboard.md)")
    return 0


# ----------------------------------------------------------------------------- calibrate

def calibrate(suite, path: Path, dirs: list[Path]) -> int:
    """Measure each metric's tolerance from runs of the reference's command at other thread
    counts and seeds (bench/results/tolerance.py) and write it into the reference."""
    from bench.results import store, tolerance
    reference = load_reference(path, suite.name)
    if reference["seeds"] != 1:
        raise UserError(f"reference '{path}' averages {reference['seeds']} seeds; calibration is implemented for "
                        "single-seed references (the reference is the seed-0 sample)")
    if reference_threads(reference) is None:
        raise UserError(f"reference '{path}' records no CPU thread count; re-publish it from CPU runs")
    sets = reference.get("sets", {})
    aug_mode = reference.get("aug_mode", "shared")
    results = []
    for d in dirs:
        if not Path(d).is_dir():
            raise UserError(f"--calibrate: '{d}' is not a directory")
        found = store.load_results(Path(d))
        if not found:
            raise UserError(f"--calibrate: no runs in '{d}' (expected {d}/runs/<run_id>/result.json)")
        results += found
    for r in results:
        if r.config.suite != suite.name or r.method not in reference["methods"]:
            raise UserError(f"--calibrate: run {r.run_id} is not a run of the reference's command "
                            f"(suite {r.config.suite!r}, method {r.method!r})")
        if not r.ok:
            raise UserError(f"--calibrate: run {r.run_id} has status {r.status!r}: calibrate with complete runs only")
        if not r.config.same_as(resolve(suite, RunSpec(suite.name, r.method, r.seed, aug_mode), sets)):
            raise UserError(f"--calibrate: run {r.run_id} was made with another config than the reference's "
                            f"command ({reference.get('command')}): calibrate with runs of that command")
    derived = tolerance.derive(reference, results)
    for m, metrics in derived.items():
        for k, d in metrics.items():
            reference["methods"][m][k].update(d)
    kinds: dict[str, set[int]] = {}
    for r in results:
        kinds.setdefault(str(r.threads), set()).add(r.seed)
    reference["calibration"] = {
        **tolerance.method_text(),
        "runs": [{"threads": int(t), "seeds": sorted(s)} for t, s in sorted(kinds.items(), key=lambda kv: int(kv[0]))],
        "machines": [json.loads(m) for m in sorted({_canon(r.machine) for r in results})],
        "git_commits": sorted({str(r.git_commit) for r in results}),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_calibrated(path, reference, format_calibration(reference) + "\n\n" + calibration_summary(reference))
    return 0


def write_calibrated(path: Path, reference: dict[str, Any], report: str) -> None:
    """Store a reference whose tolerances were just measured, print `report` and what is checked."""
    from bench.results import store, tolerance
    reference["tolerance_source"] = "measured (see calibration)"
    store.write_json(path, reference)
    print(report)
    checked = sum(e.get("checked", True) for ms in reference["methods"].values() for e in ms.values())
    total = sum(len(ms) for ms in reference["methods"].values())
    print(f"calibrated {path}: {checked} of {total} metrics checked, "
          f"{total - checked} published but too noisy to check (tolerance > {tolerance.MAX_USEFUL:g} points)")


def calibration_summary(reference: dict[str, Any]) -> str:
    """Per metric over all methods, as Markdown: the largest thread delta, the median seed std,
    the range of derived tolerances and how many methods are checked (README table)."""
    rows = []
    names: list[str] = []
    for metrics in reference["methods"].values():
        names += [k for k in metrics if k not in names]
    for k in names:
        es = [ms[k] for ms in reference["methods"].values() if k in ms and "spread" in ms[k]]
        if not es:
            continue
        deltas = [abs(d) for e in es for d in e["spread"]["thread_deltas"].values()]
        seed = sorted(e["spread"]["seed_std_own"] for e in es)
        tols = [e["tolerance"] for e in es]
        n_test = {e["spread"].get("n_test") for e in es} - {None}
        rows.append(f"| `{k}` | {'/'.join(map(str, sorted(n_test))) or '?'} | {max(deltas):.2f} | "
                    f"{seed[len(seed) // 2]:.2f} | {min(tols):.2f}–{max(tols):.2f} | "
                    f"{sum(e['checked'] for e in es)}/{len(es)} |")
    head = ("| metric | test images | largest thread delta | median seed std | tolerance | checked |\n"
            "|---|---|---|---|---|---|")
    return "\n".join([head, *rows])


def format_calibration(reference: dict[str, Any]) -> str:
    """The measured spread and derived tolerance of every metric, one line each."""
    head = ("method", "metric", "thread deltas", "thread rms", "seed std", "sigma", "tolerance", "checked")
    table = [head]
    for m, metrics in reference["methods"].items():
        for k, e in metrics.items():
            sp = e.get("spread") or {}
            deltas = " ".join(f"{t}t:{d:+.2f}" for t, d in (sp.get("thread_deltas") or {}).items())
            table.append((m, k, deltas or "–", f"{sp.get('thread_rms', 0):.2f}", f"{sp.get('seed_std', 0):.2f}",
                          f"{sp.get('sigma', 0):.2f}",
                          f"{e.get('tolerance', 0):.2f}", "yes" if e.get("checked", True) else "no"))
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(t, widths)) for t in table)
