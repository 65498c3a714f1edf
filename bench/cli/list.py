"""`python -m bench list [suites|methods|backbones|datasets]`: print a registry."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", default="suites", choices=["suites", "methods", "backbones", "datasets"])
    p.add_argument("--show", metavar="SUITE", help="with `suites`: print this suite as a TOML suite file to copy "
                                                  "and edit (run it with `bench run --suite-file`)")


def main(args: argparse.Namespace) -> int:
    if args.show:
        from bench import suite_file, suites
        from bench.errors import UserError
        if args.what != "suites":
            raise UserError("--show prints a suite: use `bench list suites --show NAME`")
        print(suite_file.to_toml(suites.get(args.show)), end="")
    elif args.what == "suites":
        from bench.suites import SUITES
        for name, s in SUITES.items():
            print(f"{name:14s} {s.dataset:14s} {s.backbone:15s} {s.train.epochs:4d} ep  [{s.target}]  {s.description}")
        from bench.lsi.cli import list_lines
        print("\n".join(list_lines()))
    elif args.what == "methods":
        import methods
        for name, cls in list(methods.METHODS.items()) + list(methods.BASELINES.items()):
            print(f"{name:12s} {cls.paradigm:16s} views={'+'.join(cls.views):20s} {cls.reference}")
    elif args.what == "backbones":
        from bench.backbones import BACKBONES
        for name, b in BACKBONES.items():
            print(f"{name:16s} {b.description}")
        print(f"{'timm:MODEL[@s1|@s2]':16s} any timm model (random init, pooled features before the head); "
              "@s1/@s2: 3x3 stride-1/2 stem, no max-pool (timm ResNet family)")
    else:
        import datasets
        for name in datasets.names():
            i = datasets.info(name)
            print(f"{name:14s} {i.channels}x{i.size}x{i.size} {i.num_classes:4d} classes  {i.description}")
    return 0
