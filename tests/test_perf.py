"""The fast path and its proof: the fused augmentation gives kornia's views, and
`python -m bench perf` refuses bad input (the real numbers are in docs/performance.md)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bench.engine.augment import Augment, AugConfig
from bench.suites import SUITES

CONFIGS = {  # name -> (AugConfig, channels, size)
    "fmnist-ci": (SUITES.get("fmnist-ci").aug, 1, 28),
    "cifar10-all": (SUITES.get("cifar10-all").aug, 3, 32),
    "quick": (SUITES.get("quick").aug, 1, 8),
    "blur+solarize": (replace(AugConfig(), blur_p=0.5, solarize_p=0.2), 3, 32),
    "no-jitter-no-flip": (replace(AugConfig(), jitter_p=0.0, hflip_p=0.0), 3, 16),
    "resize-up": (AugConfig(), 3, 24),  # output larger than input
}


def _pair(cfg: AugConfig, channels: int, size: int, in_size: int | None = None):
    mean, std = (0.4,) * channels, (0.3,) * channels
    fused = Augment(cfg, size, channels, mean, std, impl="fused")
    ref = Augment(cfg, size, channels, mean, std, impl="kornia")
    g = torch.Generator().manual_seed(1)
    n = in_size or size
    x = torch.randint(0, 256, (64, channels, n, n), dtype=torch.uint8, generator=g)
    return fused, ref, x


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fused_augment_gives_kornias_views(name):
    """Same seed -> same parameters (kornia's own generators draw them, in the same order) ->
    the same views to float rounding. This is the equivalence of the two implementations,
    parameter distributions included, not just of their statistics."""
    cfg, channels, size = CONFIGS[name]
    fused, ref, x = _pair(cfg, channels, size, in_size=16 if name == "resize-up" else None)
    for seed in range(3):
        torch.manual_seed(seed)
        a = fused(x)
        after_fused = torch.rand(1)
        torch.manual_seed(seed)
        b = ref(x)
        after_ref = torch.rand(1)
        assert a.shape == b.shape == (64, channels, size, size)
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
        assert after_fused == after_ref  # both consumed exactly the same random numbers


def test_fused_views_vary_per_sample_and_cover_the_distribution():
    """Per-sample parameters: identical input images get different views; roughly half are
    flipped; about jitter_p of them are colour-jittered."""
    cfg = AugConfig(crop_scale_min=1.0, jitter_p=0.0, hflip_p=0.5, grayscale_p=0.0)  # flip only
    aug = Augment(cfg, 16, 1, (0.0,), (1.0,))
    ramp = torch.arange(16, dtype=torch.uint8).repeat(16, 1) * 16  # left-to-right ramp
    x = ramp.expand(2000, 1, 16, 16).contiguous()
    torch.manual_seed(0)
    out = aug(x)
    flipped = (out[:, 0, 0, 0] > out[:, 0, 0, -1]).float().mean().item()
    assert 0.45 < flipped < 0.55
    jit = Augment(AugConfig(crop_scale_min=1.0, hflip_p=0.0, contrast=0.0), 16, 1, (0.0,), (1.0,))
    y = jit(torch.full((4000, 1, 16, 16), 128, dtype=torch.uint8))
    changed = ((y[:, 0, 0, 0] - 128 / 255).abs() > 1e-6).float().mean().item()
    assert 0.76 < changed < 0.84  # jitter_p = 0.8


def test_augment_stays_float32_under_autocast():
    cfg, channels, size = CONFIGS["cifar10-all"]
    fused, _, x = _pair(cfg, channels, size)
    torch.manual_seed(0)
    plain = fused(x)
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = fused(x)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain)


def test_augment_rejects_unknown_impl():
    with pytest.raises(ValueError, match="impl"):
        Augment(AugConfig(), 8, 1, (0.5,), (0.5,), impl="pil")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fused_augment_on_cuda_matches_cpu():
    cfg, channels, size = CONFIGS["cifar10-all"]
    fused, _, x = _pair(cfg, channels, size)
    torch.manual_seed(0)
    cpu = fused(x)
    torch.manual_seed(0)
    gpu = fused.cuda()(x.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


def test_perf_bad_input_is_a_user_error(capsys):
    from bench.cli import main
    assert main(["perf", "--method", "nosuch"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown method 'nosuch'")
    assert main(["perf", "--backbone", "nosuch"]) == 2
    assert "unknown backbone 'nosuch'" in capsys.readouterr().err
    assert main(["perf", "--method", "pixels"]) == 2
    assert "does not train" in capsys.readouterr().err
