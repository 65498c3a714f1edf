"""Distributed data parallel glue (torchrun). Filled in by the scale-out work."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bench.suites import TrainConfig


def ddp_wrapper(cfg: TrainConfig, device: torch.device) -> Callable[[nn.Module], nn.Module]:
    raise NotImplementedError("DDP is not wired yet")
