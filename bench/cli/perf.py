"""`python -m bench perf --method M [--vs-lightly] ...`: the harness against the bare forward+backward
bound and a plain lightly loop, plus probe and kNN timings (the measurements are bench/tools/perf.py;
docs/performance.md holds the readings)."""
from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli.common import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="simclr", help="method to time (default simclr; see `bench list methods`)")
    p.add_argument("--suite", default="fmnist-ci", help="suite whose data, backbone, augmentation and batch size "
                   "are used (default fmnist-ci)")
    p.add_argument("--backbone", help="override the suite's backbone (see `bench list backbones`)")
    p.add_argument("--batch-size", type=positive_int, help="override the suite's batch size")
    p.add_argument("--steps", type=positive_int, default=10, help="timed training steps per repeat (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before the first repeat (default 2)")
    p.add_argument("--repeats", type=positive_int, default=3, help="repeats; medians are reported (default 3)")
    p.add_argument("--vs-lightly", action="store_true", help="also time the plain lightly loop (c)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop (default 2)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--synthetic", action="store_true", help="random uint8 data of the suite's shape (no dataset needed)")
    p.add_argument("--data-dir", help="where datasets are looked for ($BENCH_DATA also works)")
    p.add_argument("--aug-impl", default="fused", choices=["fused", "kornia"],
                   help="augmentation implementation used by the harness (default fused)")
    p.add_argument("--no-eval", action="store_true", help="skip the linear probe and kNN timings")
    p.add_argument("--no-loops", action="store_true", help="skip (a)/(b)/(c) (e.g. to time only the evaluation)")
    p.add_argument("--eval-n", type=int, default=0, help="cap train and test samples for probe/kNN (0 = the suite's)")
    p.add_argument("--sklearn-repeats", type=int, default=1,
                   help="repeats of the (slow) scikit-learn search; 0 skips it (default 1)")
    p.add_argument("--sklearn-warm", action="store_true",
                   help="also time sklearn warm-started along the grid (as bench.eval.probe's path solver is)")
    p.add_argument("--epoch-time", action="store_true", help="print the epoch time and the schedule's projected "
                   "total for --method at the suite's full training set size")
    p.add_argument("--all-methods", action="store_true", help="--epoch-time for every registered method "
                   "(implies it; skips (c) and eval unless asked)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave torch's default)")
    p.add_argument("--profile", action="store_true", help="torch.profiler breakdown of harness steps "
                   "(augmentation / forward / backward / optimizer / other) and the top operators")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")


def main(args: argparse.Namespace) -> int:
    from bench.tools import perf
    return perf.main(args)
