"""An LSI suite's data: the train split (a fixed class-balanced subset when the suite says so)
and the full test split, uint8 and resident on the device, plus the class-balanced label
subsets are bench.eval.evaluate.label_subset, as the probe's label fractions."""
from __future__ import annotations

import hashlib

import torch

import datasets as ds
from bench.engine.data import fixed_subset
from bench.errors import UserError
from bench.lsi.suites import LSISuite
from methods.base import DataInfo


class LSIData:
    """Train and test split of an LSI suite. The test split is used for the final top-1 only."""

    def __init__(self, suite: LSISuite, data_dir: str | None, download: bool, device: torch.device) -> None:
        size = suite.image_size
        full = ds.resize(ds.load(suite.dataset, "train", data_dir, download), size)
        test = ds.resize(ds.load(suite.dataset, "test", data_dir, download), size)
        if not full.labeled:
            raise UserError(f"dataset {suite.dataset!r} has no labels; an LSI suite trains a classifier")
        self.train = fixed_subset(full, suite.train_subset)  # seed 0: every row and seed sees the same images
        self.test = test
        self.info = DataInfo(full.channels, size, full.num_classes, full.mean, full.std)
        self.device = device
        self.train_images = self.train.images.to(device)
        self.train_labels = self.train.labels.to(device)

    def train_digest(self) -> str:
        """sha256 of the train images and labels: part of a generator's cache key, so a cached
        generator is reused only for exactly the images it was trained on."""
        h = hashlib.sha256()
        h.update(str(tuple(self.train.images.shape)).encode())
        h.update(self.train.images.contiguous().numpy().tobytes())
        h.update(self.train.labels.numpy().tobytes())
        return h.hexdigest()


def fraction_name(fraction: float) -> str:
    """1.0 -> '100pct', 0.1 -> '10pct', 0.01 -> '1pct' (metric and run-id suffixes)."""
    pct = fraction * 100
    return f"{pct:g}pct".replace(".", "p")
