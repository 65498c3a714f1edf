"""`python -m bench parity --method M`: train M through the harness and through its independent
reference loop (bench/parity/reference.py) at the same budget and recipe, evaluate both encoders
with the same kNN, print both accuracies, their difference and both training times, and store
the record as OUT/M.json; `--doc docs/parity.md` re-renders the table from every record in OUT.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from bench.cli.common import positive_int
from bench.parity import REFERENCE_VIEWS

PARITY_METHODS = ("vae", "aasae", "aae", "simclr", "byol", "vicreg", "mae")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=PARITY_METHODS, help="the method to compare (required unless --render-only)")
    p.add_argument("--suite", default="fmnist-ci", help="data, backbone, budget and augmentation (default fmnist-ci)")
    p.add_argument("--seeds", type=positive_int, default=2, help="seeds K..K+N-1, K from --first-seed (default 2)")
    p.add_argument("--first-seed", type=int, default=0, metavar="K",
                   help="the first seed (default 0): more seeds without re-running the first ones; the "
                        "record's name ends in -from-seedK and it is a row of its own (rows are not merged)")
    p.add_argument("--epochs", type=positive_int, help="training epochs (default: the suite's)")
    p.add_argument("--backbone", help="another backbone than the suite's (e.g. vit-tiny-p4 for MAE on a ViT)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="SCOPE.KEY=VALUE",
                   help="recipe override, applied to both sides (e.g. --set train.train_subset=20000)")
    p.add_argument("--validation", type=int, default=0, metavar="N",
                   help="score on N held-out TRAIN images instead of the test split (for choosing a recipe default)")
    p.add_argument("--harness-only", action="store_true",
                   help="train and score the harness side only (e.g. to compare recipe settings the reference lacks)")
    p.add_argument("--reference-views", choices=list(REFERENCE_VIEWS), default="pil",
                   help="pil: the reference loop's own torchvision/lightly transforms (parity, default); harness: "
                        "feed it the harness's kornia views instead (a diagnostic separating the data pipeline "
                        "from the training code); matched: also the harness's batch order, random draws (crops, "
                        "masks, noise) and initial weights, so that only the training code differs (except for VAE/AASAE, "
                        "whose reference draws extra noise, and BYOL, whose target moves one step apart)")
    p.add_argument("--out", type=Path, default=Path("results/parity"),
                   help="where METHOD-BACKBONE.json is written (default results/parity)")
    p.add_argument("--force", action="store_true", help="replace an existing record of the same method and backbone")
    p.add_argument("--doc", type=Path, help="re-render the table in this Markdown file from every record in OUT")
    p.add_argument("--render-only", action="store_true", help="with --doc: only re-render the table, train nothing")
    p.add_argument("--data-dir", help="where datasets are looked for ($BENCH_DATA also works)")
    p.add_argument("--no-download", action="store_true", help="never try to download datasets")
    p.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads (default: torch's)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop (default 2)")


def main(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bench import config
    from bench.errors import UserError
    from bench.parity import compare
    from bench.suites import SUITES, check_sets
    from bench.threads import cpu_threads

    if args.render_only:
        if not args.doc:
            raise UserError("--render-only needs --doc FILE")
        records = compare.load_records(args.out)
        if not records:
            raise UserError(f"no parity records (*.json) in {args.out}")
        compare.write_doc(args.doc, records)
        print(f"table of {len(records)} record(s) from {args.out} -> {args.doc}")
        return 0
    if not args.method:
        raise UserError("--method is required (one of: " + ", ".join(PARITY_METHODS) + ")")
    suite = SUITES.get(args.suite)
    if args.backbone:
        from bench import backbones
        backbones.get(args.backbone)  # unknown name: UserError listing the known ones
        suite = replace(suite, backbone=args.backbone)
    sets = config.parse_sets(args.sets)
    if args.epochs:
        sets.setdefault("train", {})["epochs"] = str(args.epochs)
    check_sets(suite, sets)
    if args.validation and args.validation < 10 or args.validation < 0:
        raise UserError(f"--validation {args.validation}: give at least one image per class (>= 10), or 0 for the test split")
    if args.first_seed < 0:
        raise UserError(f"--first-seed {args.first_seed}: must be >= 0")
    if args.workers < 0:
        raise UserError(f"--workers {args.workers}: must be >= 0")
    if args.harness_only and args.reference_views != "pil":
        raise UserError("--reference-views needs a reference side; drop --harness-only")
    name = f"{args.method}-{suite.backbone}" + ("-harness-only" if args.harness_only else "") \
        + REFERENCE_VIEWS[args.reference_views][0] + (f"-from-seed{args.first_seed}" if args.first_seed else "")
    target = args.out / f"{name}.json"
    if target.exists() and not args.force:
        raise UserError(f"{target} already holds a parity record; pass --force to replace it or choose another --out")
    command = "python -m bench parity " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if sys.argv[1:2] == ["parity"] \
        else (f"python -m bench parity --method {args.method} --suite {args.suite} --seeds {args.seeds} "
              f"--first-seed {args.first_seed} --reference-views {args.reference_views}")
    with cpu_threads(args.threads):
        record = compare.parity(suite, args.method, range(args.first_seed, args.first_seed + args.seeds), sets,
                                args.data_dir, not args.no_download,
                                args.validation, args.workers, command, args.harness_only, args.reference_views)
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(target)
    s = compare.summary(record)
    print(f"{args.method} ({record['variant']}): harness {s['harness']:.2f}  reference {s['reference']:.2f}  "
          f"difference {s['difference']:+.2f} over {args.seeds} seed(s); train {s['harness_s']:.0f}s / "
          f"{s['reference_s']:.0f}s; {record['metric']}, scored on {record['scored_on']} -> {target}")
    if args.doc:
        compare.write_doc(args.doc, compare.load_records(args.out))
        print(f"table: {args.doc}")
    return 0
