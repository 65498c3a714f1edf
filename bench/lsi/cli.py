"""What `bench run`, `bench check` and `bench list` hand over for an LSI suite (the dispatch
lines sit at the top of bench/cli/{run,check,list}.py)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.errors import UserError
from bench.lsi.suites import LSI_SUITES

DEFAULT_SEEDS = 3  # mean ± std needs more than one seed


def run_main(args: argparse.Namespace) -> int:
    """`bench run --suite lsi-...`: generators, classifiers, leaderboard; exit 1 if a run failed."""
    from bench.lsi import report
    from bench.lsi.runner import LSIOptions, run_lsi_suite
    from bench.threads import cpu_threads
    suite = LSI_SUITES.get(args.suite)
    _refuse(args, suite.name)
    seeds = DEFAULT_SEEDS if args.seeds is None else args.seeds
    if seeds < 2:
        print(f"note: with --seeds {seeds} the leaderboard shows no std (default {DEFAULT_SEEDS})", file=sys.stderr)
    out = args.out or Path("results") / suite.name
    opts = LSIOptions(out=Path(out), seeds=seeds, epochs=args.epochs, data_dir=args.data_dir, device=args.device,
                      download=not args.no_download)
    with cpu_threads(args.threads):
        runs = run_lsi_suite(suite, opts)
        html = report.write_report(opts.out)
    print(report.terminal_table(report.LSIReport(opts.out)))
    print(f"\nleaderboard: {html}")
    bad = [r for r in runs if r["status"] != "ok"]
    if bad:
        print(f"{len(bad)} run(s) failed or diverged; see the leaderboard", file=sys.stderr)
        return 1
    return 0


def _refuse(args: argparse.Namespace, name: str) -> None:
    """Options of `bench run` that have no meaning for an LSI suite: one-line errors."""
    given = [(getattr(args, "suite_file", None), "--suite-file"), (getattr(args, "methods", None), "--methods"),
             (getattr(args, "sets", None), "--set"), (getattr(args, "shard", None), "--shard"),
             (getattr(args, "tensorboard", False), "--tensorboard"), (getattr(args, "ablate", None), "--ablate"),
             (getattr(args, "aug", "shared") != "shared", "--aug")]
    for value, flag in given:
        if value:
            raise UserError(f"{flag} does not apply to LSI suite {name} (its rows are fixed); it takes --seeds, "
                            "--epochs, --out, --threads, --device, --data-dir, --no-download")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(f"LSI suite {name} runs in one process; start it without torchrun")


def check_main(args: argparse.Namespace) -> int:
    """`bench check --suite lsi-...`: publish, calibrate or check (bench/lsi/check.py)."""
    from bench.lsi import check
    from bench.results.check import reference_path
    suite = LSI_SUITES.get(args.suite)
    path = reference_path(args.reference, suite.name)
    if args.write_reference is not None:
        return check.publish(suite, Path(args.write_reference), path, force=args.force)
    if args.calibrate:
        return check.calibrate(suite, path, args.calibrate)
    return check.check(suite, path, args)


def list_lines() -> list[str]:
    """`bench list suites` lines of the LSI suites, in the SSL suites' format."""
    return [f"{name:14s} {s.dataset:14s} {s.backbone:15s} {s.train.epochs:4d} ep  [{s.target}]  LSI: {s.description}"
            for name, s in LSI_SUITES.items()]
