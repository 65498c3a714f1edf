"""pytest-benchmark benchmarks of the hot paths; NOT part of the default test run.

Run them on purpose (one command, from the repository root):

    python -m pytest tests/benchmarks --benchmark-only -p no:cacheprovider

pyproject.toml's addopts already pass --ignore=tests/benchmarks to every run; naming the
directory on the command line overrides that. As a second guard, the hook below skips these
benchmarks whenever they are collected without being asked for (e.g. `pytest tests` after
the ignore was dropped). Compare runs with --benchmark-autosave / --benchmark-compare.
"""
from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    asked = config.getoption("benchmark_only", default=False) or any("benchmarks" in str(a) for a in config.args)
    if asked:
        return
    skip = pytest.mark.skip(reason="benchmark: run `python -m pytest tests/benchmarks --benchmark-only`")
    for item in items:
        if "benchmarks" in item.nodeid.split("::")[0].split("/"):
            item.add_marker(skip)
