"""`python -m bench run --suite S ...`: train and evaluate every run of a suite (skipping complete
runs, resuming interrupted ones), then write its leaderboard. Exit 1 when a run failed or diverged."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli.common import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", help="a built-in suite (default: quick; see `bench list suites`)")
    p.add_argument("--suite-file", type=Path, metavar="FILE.toml",
                   help="your own suite (TOML; `bench list suites --show NAME` prints one to start from)")
    p.add_argument("--methods", help="comma-separated methods/baselines (default: the suite's methods + baselines)")
    p.add_argument("--seeds", type=positive_int, help="runs per method, seeds 0..N-1 (default 1; LSI suites: 3)")
    p.add_argument("--epochs", type=positive_int, help="override the suite's training epochs")
    p.add_argument("--out", type=Path, help="results directory (default results/<suite>)")
    p.add_argument("--data-dir", help="where datasets are looked for / downloaded ($BENCH_DATA also works)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--aug", default="shared", choices=["shared", "native"],
                   help="shared: the suite's one pipeline (default); native: each method's own recipe (ablation)")
    p.add_argument("--ablate", metavar="aug",
                   help="aug: also retrain each trained method with one augmentation removed at a time, and draw "
                        "the ablation heatmap and the invariance profile into the leaderboard (bench/ablation.py)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SCOPE.KEY=VALUE",
                   help="override a config field, e.g. simclr.temperature=0.2, train.batch_size=128, byol.optim.lr=0.5")
    p.add_argument("--no-download", action="store_true", help="never try to download datasets")
    p.add_argument("--shard", help="run only slice I of N of the suite's runs, e.g. 0/4 (for job arrays)")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write losses, learning rate and the kNN curve as TensorBoard events under "
                        "<out>/tensorboard/<run_id>")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="CPU threads (default: torch's, i.e. OMP_NUM_THREADS or the core count); a CPU run is "
                        "bit-exact only at the thread count it was made with")


def main(args: argparse.Namespace) -> int:
    from bench.lsi.suites import is_lsi
    if is_lsi(args.suite):  # an LSI suite (augmentations of a classifier): bench/lsi runs it
        from bench.lsi.cli import run_main
        return run_main(args)
    if args.seeds is None:
        args.seeds = 1
    from bench import config, report, suites
    from bench.engine import distributed, runner
    from bench.threads import cpu_threads
    if args.suite and args.suite_file:
        from bench.errors import UserError
        raise UserError("pass --suite NAME or --suite-file FILE.toml, not both")
    if args.suite_file:
        from bench import suite_file
        suite = suite_file.load(args.suite_file)
    else:
        suite = suites.get(args.suite or "quick")
    sets = config.parse_sets(args.sets)
    if args.epochs:
        sets.setdefault("train", {})["epochs"] = str(args.epochs)
    names = tuple(m.strip() for m in args.methods.split(",") if m.strip()) if args.methods else None
    if names:
        import methods
        for n in names:
            methods.get(n)
    specs = suites.expand(suite, names, args.seeds, args.aug)
    ablate = None
    if args.ablate:  # planned (and checked) before any training
        from bench import ablation
        ablate = ablation.plan(suite, specs, sets, args.ablate, sharded=bool(args.shard))
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
            tc = suites.resolve_scope(suite, "train", sets.get("train", {}))
            print(f"torchrun: {world.world_size} processes ({world.backend}); global batch = {tc.batch_size} per process "
                  f"x {world.world_size} = {tc.batch_size * world.world_size}; sync_bn={tc.sync_bn}",
                  file=sys.stderr, flush=True)
        opts = runner.Options(out=out, data_dir=args.data_dir, device=args.device, sets=sets,
                              download=not args.no_download, world_size=world.world_size, rank=world.rank,
                              tensorboard=args.tensorboard)
        with cpu_threads(args.threads):
            results = runner.run_suite(suite, specs, opts)
            if ablate is not None:  # after the full-pipeline runs they are compared with
                results += ablation.run(suite, ablate, opts)
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
