"""Backbone registry on timm. Every method in a suite is built on the same backbone spec.

`resnet18-cifar` is the shared CIFAR backbone of the SSL literature: ResNet-18 with a 3x3
stride-1 first conv and no max-pool (keeping the ImageNet stem on 32px images costs ~10
points, lightly #1419). Features = global average pool, before any head.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import timm
import torch
from torch import nn
from timm.models.resnet import BasicBlock, ResNet

from bench.registry import Registry


class Backbone(nn.Module):
    """A timm trunk that maps images (B,C,H,W) to pooled features (B, num_features)."""

    def __init__(self, net: nn.Module, kind: str, patch_size: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.kind = kind  # "cnn" or "vit": MAE picks its variant from this
        self.patch_size = patch_size
        self.num_features: int = net.num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    description: str
    build_fn: Callable[[int, int], Backbone]  # (in_chans, image_size) -> Backbone

    def build(self, in_chans: int, image_size: int) -> Backbone:
        return self.build_fn(in_chans, image_size)


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def _small_stem(net: ResNet, in_chans: int, stride: int) -> ResNet:
    """Replace the 7x7/2 conv + max-pool stem by one 3x3 conv of the given stride."""
    width = net.conv1.out_channels
    net.conv1 = nn.Conv2d(in_chans, width, kernel_size=3, stride=stride, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def _resnet18_cifar(in_chans: int, image_size: int) -> Backbone:
    net = timm.create_model("resnet18", num_classes=0, in_chans=in_chans)
    return Backbone(_small_stem(net, in_chans, stride=1), "cnn")


def _resnet18(in_chans: int, image_size: int) -> Backbone:
    return Backbone(timm.create_model("resnet18", num_classes=0, in_chans=in_chans), "cnn")


def _resnet_tiny(stride: int) -> Callable[[int, int], Backbone]:
    def build(in_chans: int, image_size: int) -> Backbone:
        net = ResNet(BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=32,
                     num_classes=0, in_chans=in_chans)
        return Backbone(_small_stem(net, in_chans, stride=stride), "cnn")
    return build


def _vit(arch: str, patch: int) -> Callable[[int, int], Backbone]:
    def build(in_chans: int, image_size: int) -> Backbone:
        net = timm.create_model(arch, num_classes=0, in_chans=in_chans, img_size=image_size,
                                patch_size=patch, global_pool="token")
        return Backbone(net, "vit", patch_size=patch)
    return build


BACKBONES.register("resnet18-cifar", BackboneSpec(
    "resnet18-cifar", "ResNet-18, 3x3 stride-1 stem, no max-pool, 512-d (GPU suites)", _resnet18_cifar))
BACKBONES.register("resnet18", BackboneSpec(
    "resnet18", "ResNet-18 with the ImageNet 7x7/2 stem and max-pool, 512-d (stem ablation)", _resnet18))
BACKBONES.register("resnet-tiny", BackboneSpec(
    "resnet-tiny", "ResNet-10-style [1,1,1,1] BasicBlocks, widths 32-256, 3x3/2 stem, 256-d (CPU suites, 28px)",
    _resnet_tiny(stride=2)))
BACKBONES.register("resnet-tiny-s1", BackboneSpec(
    "resnet-tiny-s1", "resnet-tiny with a 3x3 stride-1 stem, 256-d (CPU suites, tiny images such as 8px digits)",
    _resnet_tiny(stride=1)))
BACKBONES.register("vit-tiny-p4", BackboneSpec(
    "vit-tiny-p4", "ViT-Tiny (192-d, depth 12, 3 heads), patch 4 (64 tokens at 32px), CLS features",
    _vit("vit_tiny_patch16_224", 4)))
