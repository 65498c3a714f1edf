"""`python -m bench` command line: one module per command (list, run, report, check, features,
perf, parity), each with `add_arguments(parser)` and `main(args) -> exit code`.

User mistakes (unknown names, bad values, missing data) print one line `error: ...` and exit
with code 2; a run whose training failed or diverged makes `run` exit 1 at the end.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from bench import plugins
from bench.cli.common import Parser
from bench.errors import UserError

# name, module, help; each module imports only argparse-level names at its top and its heavy
# dependencies (torch, the methods) inside main, so `bench --help` and usage errors stay light
COMMANDS = [
    ("list", "bench.cli.list", "print a registry"),
    ("run", "bench.cli.run", "train and evaluate a suite, then write its leaderboard"),
    ("report", "bench.cli.report", "write leaderboard.html/.md/.csv for a results directory"),
    ("check", "bench.cli.check", "re-run a suite and compare with its published numbers; exit 1 on drift"),
    ("features", "bench.cli.features", "export a run's frozen features and labels to .npz"),
    ("export", "bench.cli.export", "write a run's trained backbone as a timm state_dict"),
    ("perf", "bench.cli.perf", "measure the harness against the bare bound and a plain lightly loop"),
    ("parity", "bench.cli.parity", "train a method through the harness and its independent reference loop; compare"),
]


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="bench", description="ssl-bench: one harness, identical backbones and augmentations, "
               "fair SSL comparisons.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name, module, helptext in COMMANDS:
        cmd = sub.add_parser(name, help=helptext)
        importlib.import_module(module).add_arguments(cmd)
        cmd.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                         help="import a Python file that registers methods, backbones or datasets "
                              "(repeatable; $BENCH_PLUGINS too; docs/plugins.md)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.plugin or plugins.paths_from_env():
            plugins.load(plugins.paths_from_env() + args.plugin)
        module = dict((n, m) for n, m, _ in COMMANDS)[args.command]
        return importlib.import_module(module).main(args)
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
