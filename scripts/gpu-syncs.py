"""Where the harness synchronizes with the GPU, and what one step's parts cost (CUDA only).

Usage: python scripts/gpu-syncs.py [method ...]   (cifar10-all shapes, synthetic data)
"""
import argparse
import collections
import sys
import time
import traceback
import warnings

import torch

from bench.tools import perf
from bench.suites import SUITES

methods = sys.argv[1:] or ["simclr"]
dev = torch.device("cuda")
args = argparse.Namespace(synthetic=True, eval_n=256, data_dir=None)
suite = SUITES.get("cifar10-all")
s = perf.load_setup(args, suite, dev, need=256 * 12)
sites: collections.Counter = collections.Counter()


def show(message, category, filename, lineno, file=None, line=None):
    frames = [f for f in traceback.extract_stack()[:-1] if "/bench/" in f.filename or "/methods/" in f.filename
              or "kornia" in f.filename or "lightly" in f.filename]
    where = " <- ".join(f"{f.filename.split('/')[-2]}/{f.filename.split('/')[-1]}:{f.lineno} {f.line}" for f in frames[::-1][:3])
    sites[where] += 1


for name in methods:
    h = perf.Harness(s, name, 256, "fused")
    h.run(3)
    sites.clear()
    torch.cuda.set_sync_debug_mode("warn")
    old = warnings.showwarning
    warnings.showwarning = show
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        h.run(4)
    warnings.showwarning = old
    torch.cuda.set_sync_debug_mode(0)
    print(f"== {name}: synchronizing calls in 4 harness steps (+ end-of-epoch checkpoint):")
    for where, n in sites.most_common(12):
        print(f"  {n:4d}x  {where}")
    # parts of one step, timed with a sync around each
    aug = h.aug
    xb = s.images[:256]
    for label, fn in [("augment one view", lambda: aug(xb)),
                      ("kornia params only", lambda: aug.rrc.forward_parameters(xb.shape))]:
        fn(); torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        print(f"  {label}: {1e3 * (time.perf_counter() - t) / 20:.2f} ms")
