"""scikit-learn's bundled 8x8 digits, with a fixed stratified 1,438 / 359 train/test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Arrays, DatasetInfo, Format

TEST_SIZE = 359  # 20% of 1,797, rounded down so train gets 1,438
SPLIT_SEED = 0


def stratified_test_mask(labels: np.ndarray, test_size: int, seed: int) -> np.ndarray:
    """Boolean test mask holding `test_size` rows, spread over classes by largest remainder.

    Written with numpy instead of sklearn's train_test_split so the split cannot change with
    the sklearn version.
    """
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * test_size / counts.sum()
    take = np.floor(share).astype(np.int64)
    # Give the leftover rows to the classes with the largest fractional parts (ties: lower class).
    order = np.argsort(-(share - take), kind="stable")
    take[order[: test_size - take.sum()]] += 1
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c, k in zip(classes, take):
        rows = np.flatnonzero(labels == c)
        mask[rng.permutation(rows)[:k]] = True
    return mask


def _read(_: Path, split: str) -> Arrays:
    from sklearn.datasets import load_digits  # lazy: sklearn import is slow

    d = load_digits()
    # Values are 0..16; scale to the uint8 range like every other dataset.
    images = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    labels = d.target.astype(np.int64)
    test = stratified_test_mask(labels, TEST_SIZE, SPLIT_SEED)
    keep = test if split == "test" else ~test
    return np.ascontiguousarray(images[keep]), labels[keep], tuple(str(i) for i in range(10))


DIGITS = Format(
    info=DatasetInfo("digits", 1, 8, 10, "scikit-learn digits: 1,797 8x8 grayscale handwritten digits, "
                     "fixed stratified 1,438/359 train/test split", "bundled with scikit-learn (always offline)"),
    # Pixel mean/std (population) of the uint8 train split / 255, over all pixels; computed once
    # from this module's split and checked by tests/test_datasets.py::test_digits_split.
    mean=(0.3055,),
    std=(0.3759,),
    candidates=lambda root, split: [],
    complete=lambda d, split: True,
    read=_read,
    download=None,
    hint="",
    builtin=True,
)
