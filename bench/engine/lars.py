"""LARS (You et al. 2017, https://arxiv.org/abs/1708.03888) with the optional learning-rate
clipping of solo-learn's CIFAR recipes.

Why by hand: lightly's `LARS` (the official VICReg form: trust coefficient 0.001, no
clipping) has no clipping, and solo-learn, whose CIFAR VICReg recipe pairs lr 0.3 with trust
coefficient 0.02 *and* clipping, is not a dependency. With `clip_lr=False` this optimizer
takes exactly lightly's steps (tests/test_methods.py checks it).

Per parameter with weight decay (groups with weight_decay 0, i.e. biases and norms, are
plain SGD with momentum, as in both references):
    local = trust * ||w|| / (||g|| + wd * ||w|| + eps)
    clip_lr: local = min(local / lr, 1)          (the step is then at most lr * (g + wd w))
    d = local * (g + wd * w);  buf = momentum * buf + d;  w -= lr * buf
"""
from __future__ import annotations

from typing import Iterable

import torch


class LARS(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, clip_lr: bool = False, eps: float = 1e-8) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        trust_coefficient=trust_coefficient, clip_lr=clip_lr, eps=eps)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 (torch's signature)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, lr = group["weight_decay"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if wd != 0:
                    w_norm, g_norm = torch.norm(p), torch.norm(p.grad)
                    if w_norm != 0 and g_norm != 0:
                        local = group["trust_coefficient"] * w_norm / (g_norm + w_norm * wd + group["eps"])
                        if group["clip_lr"]:
                            local = torch.clamp(local / lr, max=1.0)
                        d_p = d_p.add(p, alpha=wd) * local
                if group["momentum"] != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        state["momentum_buffer"] = torch.clone(d_p).detach()
                    else:
                        state["momentum_buffer"].mul_(group["momentum"]).add_(d_p)
                    d_p = state["momentum_buffer"]
                p.add_(d_p, alpha=-lr)
        return loss
