"""What every command shares: the argument parser that turns usage mistakes into one-line
errors (exit 2), and the argument types."""
from __future__ import annotations

import argparse

from bench.errors import UserError


class Parser(argparse.ArgumentParser):
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
