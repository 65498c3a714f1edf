"""`bench.backbones.get`: any timm model as `timm:MODEL`, the small-image stem `@s1`/`@s2` on the
timm ResNet family, ViTs at small image sizes, pooled pre-head features, one-line errors."""
from __future__ import annotations

import pytest
import torch

from bench import backbones
from bench.errors import UserError


@torch.no_grad()
def features(name: str, in_chans: int, size: int, n: int = 2) -> tuple[backbones.Backbone, torch.Tensor]:
    b = backbones.get(name).build(in_chans, size).eval()
    return b, b(torch.randn(n, in_chans, size, size))


@pytest.mark.parametrize("in_chans", [1, 3])
def test_timm_resnet_at_16px(in_chans):
    b, f = features("timm:resnet10t", in_chans, 16)
    assert b.kind == "cnn" and b.patch_size is None
    assert f.shape == (2, b.num_features) == (2, b.net.num_features)


@torch.no_grad()
def test_small_stem_replaces_the_stem():
    # 32px: the trunk downsamples 8x after its stem, so the stems' strides 4 / 2 / 1 show as 1 / 2 / 4
    plain, s1, s2 = (backbones.get(n).build(1, 32).eval() for n in ("timm:resnet10t", "timm:resnet10t@s1",
                                                                     "timm:resnet10t@s2"))
    x = torch.randn(2, 1, 32, 32)
    assert [b.net.forward_features(x).shape[-1] for b in (plain, s2, s1)] == [1, 2, 4]
    conv1 = s1.net.conv1
    assert isinstance(conv1, torch.nn.Conv2d) and conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert isinstance(s1.net.maxpool, torch.nn.Identity) and s2.net.conv1.stride == (2, 2)
    assert conv1.out_channels == plain.net.bn1.num_features
    assert s1(x).shape == (2, s1.num_features)


def test_vit_at_a_small_image_size():
    b, f = features("timm:vit_tiny_patch16_224", 1, 32)
    assert (b.kind, b.patch_size) == ("vit", 16)
    assert b.net.patch_embed.num_patches == 4 and f.shape == (2, 192)


@torch.no_grad()
@pytest.mark.parametrize("name, size", [("timm:resnet10t", 16), ("timm:vit_tiny_patch16_224", 32)])
def test_features_are_the_pooled_pre_logits(name, size):
    b = backbones.get(name).build(3, size).eval()
    x = torch.randn(2, 3, size, size)
    torch.testing.assert_close(b(x), b.net.forward_head(b.net.forward_features(x), pre_logits=True))


def test_build_is_seeded():
    torch.manual_seed(3)
    a = backbones.get("timm:resnet10t").build(1, 16).net.state_dict()
    torch.manual_seed(3)
    b = backbones.get("timm:resnet10t").build(1, 16).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_registered_names_are_unchanged():
    assert backbones.get("resnet-tiny") is backbones.BACKBONES.get("resnet-tiny")
    b, f = features("resnet-tiny-s1", 1, 8)
    assert f.shape == (2, 256) and b.net.conv1.stride == (1, 1)


def one_line_error(name: str) -> str:
    with pytest.raises(UserError) as e:
        backbones.get(name)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_unknown_timm_model_suggests_close_matches():
    msg = one_line_error("timm:resnet1t")
    assert "unknown timm model 'resnet1t'" in msg and "timm:resnet10t" in msg
    assert msg.count("timm:") <= 6  # the name itself and at most 5 matches


def test_unknown_registered_name_mentions_timm():
    msg = one_line_error("resnet-999")
    assert "unknown backbone 'resnet-999'" in msg and "resnet-tiny" in msg and "timm:MODEL" in msg


@pytest.mark.parametrize("name, needle", [
    ("timm:convnext_atto@s1", "ResNet family"),
    ("timm:vit_tiny_patch16_224@s2", "ResNet family"),
    ("timm:resnet10t@s3", "unknown stem '@s3'"),
    ("timm:", "name a timm model"),
    ("timm:resnet10t.a1_in1k", "no pretrained tag"),
])
def test_bad_timm_names(name, needle):
    assert needle in one_line_error(name)


def test_image_too_small_is_a_user_error():
    with pytest.raises(UserError, match="smaller than its 16px patches"):
        backbones.get("timm:vit_tiny_patch16_224").build(1, 8)
    with pytest.raises(UserError, match="cannot take 1-channel 16px images"):
        backbones.get("timm:convnext_atto").build(1, 16)
