"""`python -m bench list [suites|methods|backbones|datasets]`: print a registry."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="?", default="suites", choices=["suites", "methods", "backbones", "datasets"])


def main(args: argparse.Namespace) -> int:
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
