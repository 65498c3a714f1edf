"""Runs a suite: resolve each RunSpec's config, train it, evaluate it, store it.

A run that is complete is skipped; one with a checkpoint is resumed; one that raises or
diverges is stored with its status and reason and the suite carries on.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import datasets as ds
import methods
from bench import config as cfgmod
from bench.engine.augment import Augment, AugConfig
from bench.backbones import BACKBONES
from bench.errors import UserError
from bench.eval.evaluate import EvalSet, evaluate
from bench.engine import distributed
from bench.results import store
from bench.suites import RunSpec, Suite
from bench.engine.train import CHECKPOINT, TrainOutcome, save_checkpoint, train
from methods.base import DataInfo, Method


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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def check_sets(suite: Suite, sets: dict[str, dict[str, str]]) -> None:
    """Every --set scope must exist and every key must be a field (checked before any work)."""
    for scope, items in sets.items():
        resolve_scope(suite, scope, items)


def resolve_scope(suite: Suite, scope: str, items: dict[str, str]) -> Any:
    base = {"train": suite.train, "aug": suite.aug, "eval": suite.eval}
    if scope in base:
        return cfgmod.apply(base[scope], items, scope)
    name, _, sub = scope.partition(".")
    cls = methods.get(name) if (name in methods.METHODS or name in methods.BASELINES) else None
    if cls is None:
        known = ", ".join(["train", "aug", "eval"] + methods.METHODS.names() + methods.BASELINES.names())
        raise UserError(f"--set {scope}.*: unknown scope {scope!r}; choose one of: {known} (or METHOD.optim)")
    if sub == "optim":
        return cfgmod.apply(cls.optim, items, scope)
    if sub:
        raise UserError(f"--set {scope}.*: unknown scope; use {name}.KEY or {name}.optim.KEY")
    return cfgmod.apply(cls.Config(), items, scope)


def resolve(suite: Suite, spec: RunSpec, sets: dict[str, dict[str, str]]) -> dict[str, Any]:
    """The fully resolved config of a run: everything that determines its result."""
    cls = methods.get(spec.method)
    train_cfg = resolve_scope(suite, "train", sets.get("train", {}))
    aug_cfg = resolve_scope(suite, "aug", sets.get("aug", {}))
    if spec.aug_mode == "native" and cls.native_aug:
        aug_cfg = replace(aug_cfg, **cls.native_aug)
    return {
        "suite": suite.name, "method": spec.method, "seed": spec.seed, "aug_mode": spec.aug_mode,
        "dataset": suite.dataset, "backbone": suite.backbone, "image_size": suite.image_size,
        "views": list(cls.views), "paradigm": cls.paradigm,
        "train": dataclasses.asdict(train_cfg), "aug": dataclasses.asdict(aug_cfg),
        "eval": dataclasses.asdict(resolve_scope(suite, "eval", sets.get("eval", {}))),
        "method_config": dataclasses.asdict(resolve_scope(suite, spec.method, sets.get(spec.method, {}))),
        "optim": dataclasses.asdict(resolve_scope(suite, f"{spec.method}.optim", sets.get(f"{spec.method}.optim", {}))),
    }


class SuiteData:
    """The suite's data, loaded once and shared by every run (uint8, resident on the device)."""

    def __init__(self, suite: Suite, opts: Options, device: torch.device) -> None:
        size = suite.image_size
        full = ds.resize(ds.load(suite.dataset, "train", opts.data_dir, opts.download), size)
        test = ds.resize(ds.load(suite.dataset, "test", opts.data_dir, opts.download), size)
        self.channels = full.channels
        # fixed class-balanced subsets (seed 0): every method and seed sees the same images
        self.pretrain = _subset(full, suite.train.train_subset)
        self.main = EvalSet(suite.dataset, _subset(full, suite.eval.train_subset), _subset(test, suite.eval.test_subset))
        self.info = DataInfo(full.channels, size, full.num_classes, full.mean, full.std)
        self.images = _place(self.pretrain.images, device)
        self.labels = self.pretrain.labels.to(self.images.device)
        self.transfer: dict[str, EvalSet | str] = {}
        for name in suite.eval.transfer:
            try:
                tr = ds.load(name, "train", opts.data_dir, opts.download)
                te = ds.load(name, "test", opts.data_dir, opts.download)
            except UserError as e:  # a missing target is skipped with its reason, never a crash
                self.transfer[name] = f"skipped: {e}"
                continue
            prep = lambda d, n: _subset(ds.to_channels(ds.resize(d, size), self.channels), n)
            self.transfer[name] = EvalSet(name, prep(tr, suite.eval.transfer_train_subset),
                                          prep(te, suite.eval.transfer_test_subset))


def _subset(data: ds.ImageData, n: int) -> ds.ImageData:
    if not n or n >= len(data):
        return data
    per_class = max(1, n // data.num_classes)
    return data.subset(ds.balanced_subset(data.labels, per_class, seed=0))


def _place(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Keep uint8 data on the GPU when it fits comfortably, else pinned host memory."""
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() < 0.25 * free:
        return images.to(device)
    return images.pin_memory()


def build_method(suite: Suite, resolved: dict[str, Any], info: DataInfo, device: torch.device) -> Method:
    cls = methods.get(resolved["method"])
    torch.manual_seed(resolved["seed"])  # the seed fixes the initialisation
    backbone = BACKBONES.get(suite.backbone).build(info.channels, info.size)
    cfg = cls.Config(**_tuples(resolved["method_config"]))
    return cls(cfg, backbone, info).to(device)


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def execute(suite: Suite, spec: RunSpec, resolved: dict[str, Any], run_dir: Path, data: SuiteData,
            device: torch.device, opts: Options) -> dict[str, Any]:
    """Train and evaluate one run; returns the result record (status ok/diverged/failed)."""
    from bench.engine.train_ddp import ddp_wrapper  # noqa: local import keeps single-process start-up light
    h = store.spec_hash(resolved)
    cls = methods.get(spec.method)
    result: dict[str, Any] = {"schema_version": store.SCHEMA_VERSION, "run_id": run_dir.name, "spec_hash": h,
                              "spec": dataclasses.asdict(spec), "config": resolved, "variant": spec.method,
                              "status": "ok", "reason": None}
    t0 = time.perf_counter()
    method = build_method(suite, resolved, data.info, device)
    result["variant"] = method.variant
    aug_cfg = AugConfig(**_tuples(resolved["aug"]))
    aug = Augment(aug_cfg, data.info.size, data.info.channels, data.info.mean, data.info.std).to(device)
    result["augmentation"] = aug_cfg.describe()
    train_cfg = _train_cfg(resolved)
    optim = methods.OptimConfig(**resolved["optim"])
    outcome = TrainOutcome()
    if cls.trains:
        outcome = train(method, data.images, data.labels, aug, train_cfg, optim, run_dir, device, spec.seed, h,
                        world_size=opts.world_size, rank=opts.rank, is_main=opts.rank == 0,
                        wrap=ddp_wrapper(train_cfg, device) if opts.world_size > 1 else None)
    elif opts.rank == 0:
        save_checkpoint(run_dir / CHECKPOINT, {"spec_hash": h, "epoch": 0, "step": 0, "train_s": 0.0,
                                               "model": method.state_dict()})
    result["train"] = dataclasses.asdict(outcome)
    result["status"], result["reason"] = outcome.status, outcome.reason
    if outcome.status != "ok" or opts.rank != 0:
        return result
    t1 = time.perf_counter()
    method.eval()
    ev = evaluate(method.encode, data.main, data.transfer, train_cfg_eval(resolved), aug, device, spec.seed)
    result.update(ev)
    save_reconstructions(method, data, run_dir, device)
    result["timings"] = {"train_s": outcome.train_s, "views_per_s": outcome.views_per_s,
                         "peak_memory_mb": outcome.peak_memory_mb, "peak_memory_kind": outcome.peak_memory_kind,
                         "eval_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0,
                         "device": device_name(device)}
    return result


def _train_cfg(resolved: dict[str, Any]):
    from bench.suites import TrainConfig
    return TrainConfig(**resolved["train"])


def train_cfg_eval(resolved: dict[str, Any]):
    from bench.suites import EvalConfig
    return EvalConfig(**_tuples(resolved["eval"]))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


@torch.no_grad()
def save_reconstructions(method: Method, data: SuiteData, run_dir: Path, device: torch.device, n: int = 16) -> None:
    """Autoencoders: originals (top row) over reconstructions (bottom row) as recon.png."""
    from torchvision.utils import save_image
    from bench.engine.augment import normalize
    x = normalize(data.main.test.images[:n].to(device), data.info.mean, data.info.std)
    rec = method.reconstruct(x)
    if rec is None:
        return
    m = torch.tensor(data.info.mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(data.info.std, device=device).view(1, -1, 1, 1)
    grid = torch.cat([x, rec.float()]) * s + m
    save_image(grid.clamp(0, 1).cpu(), run_dir / "recon.png", nrow=n)


def run_suite(suite: Suite, specs: list[RunSpec], opts: Options) -> list[dict[str, Any]]:
    """Run every spec not yet complete; returns the result records (also the skipped ones).

    A run another process is training (its lock is held) is put off to the end and waited for,
    so neither process trains it twice and both end with its result. Under torchrun rank 0
    takes every decision (and the locks) and broadcasts it; the other ranks follow.
    """
    device = pick_device(opts.device)
    check_sets(suite, opts.sets)
    _check_before_work(suite, specs, opts)
    store.ensure_writable(opts.out)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    # the data follows --set train.train_subset / eval.*_subset (they are part of every run's spec)
    sized = replace(suite, train=resolve_scope(suite, "train", opts.sets.get("train", {})),
                    eval=resolve_scope(suite, "eval", opts.sets.get("eval", {})))
    data = _load_data(sized, opts, device)  # a missing dataset stops here, before any training
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
            data = SuiteData(suite, opts, device)
        except UserError as e:
            error = str(e)
    error = distributed.broadcast(error)  # also the barrier the other ranks wait at
    if error is not None:
        raise UserError(error)
    return data if data is not None else SuiteData(suite, opts, device)


def _check_before_work(suite: Suite, specs: list[RunSpec], opts: Options) -> None:
    """Mistakes that would otherwise surface mid-suite: fail before loading data or training."""
    BACKBONES.get(suite.backbone)
    ds.info(suite.dataset)
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
    if existing is not None and (existing["status"] == "ok" or _stamp(run_dir) != seen):
        return "done", existing
    if not locks.enter_context(store.run_lock(run_dir)):
        return "busy", seen
    existing = store.read_result(run_dir)  # another process may have finished it meanwhile
    if existing is not None and (existing["status"] == "ok" or _stamp(run_dir) != seen):
        return "done", existing
    return "train", existing


def _attempt(suite, spec, tag, data, device, opts, seen) -> tuple[Any, Any]:
    """Skip, put off, or train one run. Returns (result | _BUSY | None, stamp)."""
    resolved = resolve(suite, spec, opts.sets)
    if opts.world_size > 1:  # train.batch_size is per process: the process count is part of the run
        resolved["world_size"] = opts.world_size
    run_dir = opts.out / "runs" / store.run_id(spec.method, spec.seed, resolved)
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
                                                         else f"finished by another process ({payload['status']})"))
            return payload, None
        if opts.rank == 0 and payload is not None:  # keep the failed attempt's record; never overwrite silently
            _keep_previous(run_dir)
        _say(opts, f"{tag} {run_dir.name}: training {spec.method} (seed {spec.seed}) on {device_name(device)}"
                   + (f" x {opts.world_size} processes" if opts.world_size > 1 else ""))
        result = _execute_guarded(suite, spec, resolved, run_dir, data, device, opts)
        if opts.rank == 0:
            result.update(store.environment())
            store.write_json(run_dir / store.RESULT, result)
            _say(opts, f"{tag} {run_dir.name}: {_summary(result)}")
        distributed.barrier()  # the other ranks wait while rank 0 evaluates and writes
        return result, None


def _execute_guarded(suite, spec, resolved, run_dir, data, device, opts) -> dict[str, Any]:
    try:
        return execute(suite, spec, resolved, run_dir, data, device, opts)
    except UserError:
        raise
    except Exception as e:  # one bad method must not take the suite down: record and go on
        if device.type == "cuda":
            torch.cuda.empty_cache()
        reason = f"{type(e).__name__}: {e}".splitlines()[0][:500]
        if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
            reason = "out of memory: " + reason
        step = getattr(e, "bench_step", None)
        if step is not None:
            reason += f" (at training step {step})"
        return {"schema_version": store.SCHEMA_VERSION, "run_id": run_dir.name, "spec_hash": store.spec_hash(resolved),
                "spec": dataclasses.asdict(spec), "config": resolved, "variant": spec.method, "status": "failed",
                "reason": reason, "train": {"status": "failed", "step": step},
                "traceback": traceback.format_exc()[-4000:]}


def _keep_previous(run_dir: Path) -> None:
    path = run_dir / store.RESULT
    n = 1
    while (run_dir / f"result.attempt{n}.json").exists():
        n += 1
    path.rename(run_dir / f"result.attempt{n}.json")


def _summary(result: dict[str, Any]) -> str:
    if result["status"] != "ok":
        return f"{result['status'].upper()}: {result['reason']}"
    m = result["metrics"]
    return (f"ok  kNN {m['knn_top1']:.2f}  linear {m['linear_top1']:.2f}  "
            f"({result['timings']['train_s']:.0f}s train, {result['timings']['views_per_s']:.0f} views/s)")


def _say(opts: Options, msg: str) -> None:
    if opts.rank == 0:
        print(msg, file=sys.stderr, flush=True)
