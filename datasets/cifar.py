"""CIFAR-10 / CIFAR-100 in the official "python version" pickle layout (as torchvision stores it)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .base import Arrays, DatasetInfo, Format, check_labels, corrupt, read_bytes

_C10_DIR = "cifar-10-batches-py"
_C100_DIR = "cifar-100-python"


def _unpickle(path: Path) -> dict[str, Any]:
    raw = read_bytes(path)
    try:
        # latin1: the originals are Python 2 pickles; it decodes their str objects losslessly.
        obj = pickle.loads(raw, encoding="latin1")
    except Exception as e:  # any unpickling failure means the file is damaged
        raise corrupt(path, f"{type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise corrupt(path, f"expected a dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(path: Path, d: dict[str, Any], key: str) -> Any:
    if key not in d:
        raise corrupt(path, f"missing key '{key}'")
    return d[key]


def _batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    data = np.asarray(_field(path, d, "data"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise corrupt(path, f"'data' is {data.dtype} {data.shape}, expected uint8 (N, 3072)")
    # Each row is R plane, G plane, B plane, each row-major 32x32: exactly NCHW.
    images = data.reshape(-1, 3, 32, 32)
    labels = check_labels(path, np.asarray(_field(path, d, label_key)), len(images), num_classes)
    return images, labels


def _names(path: Path, key: str, num_classes: int) -> tuple[str, ...]:
    names = _field(path, _unpickle(path), key)
    names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    if len(names) != num_classes:
        raise corrupt(path, f"{len(names)} class names, expected {num_classes}")
    return names


def _files10(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _read10(d: Path, split: str) -> Arrays:
    parts = [_batch(d / f, "labels", 10) for f in _files10(split)]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    return images, labels, _names(d / "batches.meta", "label_names", 10)


def _read100(d: Path, split: str) -> Arrays:
    images, labels = _batch(d / split, "fine_labels", 100)
    return images, labels, _names(d / "meta", "fine_label_names", 100)


def _download(cls_name: str) -> Callable[[Path, str], None]:
    def download(root: Path, split: str) -> None:
        import torchvision.datasets as tvd  # lazy: slow import, only needed to download

        getattr(tvd, cls_name)(str(root), train=(split == "train"), download=True)

    return download


CIFAR10 = Format(
    info=DatasetInfo("cifar10", 3, 32, 10, "CIFAR-10: 50k/10k 32x32 colour images, 10 classes",
                     "torchvision download (cifar-10-python.tar.gz) into the data dir"),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    candidates=lambda root, split: [root / _C10_DIR],
    complete=lambda d, split: all((d / f).is_file() for f in [*_files10(split), "batches.meta"]),
    read=_read10,
    download=_download("CIFAR10"),
    hint=f"copy {_C10_DIR}/ (from cifar-10-python.tar.gz) into --data-dir",
)

CIFAR100 = Format(
    info=DatasetInfo("cifar100", 3, 32, 100, "CIFAR-100: 50k/10k 32x32 colour images, 100 fine classes",
                     "torchvision download (cifar-100-python.tar.gz) into the data dir"),
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    candidates=lambda root, split: [root / _C100_DIR],
    complete=lambda d, split: (d / split).is_file() and (d / "meta").is_file(),
    read=_read100,
    download=_download("CIFAR100"),
    hint=f"copy {_C100_DIR}/ (from cifar-100-python.tar.gz) into --data-dir",
)
