"""Hand-written losses against values worked out by hand on tiny tensors.

Each expected number is written out with the arithmetic that produced it, so a reader can
check it without running anything.
"""
from __future__ import annotations

import math

import pytest
import torch

from methods.aae import discriminator_loss, generator_loss
from methods.autoencoder import gaussian_nll, kl_standard_normal, masked_patch_loss

HALF_LOG_2PI = 0.9189385332  # 0.5 * log(2 pi)


def test_gaussian_nll_fixed_log_scale_zero():
    # one 1x1x2 "image": x_hat = (0, 1), target = (1, 1); sigma = exp(0/2) + 1e-6 ~ 1
    # pixel 1: 0.5 * 1^2 + log 1 + 0.5 log 2pi = 0.5 + 0.9189385 = 1.4189385
    # pixel 2: 0.5 * 0^2 + log 1 + 0.5 log 2pi =       0.9189385
    # summed over C x H x W: 2.3378771
    x_hat = torch.tensor([[[[0.0, 1.0]]]])
    target = torch.tensor([[[[1.0, 1.0]]]])
    out = gaussian_nll(x_hat, target, log_scale=0.0)
    assert out.shape == (1,)
    assert out.item() == pytest.approx(2.3378771, abs=1e-5)


def test_gaussian_nll_other_scale_and_per_sample():
    # log_scale = 2 log 2 -> sigma = exp(log 2) = 2
    # sample 0: errors (1, 0): [0.5 * (1/2)^2 + log 2 + 0.9189385] + [log 2 + 0.9189385]
    #         = 0.125 + 2 * 0.6931472 + 2 * 0.9189385 = 3.3491714
    # sample 1: errors (2, 2): 2 * [0.5 * (2/2)^2 + 0.6931472 + 0.9189385] = 4.2241714
    x_hat = torch.zeros(2, 1, 1, 2)
    target = torch.tensor([[[[1.0, 0.0]]], [[[2.0, -2.0]]]])
    out = gaussian_nll(x_hat, target, log_scale=2 * math.log(2))
    assert out.tolist() == pytest.approx([3.3491714, 4.2241714], abs=1e-5)


def test_gaussian_nll_is_half_sse_plus_constant():
    # with log_scale 0 the loss is 0.5 * SSE + (C*H*W) * 0.5 log 2pi (up to the 1e-6 in sigma)
    torch.manual_seed(0)
    x_hat, target = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    expected = 0.5 * (x_hat - target).pow(2).sum((1, 2, 3)) + 32 * HALF_LOG_2PI
    assert torch.allclose(gaussian_nll(x_hat, target), expected, atol=1e-3)


def test_kl_standard_normal_by_hand():
    # KL(N(mu, s^2) || N(0, 1)) = 0.5 (s^2 + mu^2) - 0.5 - log s, summed over dimensions
    # dim 1: mu 0, s 1 -> 0.5 * 1 - 0.5 - 0            = 0
    # dim 2: mu 1, s 2 -> 0.5 * (4 + 1) - 0.5 - log 2   = 1.3068528
    mu = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    std = torch.tensor([[1.0, 2.0], [1.0, 1.0]])
    assert kl_standard_normal(mu, std).tolist() == pytest.approx([1.3068528, 0.0], abs=1e-6)


def test_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, std = torch.randn(4, 3), torch.rand(4, 3) + 0.1
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(mu, std),
                                            torch.distributions.Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(kl_standard_normal(mu, std), ref, atol=1e-6)


def test_discriminator_loss_by_hand():
    # BCE-with-logits: real -> log(1 + e^-l), fake -> log(1 + e^l)
    # logits 0 / 0: log 2 + log 2 = 1.3862944
    assert discriminator_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(1.3862944, abs=1e-6)
    # real 2, fake -1: log(1 + e^-2) + log(1 + e^-1) = 0.1269280 + 0.3132617 = 0.4401897
    assert discriminator_loss(torch.tensor([2.0]), torch.tensor([-1.0])).item() == pytest.approx(0.4401897, abs=1e-6)


def test_generator_loss_by_hand():
    # the encoder wants its codes called real: -log sigmoid(l) = log(1 + e^-l)
    # l = 0: log 2 = 0.6931472; l = -1: log(1 + e) = 1.3132617; batch mean = 1.0032044
    assert generator_loss(torch.tensor([0.0, -1.0])).item() == pytest.approx(1.0032044, abs=1e-6)


def test_masked_patch_loss_raw_pixels():
    # two patches of two pixels; only patch 0 is masked (scored)
    # patch 0: pred (1, 2) vs target (0, 0): mean squared error (1 + 4) / 2 = 2.5
    # patch 1: visible, its large error (100) must not count
    pred = torch.tensor([[[1.0, 2.0], [10.0, 10.0]]])
    patches = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1.0, 0.0]])
    assert masked_patch_loss(pred, patches, mask, norm_pix=False).item() == pytest.approx(2.5)


def test_masked_patch_loss_averages_over_masked_patches():
    # patch errors 2.5 and 0.5 (both masked), a third visible one: (2.5 + 0.5) / 2 = 1.5
    pred = torch.tensor([[[1.0, 2.0], [1.0, 0.0], [9.0, 9.0]]])
    patches = torch.zeros(1, 3, 2)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert masked_patch_loss(pred, patches, mask, norm_pix=False).item() == pytest.approx(1.5)


def test_masked_patch_loss_normalized_pixel_targets():
    # norm_pix: target patch (1, 3) -> mean 2, unbiased var ((1-2)^2 + (3-2)^2) / (2-1) = 2
    # -> normalized (-1, 1) / sqrt(2 + 1e-6) = (-0.7071066, 0.7071066)
    # pred (0, 0): MSE = (0.5 + 0.5) / 2 = 0.4999998 (~0.5)
    pred = torch.tensor([[[0.0, 0.0], [5.0, 5.0]]])
    patches = torch.tensor([[[1.0, 3.0], [7.0, 7.0]]])
    mask = torch.tensor([[1.0, 0.0]])
    assert masked_patch_loss(pred, patches, mask, norm_pix=True).item() == pytest.approx(0.5, abs=1e-6)
    # a prediction equal to the normalized target scores 0
    perfect = torch.tensor([[[-0.7071066, 0.7071066], [0.0, 0.0]]])
    assert masked_patch_loss(perfect, patches, mask, norm_pix=True).item() == pytest.approx(0.0, abs=1e-6)
