"""One harness training step (views from uint8 + forward + backward + optimizer step) per
method, on the fmnist-ci shapes (resnet-tiny, 28px, 1 channel, batch 256)."""
from __future__ import annotations

import pytest
import torch

import methods
from bench.engine.augment import Augment
from bench.suites import resolve
from bench.engine.execute import build_method
from bench.suites import SUITES, RunSpec
from bench.engine.train import _step, build_optimizer, make_views, scaled_lr
from methods.base import DataInfo

SUITE = SUITES.get("fmnist-ci")


@pytest.mark.parametrize("name", methods.METHODS.names())
def test_train_step(benchmark, name):
    info = DataInfo(1, SUITE.image_size, 10, (0.286,), (0.353,))
    run = resolve(SUITE, RunSpec(SUITE.name, name, 0), {})
    model = build_method(run, info, torch.device("cpu"))
    optim = run.optim
    batch = SUITE.train.batch_size
    opt = build_optimizer(model, optim, scaled_lr(optim, batch))
    aug = Augment(run.aug, info.size, info.channels, info.mean, info.std)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch, 1, info.size, info.size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    model.train()

    def step():
        loss, _ = _step(model, make_views(model, x, aug), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        model.on_step_end(0, 100)
        return loss.item()

    loss = benchmark.pedantic(step, rounds=3, warmup_rounds=1)
    assert loss == loss  # finite enough to compare with itself
    benchmark.extra_info["views_per_step"] = batch * len(model.views)
