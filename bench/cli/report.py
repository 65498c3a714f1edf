"""`python -m bench report DIR [--out FILE]`: leaderboard.html/.md/.csv from the runs stored below DIR
(one results directory or a parent of shard directories)."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", type=Path)
    p.add_argument("--out", type=Path, help="HTML file to write (default <results>/leaderboard.html)")


def main(args: argparse.Namespace) -> int:
    from bench import report
    path = report.write_report(args.results, args.out)
    print(report.terminal_table(args.results))
    print(f"\nleaderboard: {path}")
    return 0
