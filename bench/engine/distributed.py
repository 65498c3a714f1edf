"""Scale-out helpers: torchrun process groups, rank-0 decisions, and suite shards.

Under `torchrun --nproc_per_node N -m bench run ...` every process runs the same suite. Rank 0
decides what to do with each run (skip, wait, train) and tells the others; every rank trains
(DDP, bench/engine/train_ddp.py) on its slice of each global batch; only rank 0 evaluates and writes
results, checkpoints and logs while the others wait at a barrier. `--shard i/N` is the other
axis: N independent jobs (e.g. a SLURM array) each run a disjoint slice of the suite.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

import torch
import torch.distributed as dist

from bench.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """This process's place among the torchrun processes (1 process, rank 0 without torchrun)."""
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None


def from_env() -> World:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK (absent: a single process)."""
    if "WORLD_SIZE" not in os.environ and "RANK" not in os.environ:
        return World()
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise UserError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (they are set by torchrun; "
                        "start multi-process runs with `torchrun --nproc_per_node N -m bench run ...`)") from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise UserError(f"inconsistent torchrun environment: RANK={rank} WORLD_SIZE={world_size} "
                        f"LOCAL_RANK={local_rank}")
    return World(world_size, rank, local_rank)


def setup(device: str) -> World:
    """Join the torchrun process group if there is one: nccl on CUDA (one GPU per LOCAL_RANK),
    gloo on CPU. Returns World() for a plain single-process run."""
    w = from_env()
    if w.world_size == 1:
        return w
    if not dist.is_available():
        raise UserError("this torch build has no torch.distributed; run without torchrun")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise UserError("--device cuda under torchrun: no CUDA device is available; use --device cpu")
        if w.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {w.local_rank} but only {torch.cuda.device_count()} CUDA device(s); "
                            "use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(w.local_rank)
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return World(w.world_size, w.rank, w.local_rank, backend)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable objects; a no-op in a single process)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    """All-reduced mean of a (detached) tensor: the global-batch loss every rank agrees on."""
    if not active():
        return t
    t = t.detach().clone()
    dist.all_reduce(t)
    return t / dist.get_world_size()


# ---- augmentation under DDP ------------------------------------------------------------------
_NOT_PER_SAMPLE = {"forward_input_shape", "order"}  # kornia parameters that are not per sample


@contextmanager
def global_batch_augmentation(aug: torch.nn.Module, world_size: int, rank: int) -> Iterator[None]:
    """Make every kornia module inside `aug` draw its random parameters for the GLOBAL batch
    (world_size x the local batch) and keep this rank's slice.

    Each rank then consumes the RNG stream exactly like a single process augmenting the whole
    global batch: rank r gets the views that the single process gives to rows
    [r*B, (r+1)*B) of it, and different ranks never share augmentation draws.
    """
    from kornia.augmentation.base import _BasicAugmentationBase

    ops = [m for m in aug.modules() if isinstance(m, _BasicAugmentationBase)]

    def sliced(draw):
        def forward_parameters(batch_shape: torch.Size) -> dict[str, Any]:
            b = batch_shape[0]
            params = draw(torch.Size((b * world_size, *batch_shape[1:])))
            out = {}
            for key, value in params.items():
                if key == "forward_input_shape":
                    value = torch.tensor(tuple(batch_shape), dtype=value.dtype)
                elif key not in _NOT_PER_SAMPLE and isinstance(value, torch.Tensor) and value.dim() > 0 \
                        and value.shape[0] == b * world_size:
                    value = value[rank * b:(rank + 1) * b]
                out[key] = value
            return out
        return forward_parameters

    for op in ops:
        op.forward_parameters = sliced(op.forward_parameters)  # instance attribute shadows the method
    try:
        yield
    finally:
        for op in ops:
            del op.forward_parameters


# ---- shards -----------------------------------------------------------------------------------
def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' -> (I, N) with 0 <= I < N; UserError otherwise."""
    index, sep, count = str(text).strip().partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or n < 1 or not 0 <= i < n:
        raise UserError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4 "
                        "(SLURM: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-(N-1))")
    return i, n


def shard(items: Sequence[T], index: int, count: int) -> list[T]:
    """Slice `index` of `count`: round-robin over the stable order, so slices are disjoint,
    together cover `items`, and differ in size by at most one."""
    return list(items[index::count])
