"""`python -m bench` command line: list, run, report, check, features, perf.

User mistakes (unknown names, bad values, missing data) print one line `error: ...` and exit
with code 2; a run whose training failed or diverged makes `run` exit 1 at the end.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.errors import UserError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors: one line, exit 2
        raise UserError(f"{message} (see `python -m bench {self.prog.split()[-1]} --help`)")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description="ssl-bench: one harness, identical backbones and augmentations, "
                "fair SSL comparisons.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ls = sub.add_parser("list", help="print a registry")
    ls.add_argument("what", nargs="?", default="suites", choices=["suites", "methods", "backbones", "datasets"])

    run = sub.add_parser("run", help="train and evaluate a suite, then write its leaderboard")
    run.add_argument("--suite", default="quick", help="suite name (default: quick; see `bench list suites`)")
    run.add_argument("--methods", help="comma-separated methods/baselines (default: the suite's methods + baselines)")
    run.add_argument("--seeds", type=positive_int, default=1, help="runs per method, seeds 0..N-1 (default 1)")
    run.add_argument("--epochs", type=positive_int, help="override the suite's training epochs")
    run.add_argument("--out", type=Path, help="results directory (default results/<suite>)")
    run.add_argument("--data-dir", help="where datasets are looked for / downloaded ($BENCH_DATA also works)")
    run.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    run.add_argument("--aug", default="shared", choices=["shared", "native"],
                     help="shared: the suite's one pipeline (default); native: each method's own recipe (ablation)")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="SCOPE.KEY=VALUE",
                     help="override a config field, e.g. simclr.temperature=0.2, train.batch_size=128, byol.optim.lr=0.5")
    run.add_argument("--no-download", action="store_true", help="never try to download datasets")
    run.add_argument("--shard", help="run only slice I of N of the suite's runs, e.g. 0/4 (for job arrays)")
    run.add_argument("--threads", type=positive_int, metavar="N",
                     help="CPU threads (default: torch's, i.e. OMP_NUM_THREADS or the core count); a CPU run is "
                          "bit-exact only at the thread count it was made with")

    rep = sub.add_parser("report", help="write leaderboard.html/.md/.csv for a results directory")
    rep.add_argument("results", type=Path)
    rep.add_argument("--out", type=Path, help="HTML file to write (default <results>/leaderboard.html)")

    # commands that live in their own modules: each has add_arguments(parser) and main(args) -> int
    for name, module, helptext in PLUGGED:
        sp = sub.add_parser(name, help=helptext)
        _module(module).add_arguments(sp)
    return p


PLUGGED = [
    ("check", "bench.results.check", "re-run a suite and compare with its published numbers; exit 1 on drift"),
    ("features", "bench.cli.features", "export a run's frozen features and labels to .npz"),
    ("perf", "bench.tools.perf", "measure the harness against the bare bound and a plain lightly loop"),
]


def _module(name: str):
    import importlib
    return importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command in COMMANDS:
            return COMMANDS[args.command](args)
        module = dict((n, m) for n, m, _ in PLUGGED)[args.command]
        return _module(module).main(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are stored; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: stop quietly, like other CLI tools
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "suites":
        from bench.suites import SUITES
        for name, s in SUITES.items():
            print(f"{name:14s} {s.dataset:14s} {s.backbone:15s} {s.train.epochs:4d} ep  [{s.target}]  {s.description}")
    elif args.what == "methods":
        import methods
        for name, cls in list(methods.METHODS.items()) + list(methods.BASELINES.items()):
            print(f"{name:12s} {cls.paradigm:16s} views={'+'.join(cls.views):20s} {cls.reference}")
    elif args.what == "backbones":
        from bench.backbones import BACKBONES
        for name, b in BACKBONES.items():
            print(f"{name:16s} {b.description}")
    else:
        import datasets
        for name in datasets.names():
            i = datasets.info(name)
            print(f"{name:14s} {i.channels}x{i.size}x{i.size} {i.num_classes:4d} classes  {i.description}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from bench import config, report, suites
    from bench.engine import distributed, runner
    suite = suites.SUITES.get(args.suite)
    sets = config.parse_sets(args.sets)
    if args.epochs:
        sets.setdefault("train", {})["epochs"] = str(args.epochs)
    names = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else None
    if names:
        import methods
        for n in names:
            methods.get(n)
    specs = suites.expand(suite, names, args.seeds, args.aug)
    if args.shard:
        index, count = distributed.parse_shard(args.shard)
        total, specs = len(specs), distributed.shard(specs, index, count)
        print(f"shard {index}/{count}: {len(specs)} of the suite's {total} runs", file=sys.stderr)
        if not specs:
            return 0
    out = args.out or Path("results") / suite.name
    world = distributed.setup(args.device)  # torchrun: join the process group (RANK/WORLD_SIZE set)
    try:
        if world.world_size > 1 and world.rank == 0:
            tc = config.resolve_scope(suite, "train", sets.get("train", {}))
            print(f"torchrun: {world.world_size} processes ({world.backend}); global batch = {tc.batch_size} per process "
                  f"x {world.world_size} = {tc.batch_size * world.world_size}; sync_bn={tc.sync_bn}",
                  file=sys.stderr, flush=True)
        opts = runner.Options(out=out, data_dir=args.data_dir, device=args.device, sets=sets,
                              download=not args.no_download, world_size=world.world_size, rank=world.rank)
        from bench.threads import cpu_threads
        with cpu_threads(args.threads):
            results = runner.run_suite(suite, specs, opts)
    finally:
        distributed.teardown()
    if world.rank != 0:  # rank 0 writes everything
        return 0
    html = report.write_report(out)
    print(report.terminal_table(out))
    print(f"\nleaderboard: {html}")
    bad = [r for r in results if not r.ok]
    if bad:
        print(f"{len(bad)} run(s) failed or diverged; see the leaderboard", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from bench import report
    path = report.write_report(args.results, args.out)
    print(report.terminal_table(args.results))
    print(f"\nleaderboard: {path}")
    return 0


COMMANDS = {"list": cmd_list, "run": cmd_run, "report": cmd_report}
