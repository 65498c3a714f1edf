"""`python -m bench check`: re-run a suite with the command its published reference records and
compare every metric with its tolerance; or publish a reference (`--write-reference`), or
measure its tolerances (`--calibrate`). The reference logic lives in bench/results/check.py.

Exit codes: 0 all metrics hold, 1 drift / missing metric / failed run, 2 a user mistake
(missing or malformed reference, an --out that already holds results, ...).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench.cli.common import positive_int
from bench.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", required=True, help="suite whose published numbers are checked (see `bench list suites`)")
    p.add_argument("--reference", type=Path,
                   help="reference directory or its results.json (default reports/<suite>)")
    p.add_argument("--out", type=Path,
                   help="where the re-run writes its results (default: a fresh temporary directory); "
                        "must not already hold results")
    p.add_argument("--data-dir", help="where datasets are looked for / downloaded ($BENCH_DATA also works)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="default: the kind of device the reference was made on (cpu or cuda)")
    p.add_argument("--no-download", action="store_true", help="never try to download datasets")
    p.add_argument("--write-reference", type=Path, metavar="RESULTS_DIR",
                   help="publish: write the reference from the runs in RESULTS_DIR instead of checking")
    p.add_argument("--force", action="store_true", help="with --write-reference: replace an existing reference")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads for the re-run (default: the count the reference records; a run is "
                        "bit-exact only at the thread count it was made with)")
    p.add_argument("--calibrate", type=Path, nargs="+", metavar="RESULTS_DIR",
                   help="measure the tolerances: derive each metric's tolerance from runs of the reference's "
                        "command at other thread counts and seeds (see bench/results/tolerance.py) and write them "
                        "into the reference")


def main(args: argparse.Namespace) -> int:
    # imported here, not at the top: `bench --help` and the other commands stay light
    from bench.results.check import calibrate, publish, reference_path
    from bench.suites import SUITES
    from bench.lsi.suites import is_lsi
    if is_lsi(args.suite):  # an LSI suite: its references are bench/lsi/check.py's
        from bench.lsi.cli import check_main
        return check_main(args)
    suite = SUITES.get(args.suite)
    path = reference_path(args.reference, suite.name)
    if args.write_reference is not None:
        return publish(suite, Path(args.write_reference), path, force=args.force)
    if args.calibrate:
        return calibrate(suite, path, args.calibrate)
    return check(suite, path, args)


def check(suite, path: Path, args: argparse.Namespace) -> int:
    import methods
    from bench import suites
    from bench.engine import runner
    from bench.results import store
    from bench.results.check import (command_line, compare, format_rows, load_reference, reference_device,
                                     reference_threads, verdict)
    from bench.suites import check_sets
    from bench.threads import cpu_threads
    reference = load_reference(path, suite.name)
    names = tuple(reference.get("methods_run", list(reference["methods"])))
    for n in list(names) + list(reference["methods"]):
        try:
            methods.get(n)
        except UserError as e:
            raise UserError(f"reference file '{path}': {e}") from None
    sets = {scope: dict(kv) for scope, kv in reference.get("sets", {}).items()}
    check_sets(suite, sets)  # an override the code no longer knows: exit 2 before any work
    out = _fresh_out(args.out, suite.name)
    default = tuple(suite.methods) + tuple(suite.baselines)
    specs = suites.expand(suite, None if names == default else names, reference["seeds"],
                          reference.get("aug_mode", "shared"))
    command = command_line(suite.name, names, default, reference["seeds"], reference.get("aug_mode", "shared"), sets)
    _say(f"bench check {suite.name}: reference {path} "
         f"(published {reference.get('date', '?')}, git {reference.get('git_commit', '?')})")
    _say(f"re-running: {command} --out {out}")
    device = args.device or reference_device(reference)
    _say(f"device: {device}" + ("" if args.device else f" (the reference ran on {reference.get('device', '?')})"))
    ref_threads = reference_threads(reference)
    threads = args.threads or ref_threads
    _say(threads_line(threads, args.threads is not None, ref_threads))
    opts = runner.Options(out=out, data_dir=args.data_dir, device=device, sets=sets,
                          download=not args.no_download)
    with cpu_threads(threads):
        results = runner.run_suite(suite, specs, opts)
    rows = compare(reference, results, suite.tolerance)
    code, summary = verdict(rows)
    store.write_json(out / "check.json", {"suite": suite.name, "reference": str(path), "status": "OK" if code == 0 else "DRIFT",
                                          "rows": [asdict(r) for r in rows]})
    print(f"bench check {suite.name}: reference {path}, re-run in {out}")
    print(format_rows(rows))
    print(summary)
    if code:
        print(f"leaderboard of the re-run: python -m bench report {out}")
    return code


def threads_line(threads: int | None, overridden: bool, ref: int | None) -> str:
    """What the re-run's CPU thread count is and where it came from (`ref`: the reference's)."""
    from bench.threads import environment_threads
    if threads is None:
        return "threads: torch's default (the reference records no thread count; --threads N sets one)"
    if overridden and threads != ref:
        return (f"threads: {threads} (--threads; the reference was made with {ref if ref else 'an unknown count'}: "
                "expect numbers within tolerance, not bit-exact ones)")
    env = environment_threads()
    note = f"; OMP_NUM_THREADS={env} in the environment is not used" if env and env != str(threads) else ""
    return f"threads: {threads} (the reference's; --threads N overrides{note})"


def _fresh_out(given: Path | None, suite_name: str) -> Path:
    if given is None:
        return Path(tempfile.mkdtemp(prefix=f"bench-check-{suite_name}-"))
    out = Path(given)
    if out.exists() and any(out.glob("**/runs/*/result.json")):
        raise UserError(f"--out '{out}' already holds results; bench check re-runs from scratch, so choose an empty "
                        "or new directory (or leave --out out for a fresh temporary one)")
    return out


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
