"""The suite's data, loaded once per suite and shared by every run: the pretraining images
(uint8, resident on the training device when they fit), the evaluation splits and the
transfer targets (a missing target is skipped with its reason)."""
from __future__ import annotations

import torch

import datasets as ds
from bench.config import Suite
from bench.errors import UserError
from bench.eval.evaluate import EvalSet
from methods.base import DataInfo


class SuiteData:
    """The suite's data, loaded once and shared by every run (uint8, resident on the device)."""

    def __init__(self, suite: Suite, data_dir: str | None, download: bool, device: torch.device) -> None:
        size = suite.image_size
        full = ds.resize(ds.load(suite.dataset, "train", data_dir, download), size)
        test = ds.resize(ds.load(suite.dataset, "test", data_dir, download), size)
        self.channels = full.channels
        # fixed class-balanced subsets (seed 0): every method and seed sees the same images
        if suite.pretrain_dataset:  # the user's unlabeled images; `dataset` stays the labeled evaluation data
            unlabeled = ds.to_channels(ds.resize(ds.load(suite.pretrain_dataset, "train", data_dir, download), size),
                                       full.channels)
            self.pretrain = fixed_subset(unlabeled, suite.train.train_subset)
        else:
            self.pretrain = fixed_subset(full, suite.train.train_subset)
        self.main = EvalSet(suite.dataset, fixed_subset(full, suite.eval.train_subset),
                            fixed_subset(test, suite.eval.test_subset))
        self.info = DataInfo(full.channels, size, full.num_classes, full.mean, full.std)
        self.images = _place(self.pretrain.images, device)
        self.labels = self.pretrain.labels.to(self.images.device)
        self.transfer: dict[str, EvalSet | str] = {}
        for name in suite.eval.transfer:
            try:
                tr = ds.load(name, "train", data_dir, download)
                te = ds.load(name, "test", data_dir, download)
            except UserError as e:  # a missing target is skipped with its reason, never a crash
                self.transfer[name] = f"skipped: {e}"
                continue
            prep = lambda d, n: fixed_subset(ds.to_channels(ds.resize(d, size), self.channels), n)
            self.transfer[name] = EvalSet(name, prep(tr, suite.eval.transfer_train_subset),
                                          prep(te, suite.eval.transfer_test_subset))


def fixed_subset(data: ds.ImageData, n: int) -> ds.ImageData:
    """A fixed class-balanced subset of about `n` images (seed 0); all of `data` for 0 or n >= its size."""
    if not n or n >= len(data):
        return data
    if data.num_classes == 0:  # unlabeled: a fixed random subset
        return data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n].sort().values)
    per_class = max(1, n // data.num_classes)
    return data.subset(ds.balanced_subset(data.labels, per_class, seed=0))


def _place(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Keep uint8 data on the GPU when it fits comfortably, else pinned host memory."""
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() < 0.25 * free:
        return images.to(device)
    return images.pin_memory()


