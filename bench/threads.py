"""CPU thread count: part of what a bit-exact CPU run depends on.

The number of intra-op threads decides how torch (OpenMP, MKL) splits a reduction, and so the
float summation order. Training is chaotic enough that one changed rounding grows into a
different trajectory, so a run reproduces bit-exactly only at the thread count it was made
with. The count is stored with every result (`timings.device`, "cpu (N threads)") and
`bench check` re-runs a reference at the count the reference records.
"""
from __future__ import annotations

import os
import re
from contextlib import contextmanager
from typing import Any, Iterator

import torch

_DEVICE = re.compile(r"^cpu \((\d+) threads?\)$")


def threads_of(device: Any) -> int | None:
    """The thread count in a stored device string "cpu (N threads)"; None for a GPU or unknown."""
    m = _DEVICE.match(str(device)) if isinstance(device, str) else None
    return int(m.group(1)) if m else None


def environment_threads() -> str | None:
    """OMP_NUM_THREADS as the environment sets it (what torch starts with), or None."""
    return os.environ.get("OMP_NUM_THREADS")


@contextmanager
def cpu_threads(n: int | None) -> Iterator[int]:
    """Run the block with `n` intra-op threads in torch and in every BLAS/OpenMP pool
    (threadpoolctl: numpy's and scipy's too); restores the previous counts. None: leave as is."""
    if n is None:
        yield torch.get_num_threads()
        return
    from threadpoolctl import threadpool_limits
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(n):
            yield n
    finally:
        torch.set_num_threads(before)
