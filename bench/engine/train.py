"""ONE training loop for every method: data resident on the device, the suite's batched
augmentation, optimizer + warmup/cosine schedule, bf16 autocast on CUDA, per-epoch atomic
checkpoints that carry the spec hash, resume, a NaN guard, a per-step CSV log, timing and
peak memory.

Determinism: the model is initialised from the run seed; every epoch reseeds the data order
and the augmentation RNG from (seed, epoch), so a run resumed from an epoch checkpoint
replays exactly what the uninterrupted run would have done (bit-exact on CPU).

Learning curves: `TrainContext.on_epoch_end` (when set) is asked for a point before training
and after every epoch, outside the timed part of the epoch; the points travel in the
checkpoint, so a resumed run still returns all of them.
"""
from __future__ import annotations

import contextlib
import csv
import math
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from bench.engine.augment import Augment
from bench.errors import UserError
from bench.config import OptimConfig, TrainConfig
from methods.base import AUGMENTED, Method

CHECKPOINT = "checkpoint.pt"
LOG = "train_log.csv"


@dataclass
class TrainOutcome:
    status: str = "ok"                 # ok | diverged | failed
    reason: str | None = None
    step: int = 0
    epochs_done: int = 0
    train_s: float = 0.0
    views_per_s: float = 0.0
    peak_memory_mb: float = 0.0
    peak_memory_kind: str = ""
    resumed_from_epoch: int | None = None
    lr: float = 0.0                    # peak learning rate after batch-size scaling
    steps_per_epoch: int = 0
    global_batch_size: int = 0
    curve: list[dict] = field(default_factory=list)  # learning-curve points from TrainContext.on_epoch_end


@dataclass(frozen=True)
class TrainContext:
    """Where and as what one run trains (the recipe itself is TrainConfig + OptimConfig)."""
    run_dir: Path                      # checkpoint.pt and train_log.csv live here
    device: torch.device
    seed: int                          # data order and augmentation draws, per epoch
    spec_hash: str                     # carried by every checkpoint: a resume never loads another run's state
    world_size: int = 1                # torchrun processes; each takes a slice of every global batch
    rank: int = 0
    wrap: Callable[[Method], nn.Module] | None = None  # DDP wrapper under torchrun
    # learning-curve point after `epochs done` epochs (0 = the initialisation), main rank only; {} = no
    # point. It must leave the model in train mode and the global RNG untouched, so training is the same
    on_epoch_end: Callable[[int, Method], dict] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class TrainFailed(RuntimeError):
    """Training raised: `step` says where; the original exception is the __cause__."""

    def __init__(self, step: int) -> None:
        super().__init__(f"training failed at step {step}")
        self.step = step


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """Seed the epoch's random draws (augmentation, masks, noise) and return its shuffled order
    of the `n` training images (a function of seed and epoch alone, so a resumed run repeats it)."""
    torch.manual_seed(epoch_seed(seed, epoch))
    return torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))


def scaled_lr(optim: OptimConfig, global_batch: int) -> float:
    return optim.lr * global_batch / optim.lr_batch_size


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """Linear warmup to 1, then cosine to 0 (or constant)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(model: Method, optim: OptimConfig, lr: float) -> torch.optim.Optimizer:
    """Weight decay on weights only: biases and norm parameters (ndim <= 1) and what the method
    names in `no_weight_decay` (a ViT's tokens and position embedding; unless
    `optim.token_weight_decay`) are exempt."""
    params = model.optimized_parameters()
    exempt = set() if optim.token_weight_decay else model.no_weight_decay()
    decay = [p for p in params if p.ndim > 1 and id(p) not in exempt]
    no_decay = [p for p in params if p.ndim <= 1 or id(p) in exempt]
    groups = [{"params": decay, "weight_decay": optim.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum)
    if optim.name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(optim.beta1, optim.beta2))
    if optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(optim.beta1, optim.beta2))
    if optim.name == "lars":
        from bench.engine.lars import LARS
        return LARS(groups, lr=lr, momentum=optim.momentum, trust_coefficient=optim.lars_trust_coefficient,
                    clip_lr=optim.lars_clip_lr)
    raise UserError(f"unknown optimizer {optim.name!r}; choose one of: sgd, adam, adamw, lars")


def make_views(method: Method, xb: torch.Tensor, aug: Augment) -> list[torch.Tensor]:
    """The views a method declared, from one uint8 batch already on the device."""
    clean = None
    views = []
    for kind in method.views:
        if kind == AUGMENTED:
            views.append(aug(xb))
        else:
            if clean is None:
                clean = aug.normalize(xb)
            views.append(clean)
    return views


def prepare(method: Method, cfg: TrainConfig, device: torch.device) -> bool:
    """CUDA-only speedups that leave the maths unchanged; returns whether inputs go channels_last.

    channels_last lets cuDNN run NHWC convolutions on the tensor cores without layout
    transposes; `compile` compiles the backbone in place (`nn.Module.compile`), so parameter
    names, state_dict and checkpoints are the same as without it.
    """
    if device.type != "cuda":
        return False
    # torch sets _compiled_call_impl once a module is compiled in place: compile it only once
    if cfg.compile and not getattr(method.backbone, "_compiled_call_impl", None):
        method.backbone.compile()
    if cfg.channels_last:
        method.to(memory_format=torch.channels_last)
    return cfg.channels_last


def to_memory_format(views: list[torch.Tensor], channels_last: bool) -> list[torch.Tensor]:
    if not channels_last:
        return views
    return [v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v for v in views]


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a kill during the write leaves the previous checkpoint intact."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, expected_hash: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any unreadable file: refuse rather than guess
        raise UserError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}); "
                        "move it aside to restart that run from scratch") from None
    if not isinstance(state, dict) or state.get("spec_hash") != expected_hash:
        raise UserError(f"checkpoint {path} belongs to a different run spec; refusing to load it "
                        "(move it aside to restart that run)")
    return state


def _peak_memory(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process max RSS"


def train(method: Method, images: torch.Tensor, labels: torch.Tensor, aug: Augment,
          cfg: TrainConfig, optim: OptimConfig, ctx: TrainContext) -> TrainOutcome:
    """Train `method` on uint8 `images` (N,C,H,W) for cfg.epochs; returns the outcome.

    `images` may already live on the device (fast path) or on the CPU (pinned, copied per batch).
    Under DDP each rank takes a disjoint slice of every global batch (global batch =
    cfg.batch_size x world_size) and `ctx.wrap` returns the DDP-wrapped module. An exception
    during training is re-raised as TrainFailed(step) from it.
    """
    run_dir, device, seed, spec_hash = ctx.run_dir, ctx.device, ctx.seed, ctx.spec_hash
    world_size, rank, is_main, wrap = ctx.world_size, ctx.rank, ctx.is_main, ctx.wrap
    out = TrainOutcome()
    n = images.shape[0]
    per_rank = min(cfg.batch_size, n // world_size)
    global_batch = per_rank * world_size
    steps_per_epoch = n // global_batch  # drop_last: BatchNorm needs full batches
    if steps_per_epoch < 1:
        raise UserError(f"batch size {cfg.batch_size} x {world_size} exceeds the {n} training images")
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = steps_per_epoch * min(cfg.warmup_epochs, cfg.epochs)
    lr = scaled_lr(optim, global_batch)
    out.lr, out.steps_per_epoch, out.global_batch_size = lr, steps_per_epoch, global_batch
    channels_last = prepare(method, cfg, device)
    optimizer = build_optimizer(method, optim, lr)
    model = wrap(method) if wrap else method
    ckpt_path, log_path = run_dir / CHECKPOINT, run_dir / LOG

    start_epoch, step, elapsed = 0, 0, 0.0
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, spec_hash)
        method.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, step, elapsed = state["epoch"], state["step"], state["train_s"]
        out.resumed_from_epoch = start_epoch
        out.curve.extend(state.get("curve", []))
    log_rows = _read_log(log_path, max_step=step) if is_main else []

    use_amp = cfg.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    method.train()
    views_per_step = global_batch * len(method.views)
    bar = tqdm(total=total_steps, initial=step, desc=run_dir.name, unit="step", disable=not is_main or None,
               dynamic_ncols=True, leave=False, file=sys.stderr)
    log_file = _reopen_log(log_path, log_rows) if is_main else None
    writer = csv.DictWriter(log_file, fieldnames=list(log_rows[0]), extrasaction="ignore") if log_rows else None
    lag = device.type == "cuda"

    def read(p: _Pending, step_index: int) -> float:
        """Read step `step_index` (0-based) and log it on the main rank; returns its loss, or the
        first non-finite logged term (the AAE's adversarial losses are stepped, too).
        views/s is measured between consecutive reads: the loop's steady rate on any device."""
        nonlocal t_mark, writer
        values = p.read()
        now = time.perf_counter()
        bad = next((v for v in values.values() if not math.isfinite(v)), None)
        if is_main and bad is None:
            row = {"step": step_index + 1, "epoch": p.epoch, "lr": p.lr, **values,
                   "views_per_s": views_per_step / max(now - t_mark, 1e-9)}
            writer = _write_row(log_file, writer, row)
            bar.update(1)
            bar.set_postfix(loss=f"{values['loss']:.4f}", refresh=False)
        t_mark = now
        return values["loss"] if bad is None else bad

    scope = contextlib.ExitStack()
    try:
        if world_size > 1:  # each rank: its slice of the global batch's augmentation draws
            from bench.engine.distributed import global_batch_augmentation
            scope.enter_context(global_batch_augmentation(aug, world_size, rank))
        if out.resumed_from_epoch is None:
            _curve_point(ctx, 0, method, out)
        for epoch in range(start_epoch, cfg.epochs):
            order = epoch_order(seed, epoch, n)[: steps_per_epoch * global_batch]
            order = order.view(steps_per_epoch, world_size, per_rank)[:, rank].to(images.device)
            t_epoch = t_mark = time.perf_counter()
            pending: _Pending | None = None
            for i in range(steps_per_epoch):
                idx = order[i]
                xb = images.index_select(0, idx).to(device, non_blocking=True)
                yb = labels.index_select(0, idx).to(device, non_blocking=True)
                factor = lr_factor(step, warmup_steps, total_steps, optim.schedule)
                for g in optimizer.param_groups:
                    g["lr"] = lr * factor
                method.on_step_start(step, total_steps)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    views = to_memory_format(make_views(method, xb, aug), channels_last)
                    loss, logs = _step(model, views, yb)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    nn.utils.clip_grad_norm_(method.optimized_parameters(), cfg.grad_clip)
                optimizer.step()
                # outside autocast: the hook runs its own backward passes and optimizer steps
                logs = {**logs, **method.after_optimizer_step(views, yb)}  # e.g. the AAE's regularization phase
                current = _Pending.of(loss, logs, world_size, epoch + (i + 1) / steps_per_epoch, lr * factor)
                # On the GPU the loss of step s is read while step s+1 is queued (one step of lag), so
                # the host never waits for the device; on the CPU it is read at once. A non-finite
                # loss stops the run before its checkpoint: the step it poisoned is never saved.
                ready, pending = (pending, current) if lag else (current, None)
                if ready is not None:
                    ready_step = step if ready is current else step - 1
                    loss_value = read(ready, ready_step)
                    if not math.isfinite(loss_value):
                        return _diverged(out, loss_value, ready_step, epoch,
                                         elapsed + time.perf_counter() - t_epoch, views_per_step, device)
                method.on_step_end(step, total_steps)
                step += 1
            if pending is not None:  # the epoch's last step, before its checkpoint
                loss_value = read(pending, step - 1)
                if not math.isfinite(loss_value):
                    return _diverged(out, loss_value, step - 1, epoch, elapsed + time.perf_counter() - t_epoch,
                                     views_per_step, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed += time.perf_counter() - t_epoch  # wall time of the epoch's steps, device included
            _curve_point(ctx, epoch + 1, method, out)  # after `elapsed`: its time is not training time
            if is_main:
                log_file.flush()
                save_checkpoint(ckpt_path, {"spec_hash": spec_hash, "epoch": epoch + 1, "step": step,
                                            "train_s": elapsed, "model": method.state_dict(),
                                            "optimizer": optimizer.state_dict(), "curve": out.curve})
                if bar.disable:
                    print(f"  {run_dir.name} epoch {epoch + 1}/{cfg.epochs} loss {loss_value:.4f} "
                          f"({time.perf_counter() - t_epoch:.1f}s)", file=sys.stderr, flush=True)
        out.epochs_done = cfg.epochs
        return _finish(out, elapsed, step, views_per_step, device)
    except UserError:
        raise
    except Exception as e:  # the record says where a failed run stopped
        raise TrainFailed(step) from e
    finally:
        scope.close()
        bar.close()
        if log_file is not None:
            log_file.close()


def _curve_point(ctx: TrainContext, epochs_done: int, method: Method, out: TrainOutcome) -> None:
    """Record the learning-curve point `ctx.on_epoch_end` gives after `epochs_done` epochs, if any."""
    if ctx.on_epoch_end is None or not ctx.is_main:
        return
    point = ctx.on_epoch_end(epochs_done, method)
    if point:
        out.curve.append(point)


def _step(model: nn.Module, views: list[torch.Tensor], labels: torch.Tensor):
    """Under DDP the wrapped module's forward is the training step (so gradients sync)."""
    if isinstance(model, Method):
        return model.training_step(views, labels)
    return model(views, labels)


@dataclass
class _Pending:
    """One step's loss and logged terms, copied to the host without waiting for the device."""
    epoch: float
    lr: float
    keys: list[str]
    values: torch.Tensor               # on the host (filled once `event` has completed)
    event: "torch.cuda.Event | None"
    floats: dict[str, float]

    @classmethod
    def of(cls, loss: torch.Tensor, logs: dict, world_size: int, epoch: float, lr: float) -> "_Pending":
        tensors = {"loss": loss}
        floats = {}
        for k, v in logs.items():
            if torch.is_tensor(v):
                tensors[k] = v
            else:
                floats[k] = float(v)
        packed = torch.stack([t.detach().float().reshape(()) for t in tensors.values()])
        packed = _global_mean(packed, world_size)  # every rank sees the same values
        event = None
        if packed.is_cuda:
            host = packed.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = packed
        return cls(epoch, lr, list(tensors), host, event, floats)

    def read(self) -> dict[str, float]:
        if self.event is not None:
            self.event.synchronize()
        return {**dict(zip(self.keys, self.values.tolist())), **self.floats}


def _diverged(out: TrainOutcome, loss_value: float, step: int, epoch: int, elapsed: float,
              views_per_step: int, device: torch.device) -> TrainOutcome:
    out.status = "diverged"
    out.reason = f"non-finite loss ({loss_value}) at step {step} (epoch {epoch})"
    out.epochs_done = epoch
    return _finish(out, elapsed, step, views_per_step, device)


def _finish(out: TrainOutcome, elapsed: float, step: int, views_per_step: int, device: torch.device) -> TrainOutcome:
    out.step, out.train_s = step, elapsed
    out.views_per_s = step * views_per_step / elapsed if elapsed > 0 else 0.0
    out.peak_memory_mb, out.peak_memory_kind = _peak_memory(device)
    return out


def _write_row(f, writer, row: dict):
    if f is None:
        return writer
    if writer is None:
        writer = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
        writer.writeheader()
    writer.writerow(row)
    return writer


def _read_log(path: Path, max_step: int) -> list[dict]:
    """Rows of an interrupted run's log up to its checkpoint (later rows are replayed).

    Steps are 1, 2, 3, ...: reading stops at the first row that breaks that sequence or is
    incomplete (a kill can leave a half-written last line whose step reads as a smaller number).
    """
    if not path.exists() or max_step == 0:
        return []
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            if len(rows) >= max_step or None in r.values() or None in r or r.get("step") != str(len(rows) + 1):
                break
            rows.append(r)
    return rows


def _reopen_log(path: Path, rows: list[dict]):
    """Atomically replace the log by the rows kept at resume, then append to it: a second kill
    during the rewrite leaves the previous log intact, never a truncated one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", newline="") as f:
        if rows:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    os.replace(tmp, path)
    return open(path, "a", newline="")


def _global_mean(loss: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size == 1:
        return loss.detach()
    from bench.engine.distributed import mean_over_ranks
    return mean_over_ranks(loss.detach().float())
