"""Core types shared by the dataset readers: ImageData, DatasetInfo and the Format hooks."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.errors import UserError

SPLITS = ("train", "test")


@dataclass(eq=False)
class ImageData:
    """One split of a dataset in memory: uint8 images (N, C, H, W) and int64 labels (N,).

    An unlabeled split (a pretraining-only folder) has no classes and every label is -1.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, [0, 1] units, from the train split
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        # Programming errors, not user errors: fail loudly at construction, not deep in training.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must be int64 ({self.images.shape[0]},), "
                             f"got {self.labels.dtype} {tuple(self.labels.shape)}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean/std need {self.channels} entries, got {len(self.mean)}/{len(self.std)}")
        if not self.classes and len(self) and bool((self.labels != -1).any()):
            raise ValueError("a split without classes is unlabeled: every label must be -1")

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def size(self) -> int:
        return int(self.images.shape[2])

    @property
    def num_classes(self) -> int:
        return len(self.classes)  # 0 for an unlabeled split

    @property
    def labeled(self) -> bool:
        return bool(self.classes)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, idx: torch.Tensor) -> ImageData:
        """Rows selected by an index (or bool mask) tensor; metadata unchanged, tensors copied."""
        idx = torch.as_tensor(idx)
        return replace(self, images=self.images[idx].contiguous(), labels=self.labels[idx].contiguous())

    def __repr__(self) -> str:  # the default repr would print whole tensors
        return (f"ImageData(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={tuple(self.images.shape[1:])}, classes={self.num_classes})")


@dataclass(frozen=True)
class DatasetInfo:
    """Static description of a registry entry."""

    name: str
    channels: int
    size: int
    num_classes: int
    description: str
    source: str  # how it is obtained


Arrays = tuple[np.ndarray, np.ndarray, tuple[str, ...]]  # images uint8 NCHW, labels int64, classes


@dataclass(frozen=True)
class Format:
    """How one dataset is found under a root, read from disk and downloaded."""

    info: DatasetInfo
    mean: tuple[float, ...]
    std: tuple[float, ...]
    candidates: Callable[[Path, str], list[Path]]  # places under a root that may hold the split
    complete: Callable[[Path, str], bool]  # does that place hold every file the split needs?
    read: Callable[[Path, str], Arrays]
    download: Callable[[Path, str], None] | None  # into a root; None means always offline
    hint: str  # what to copy where, for the not-found message
    extra_roots: Callable[[], list[Path]] = list  # system-wide locations searched after the usual roots
    builtin: bool = False  # bundled with a library: no roots searched, never downloaded
    # User datasets (datasets.folder, datasets.npz): their own folder or file, read in place (no roots
    # searched, never downloaded, cached by the format itself, keyed by content), and mean/std
    # computed from their train split instead of the fixed `mean`/`std`.
    location: Path | None = None
    stats: Callable[[], tuple[tuple[float, ...], tuple[float, ...]]] | None = None


def user_format(info: DatasetInfo, location: Path, read: Callable[[Path, str], Arrays],
                stats: Callable[[], tuple[tuple[float, ...], tuple[float, ...]]]) -> Format:
    """A Format for data the user points at: read from `location`, stats from the data itself."""
    return Format(info=info, mean=(), std=(), candidates=lambda root, split: [location],
                  complete=lambda place, split: True, read=read, download=None,
                  hint=f"check {location}", location=location, stats=stats)


def corrupt(path: Path, what: str) -> UserError:
    """A one-line error for an unreadable data file."""
    return UserError(f"data file {path} is corrupt or truncated ({one_line(what)}); "
                     "delete it and download or copy it again")


def one_line(text: object) -> str:
    """Collapse whitespace so an exception text fits in a one-line message."""
    return " ".join(str(text).split())


def read_bytes(path: Path) -> bytes:
    """Read a file, turning OS errors into a UserError naming it."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read data file {path} ({one_line(e.strerror or e)}); "
                        "check it exists and is readable") from None


def check_labels(path: Path, labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Validate label count and range; return them as int64."""
    try:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
    except (TypeError, ValueError) as e:
        raise corrupt(path, f"labels are not integers: {e}") from None
    if labels.shape[0] != n:
        raise corrupt(path, f"{labels.shape[0]} labels for {n} images")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        raise corrupt(path, f"labels outside 0..{num_classes - 1}")
    return labels
