"""Runs a suite's runs: resolve each RunSpec, then skip it (complete), put it off (another
process holds its lock), or execute it (bench/engine/execute.py) and store its record.

A run with a checkpoint is resumed; one that raises or diverges is stored with its status and
reason and the suite carries on. Under torchrun rank 0 decides and the other ranks follow.
"""
from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import datasets as ds
from bench import backbones
from bench.config import RunSpec, Suite
from bench.engine import distributed
from bench.engine.data import SuiteData
from bench.engine.execute import device_name, execute, pick_device
from bench.errors import UserError
from bench.results import store
from bench.suites import check_sets, resolve, resolve_scope


@dataclass
class Options:
    """What the user chose on the command line, beyond the suite."""
    out: Path
    data_dir: str | None = None
    device: str = "auto"
    sets: dict[str, dict[str, str]] = field(default_factory=dict)
    download: bool = True
    world_size: int = 1
    rank: int = 0
    tensorboard: bool = False      # also write each run's TensorBoard events (bench/results/tensorboard.py)


def run_suite(suite: Suite, specs: list[RunSpec], opts: Options) -> list[store.RunRecord]:
    """Run every spec not yet complete; returns the result records (also the skipped ones).

    A run another process is training (its lock is held) is put off to the end and waited for,
    so neither process trains it twice and both end with its result. Under torchrun rank 0
    takes every decision (and the locks) and broadcasts it; the other ranks follow.
    """
    device = pick_device(opts.device)
    check_sets(suite, opts.sets)
    _check_before_work(suite, specs, opts)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    # the data follows --set train.train_subset / eval.*_subset (they are part of every run's spec)
    sized = replace(suite, train=resolve_scope(suite, "train", opts.sets.get("train", {})),
                    eval=resolve_scope(suite, "eval", opts.sets.get("eval", {})))
    data = _load_data(sized, opts, device)  # a missing dataset stops here, before any training
    store.ensure_writable(opts.out)  # after the data: a dataset error leaves no output directory behind
    results, waiting = [], []
    for i, spec in enumerate(specs, 1):
        result, seen = _attempt(suite, spec, f"[{i}/{len(specs)}]", data, device, opts, _FIRST)
        if result is _BUSY:
            waiting.append((i, spec, seen))
        elif result is not None:
            results.append(result)
    while waiting:  # runs other processes were training when we reached them
        time.sleep(LOCK_POLL_S)
        still = []
        for i, spec, seen in waiting:
            result, _ = _attempt(suite, spec, f"[{i}/{len(specs)}]", data, device, opts, seen)
            if result is _BUSY:
                still.append((i, spec, seen))
            elif result is not None:
                results.append(result)
        waiting = still
    return results


LOCK_POLL_S = 2.0
_BUSY = object()   # marker: another process holds the run's lock
_FIRST = object()  # marker: first look at a run (nothing seen before)


def _load_data(suite: Suite, opts: Options, device: torch.device) -> SuiteData:
    """Rank 0 first (it may download), then the other ranks read what it found."""
    data, error = None, None
    if opts.rank == 0:
        try:
            data = SuiteData(suite, opts.data_dir, opts.download, device)
        except UserError as e:
            error = str(e)
    error = distributed.broadcast(error)  # also the barrier the other ranks wait at
    if error is not None:
        raise UserError(error)
    return data if data is not None else SuiteData(suite, opts.data_dir, opts.download, device)


def _check_before_work(suite: Suite, specs: list[RunSpec], opts: Options) -> None:
    """Mistakes that would otherwise surface mid-suite: fail before loading data or training."""
    backbones.get(suite.backbone)
    ds.info(suite.dataset)
    if suite.pretrain_dataset:
        ds.info(suite.pretrain_dataset)
    train_cfg = resolve_scope(suite, "train", opts.sets.get("train", {}))
    if train_cfg.epochs < 1 or train_cfg.batch_size < 1:
        raise UserError(f"train.epochs and train.batch_size must be >= 1 (got {train_cfg.epochs}, "
                        f"{train_cfg.batch_size})")
    for path in sorted(Path(opts.out).glob("runs/*/" + store.RESULT)):  # incompatible results: refuse, untouched
        store.read_result(path.parent)


def _stamp(run_dir: Path) -> tuple[int, int] | None:
    """Identity of the current result.json (atomic replace gives it a new inode)."""
    try:
        st = (run_dir / store.RESULT).stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _decide(run_dir: Path, locks: ExitStack, seen: Any) -> tuple[str, Any]:
    """Rank 0: ("done", result) | ("busy", stamp) | ("train", previous result or None).

    A result that is ok, or that appeared since `seen` (another process just finished the run,
    even if it failed), is taken as it is: a run is never trained twice concurrently.
    """
    if seen is _FIRST:
        seen = _stamp(run_dir)
    existing = store.read_result(run_dir)
    if existing is not None and (existing.ok or _stamp(run_dir) != seen):
        return "done", existing
    if not locks.enter_context(store.run_lock(run_dir)):
        return "busy", seen
    existing = store.read_result(run_dir)  # another process may have finished it meanwhile
    if existing is not None and (existing.ok or _stamp(run_dir) != seen):
        return "done", existing
    return "train", existing


def _attempt(suite, spec, tag, data, device, opts, seen) -> tuple[Any, Any]:
    """Skip, put off, or train one run. Returns (result | _BUSY | None, stamp)."""
    # train.batch_size is per process: under torchrun the process count is part of the run
    run = resolve(suite, spec, opts.sets, world_size=opts.world_size)
    run_dir = opts.out / "runs" / run.run_id
    with ExitStack() as locks:
        decision, payload, error = ("train", None, None)
        if opts.rank == 0:
            try:
                decision, payload = _decide(run_dir, locks, seen)
            except UserError as e:
                error = str(e)
        decision, error = distributed.broadcast((decision, error))
        if error is not None:
            raise UserError(error)
        if decision == "busy":
            if seen is _FIRST:
                _say(opts, f"{tag} {run_dir.name}: another process is training it; will wait for its result")
            return _BUSY, payload
        if decision == "done":
            if opts.rank == 0:
                _say(opts, f"{tag} {run_dir.name}: " + ("complete, skipped" if seen is _FIRST
                                                         else f"finished by another process ({payload.status})"))
            if opts.rank == 0 and opts.tensorboard and seen is _FIRST:  # complete before: events from its record
                from bench.results import tensorboard
                tensorboard.write_run(payload, run_dir, opts.out / "tensorboard")
            return payload, None
        if opts.rank == 0 and payload is not None:  # keep the failed attempt's record; never overwrite silently
            store.keep_aside(run_dir / store.RESULT)
        _say(opts, f"{tag} {run_dir.name}: training {spec.method} (seed {spec.seed}) on {device_name(device)}"
                   + (f" x {opts.world_size} processes" if opts.world_size > 1 else ""))
        result = execute(run, run_dir, data, device, opts.world_size, opts.rank)
        if opts.rank == 0:
            result.update(store.environment())
        record = store.RunRecord.from_json(result, run_dir.name)
        record.directory = run_dir
        if opts.rank == 0:
            store.write_result(run_dir, record)
            _say(opts, f"{tag} {run_dir.name}: {_summary(record)}")
        if opts.rank == 0 and opts.tensorboard:
            from bench.results import tensorboard
            _say(opts, f"{tag} {run_dir.name}: TensorBoard events in "
                       f"{tensorboard.write_run(record, run_dir, opts.out / 'tensorboard')}")
        distributed.barrier()  # the other ranks wait while rank 0 evaluates and writes
        return record, None


def _summary(result: store.RunRecord) -> str:
    if not result.ok:
        return f"{result.status.upper()}: {result.reason}"
    m = result.metrics
    return (f"ok  kNN {m['knn_top1']:.2f}  linear {m['linear_top1']:.2f}  "
            f"({result.timings['train_s']:.0f}s train, {result.timings['views_per_s']:.0f} views/s)")


def _say(opts: Options, msg: str) -> None:
    if opts.rank == 0:
        print(msg, file=sys.stderr, flush=True)
