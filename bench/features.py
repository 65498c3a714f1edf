"""Placeholder: `python -m bench features` is being built (see the open issues)."""
from __future__ import annotations

import argparse

from bench.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def main(args: argparse.Namespace) -> int:
    raise UserError("`bench features` is not implemented yet")
