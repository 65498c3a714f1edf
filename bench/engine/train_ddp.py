"""Distributed data parallel glue (torchrun): the DDP module whose forward is the training step,
and SyncBatchNorm (torch's on CUDA; a small all-reduce BatchNorm on CPU/gloo, where torch's
SyncBatchNorm refuses to run).

The training loop (bench/engine/train.py) calls `wrap(method)` once per run; under DDP every rank
holds the full model, computes the step on its slice of the global batch, and DDP averages the
gradients. The optimizer is built before wrapping: the conversions below keep the very same
Parameter objects, so it needs no rebuild, and state_dict keys do not change (checkpoints are
interchangeable between single-process and DDP runs).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from bench.suites import TrainConfig


class TrainingStep(nn.Module):
    """DDP syncs gradients of what its forward computed, so forward IS method.training_step."""

    def __init__(self, method: nn.Module) -> None:
        super().__init__()
        self.method = method

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor):
        return self.method.training_step(views, labels)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum over ranks is the sum of the gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm (any input rank >= 2) whose training statistics are those of the global batch.

    Sums over the batch are combined with a differentiable all-reduce (the backward all-reduces
    the gradients of the statistics), so forward and backward equal those of one process
    normalizing the whole global batch. Two-pass (mean, then centred squares) for accuracy.
    Eval mode, or a single process, is plain BatchNorm with the running statistics.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        self._check_input_dim(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        n = x.numel() // x.shape[1] * dist.get_world_size()  # every rank holds an equal slice
        mean = all_reduce(x.sum(dims)) / n
        xc = x - mean.view(shape)
        var = all_reduce((xc * xc).sum(dims)) / n  # biased, used to normalize
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / max(1, n - 1)), alpha=m)
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm{1,2,3}d below `module` by GlobalBatchNorm, sharing its
    parameters and buffers (in place for children; returns the converted module)."""
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, (GlobalBatchNorm, nn.SyncBatchNorm)):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_global_batchnorm(child))
    return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on CUDA (fused kernels), GlobalBatchNorm elsewhere."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return convert_global_batchnorm(module)


def ddp_wrapper(cfg: TrainConfig, device: torch.device) -> Callable[[nn.Module], nn.Module]:
    """`wrap(method)` for bench.engine.train.train under torchrun: (optionally SyncBN-converted)
    method inside DistributedDataParallel, forward = training_step."""

    def wrap(method: nn.Module) -> nn.Module:
        if cfg.sync_bn:
            convert_sync_batchnorm(method, device)
        ids = None
        if device.type == "cuda":
            ids = [device.index if device.index is not None else torch.cuda.current_device()]
        step = TrainingStep(method)
        # DDP syncs exactly what the harness optimizer updates; parameters a method updates itself
        # (the AAE discriminator, stepped in `after_optimizer_step` outside DDP's forward with its
        # own cross-rank averaging) are left out. They are registered submodules, so without this
        # DDP would wait for their gradients in every step; DDP has no public way to leave
        # parameters out, hence its private (long-standing) helper.
        optimized = {id(p) for p in method.optimized_parameters()}
        own = [f"method.{n}" for n, p in method.named_parameters() if p.requires_grad and id(p) not in optimized]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(step, own)
        return DistributedDataParallel(step, device_ids=ids)

    return wrap
