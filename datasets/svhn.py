"""SVHN cropped digits (format 2): train_32x32.mat / test_32x32.mat, as torchvision stores them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Arrays, DatasetInfo, Format, check_labels, corrupt


def _file(split: str) -> str:
    return f"{split}_32x32.mat"


def _read(root: Path, split: str) -> Arrays:
    import scipy.io  # lazy: only SVHN needs scipy

    path = root / _file(split)
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises many types (ValueError, MatReadError, OSError...)
        raise corrupt(path, f"{type(e).__name__}: {e}") from None
    if "X" not in mat or "y" not in mat:
        raise corrupt(path, "missing variable 'X' or 'y'")
    x = np.asarray(mat["X"])
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise corrupt(path, f"'X' is {x.dtype} {x.shape}, expected uint8 (32, 32, 3, N)")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    labels = check_labels(path, mat["y"], len(images), 11)
    labels[labels == 10] = 0  # SVHN writes digit 0 as label 10
    return images, labels, tuple(str(i) for i in range(10))


def _download(root: Path, split: str) -> None:
    import torchvision.datasets as tvd  # lazy: slow import, only needed to download

    tvd.SVHN(str(root), split=split, download=True)


SVHN = Format(
    info=DatasetInfo("svhn", 3, 32, 10, "SVHN cropped digits: 73,257/26,032 32x32 colour images, 10 classes",
                     "torchvision download (train_32x32.mat / test_32x32.mat) into the data dir"),
    mean=(0.4377, 0.4438, 0.4728),
    std=(0.1980, 0.2010, 0.1970),
    candidates=lambda root, split: [root / _file(split)],
    complete=lambda path, split: path.is_file(),
    read=lambda path, split: _read(path.parent, split),
    download=_download,
    hint="copy train_32x32.mat and test_32x32.mat into --data-dir",
)
