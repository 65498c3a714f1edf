"""The suite augmentation on one batch: the fused implementation and kornia's modules."""
from __future__ import annotations

import pytest
import torch

from bench.engine.augment import Augment
from bench.suites import SUITES

CASES = {  # suite -> (channels, size)
    "fmnist-ci": (1, 28),
    "cifar10-all": (3, 32),
}


@pytest.mark.parametrize("impl", ["fused", "kornia"])
@pytest.mark.parametrize("suite", list(CASES))
def test_augment_batch256(benchmark, suite, impl):
    channels, size = CASES[suite]
    aug = Augment(SUITES.get(suite).aug, size, channels, (0.5,) * channels, (0.25,) * channels, impl=impl)
    x = torch.randint(0, 256, (256, channels, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    out = benchmark(aug, x)
    assert out.shape == (256, channels, size, size)
    benchmark.extra_info["views_per_call"] = 256
