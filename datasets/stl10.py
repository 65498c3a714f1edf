"""STL-10 labelled splits in the official binary layout (stl10_binary/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import Arrays, DatasetInfo, Format, check_labels, corrupt, read_bytes

_DIR = "stl10_binary"
_SIDE = 96
_IMAGE_BYTES = 3 * _SIDE * _SIDE


def _files(split: str) -> list[str]:
    return [f"{split}_X.bin", f"{split}_y.bin", "class_names.txt"]


def _read(d: Path, split: str) -> Arrays:
    x_path, y_path, names_path = (d / f for f in _files(split))
    raw = read_bytes(x_path)
    if len(raw) % _IMAGE_BYTES:
        raise corrupt(x_path, f"{len(raw)} bytes is not a whole number of {_IMAGE_BYTES}-byte images")
    # Each channel plane is stored column-major (MATLAB order), so on disk it is (N, C, W, H).
    images = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3, _SIDE, _SIDE).transpose(0, 1, 3, 2)
    text = read_bytes(names_path).decode("utf-8", "replace")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 10:
        raise corrupt(names_path, f"{len(names)} class names, expected 10")
    # Labels are 1..10 on disk.
    labels = np.frombuffer(read_bytes(y_path), dtype=np.uint8).astype(np.int64) - 1
    labels = check_labels(y_path, labels, len(images), 10)
    return np.ascontiguousarray(images), labels, names


def _download(root: Path, split: str) -> None:
    import torchvision.datasets as tvd  # lazy: slow import, only needed to download

    tvd.STL10(str(root), split=split, download=True)


STL10 = Format(
    info=DatasetInfo("stl10", 3, 96, 10, "STL-10 labelled splits: 5k/8k 96x96 colour images, 10 classes",
                     "torchvision download (stl10_binary.tar.gz, 2.6 GB) into the data dir"),
    mean=(0.4467, 0.4398, 0.4066),
    std=(0.2603, 0.2566, 0.2713),
    candidates=lambda root, split: [root / _DIR],
    complete=lambda d, split: all((d / f).is_file() for f in _files(split)),
    read=_read,
    download=_download,
    hint=f"copy {_DIR}/ (from stl10_binary.tar.gz) into --data-dir",
)
