"""One run: build the method from its ResolvedRun, train it, evaluate the frozen encoder and
return its result record (status ok | diverged | failed). A run that raises is recorded as
failed with its reason, so one bad method never takes the suite down."""
from __future__ import annotations

import contextlib
import dataclasses
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

import methods
from bench import backbones
from bench.config import ResolvedRun, SCHEMA_VERSION
from bench.engine.augment import Augment, normalize
from bench.engine.data import SuiteData, fixed_subset
from bench.engine.train import CHECKPOINT, TrainContext, TrainFailed, TrainOutcome, save_checkpoint, train
from bench.errors import UserError
from bench.eval import intervals
from bench.eval.evaluate import EvalSet, evaluate, knn_accuracy
from methods.base import DataInfo, Method


def build_method(run: ResolvedRun, info: DataInfo, device: torch.device) -> Method:
    """The run's method on its backbone, initialised from the run seed."""
    cls = methods.get(run.method)
    if not dataclasses.is_dataclass(run.method_config):
        raise UserError(f"run {run.run_id}: its {run.method} config ({', '.join(sorted(run.method_config))}) does not "
                        f"match this version's {cls.Config.__name__}; it cannot be rebuilt here")
    torch.manual_seed(run.seed)  # the seed fixes the initialisation
    backbone = backbones.get(run.backbone).build(info.channels, info.size)
    return cls(run.method_config, backbone, info).to(device)


def build_augment(run: ResolvedRun, info: DataInfo, device: torch.device) -> Augment:
    return Augment(run.aug, info.size, info.channels, info.mean, info.std).to(device)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: choose auto, cpu or cuda")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    """As stored in `timings.device`; the CPU thread count is part of what makes a run bit-exact."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def execute(run: ResolvedRun, run_dir: Path, data: SuiteData, device: torch.device,
            world_size: int = 1, rank: int = 0) -> dict[str, Any]:
    """Train and evaluate one run; returns the result record (status ok/diverged/failed)."""
    try:
        return _execute(run, run_dir, data, device, world_size, rank)
    except UserError:
        raise
    except Exception as e:  # one bad method must not take the suite down: record and go on
        if device.type == "cuda":
            torch.cuda.empty_cache()
        cause = e.__cause__ if isinstance(e, TrainFailed) and e.__cause__ is not None else e
        reason = f"{type(cause).__name__}: {cause}".splitlines()[0][:500]
        if isinstance(cause, (torch.OutOfMemoryError, MemoryError)):
            reason = "out of memory: " + reason
        step = e.step if isinstance(e, TrainFailed) else None
        if step is not None:
            reason += f" (at training step {step})"
        return {**_header(run, run_dir), "status": "failed", "reason": reason,
                "train": {"status": "failed", "step": step}, "traceback": traceback.format_exc()[-4000:]}


def _header(run: ResolvedRun, run_dir: Path) -> dict[str, Any]:
    spec = {"suite": run.suite, "method": run.method, "seed": run.seed, "aug_mode": run.aug_mode}
    return {"schema_version": SCHEMA_VERSION, "run_id": run_dir.name, "spec_hash": run.spec_hash,
            "spec": spec, "config": run.to_json(), "variant": run.method}


def _execute(run: ResolvedRun, run_dir: Path, data: SuiteData, device: torch.device,
             world_size: int, rank: int) -> dict[str, Any]:
    from bench.engine.train_ddp import ddp_wrapper  # noqa: local import keeps single-process start-up light
    result: dict[str, Any] = {**_header(run, run_dir), "status": "ok", "reason": None}
    t0 = time.perf_counter()
    method = build_method(run, data.info, device)
    result["variant"] = method.variant
    aug = build_augment(run, data.info, device)
    result["augmentation"] = run.aug.describe()
    outcome = TrainOutcome()
    if methods.get(run.method).trains:
        on_epoch_end, result["curve_protocol"] = learning_curve(run, data, aug, device)
        ctx = TrainContext(run_dir=run_dir, device=device, seed=run.seed, spec_hash=run.spec_hash,
                           world_size=world_size, rank=rank,
                           wrap=ddp_wrapper(run.train, device) if world_size > 1 else None, on_epoch_end=on_epoch_end)
        outcome = train(method, data.images, data.labels, aug, run.train, run.optim, ctx)
        result["curve"] = outcome.curve
    elif rank == 0:
        save_checkpoint(run_dir / CHECKPOINT, {"spec_hash": run.spec_hash, "epoch": 0, "step": 0, "train_s": 0.0,
                                               "model": method.state_dict()})
    result["train"] = dataclasses.asdict(outcome)
    result["status"], result["reason"] = outcome.status, outcome.reason
    if outcome.status != "ok" or rank != 0:
        return result
    t1 = time.perf_counter()
    method.eval()
    predictions: dict = {}
    result.update(evaluate(method.encode, data.main, data.transfer, run.eval, aug, device, run.seed, predictions))
    # per-image correctness -> predictions.npz, and each metric's bootstrap interval (issue #17)
    result.update(intervals.record(run_dir, predictions["correct"], predictions["labels"]))
    save_reconstructions(method, data, run_dir, device)
    result["timings"] = {"train_s": outcome.train_s, "views_per_s": outcome.views_per_s,
                         "peak_memory_mb": outcome.peak_memory_mb, "peak_memory_kind": outcome.peak_memory_kind,
                         "eval_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0,
                         "device": device_name(device)}
    return result


CurvePoint = Callable[[int, Method], dict]


def learning_curve(run: ResolvedRun, data: SuiteData, aug: Augment,
                   device: torch.device) -> tuple[CurvePoint | None, str | None]:
    """The run's learning-curve callback (TrainContext.on_epoch_end) and its protocol, or
    (None, None) when eval.curve_every is 0. A point is kNN top-1 at the suite's k and T, with the
    final evaluation's bank (the un-augmented eval train set) and a fixed test subset as queries,
    after every curve_every epochs, at the last epoch and at the initialisation (epoch 0)."""
    cfg, last = run.eval, run.train.epochs
    if cfg.curve_every < 1:
        return None, None
    queries = fixed_subset(data.main.test, cfg.curve_test_subset)
    es = EvalSet(data.main.name, data.main.train, queries)

    def point(epochs_done: int, method: Method) -> dict:
        if epochs_done % cfg.curve_every and epochs_done != last:
            return {}
        with _eval_mode(method):
            return {"epoch": epochs_done, "knn_top1": knn_accuracy(method.encode, es, cfg, aug.mean, aug.std, device)}

    which = (f"{len(queries)} class-balanced test images (fixed, seed 0)" if len(queries) < len(data.main.test)
             else f"all {len(queries)} test images")
    protocol = (f"kNN k={cfg.knn_k} T={cfg.knn_t:g}, bank: {len(es.train)} un-augmented train images, "
                f"queries: {which}, every {cfg.curve_every} epoch(s), the last and epoch 0 (initialisation)")
    return point, protocol


@contextlib.contextmanager
def _eval_mode(method: Method) -> Iterator[None]:
    """Eval mode for a measurement, then the mode the model was in (BatchNorm statistics untouched)."""
    was_training = method.training
    method.eval()
    try:
        yield
    finally:
        method.train(was_training)


@torch.no_grad()
def save_reconstructions(method: Method, data: SuiteData, run_dir: Path, device: torch.device, n: int = 16) -> None:
    """Autoencoders: originals (top row) over reconstructions (bottom row) as recon.png."""
    from torchvision.utils import save_image
    x = normalize(data.main.test.images[:n].to(device), data.info.mean, data.info.std)
    rec = method.reconstruct(x)
    if rec is None:
        return
    m = torch.tensor(data.info.mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(data.info.std, device=device).view(1, -1, 1, 1)
    grid = torch.cat([x, rec.float()]) * s + m
    save_image(grid.clamp(0, 1).cpu(), run_dir / "recon.png", nrow=n)
