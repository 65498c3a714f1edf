"""Image classification datasets for ssl-bench: registry, loading, and whole-split transforms.

`load(name, split)` returns an ImageData with uint8 (N, C, H, W) images and int64 labels.
Data is looked for under `data_dir` if given, else under $BENCH_DATA and ~/.cache/ssl-bench/data
(plus system locations for some datasets); missing data is downloaded with torchvision.

User data ("bring your own data"): build a Format with `image_folder`, `unlabeled_folder` or
`npz_arrays` and add it with `register`; `load` then reads it from where it lies.
"""

from __future__ import annotations

import difflib
import functools
import os
import socket
from pathlib import Path

import torch

from bench.errors import UserError

from .base import SPLITS, Arrays, DatasetInfo, Format, ImageData, one_line
from .cifar import CIFAR10, CIFAR100
from .digits import DIGITS
from .folder import image_folder, unlabeled_folder
from .idx import FASHION_MNIST
from .npz import npz_arrays
from .ops import balanced_subset, resize, to_channels
from .stl10 import STL10
from .svhn import SVHN

__all__ = ["DATASETS", "DatasetInfo", "Format", "ImageData", "balanced_subset", "image_folder", "info", "load",
           "names", "npz_arrays", "register", "resize", "roots", "to_channels", "unlabeled_folder", "unregister"]

_FORMATS: dict[str, Format] = {f.info.name: f for f in (CIFAR10, CIFAR100, STL10, SVHN, FASHION_MNIST, DIGITS)}
DATASETS: dict[str, DatasetInfo] = {name: f.info for name, f in _FORMATS.items()}

DOWNLOAD_TIMEOUT_S = 20.0


def register(fmt: Format) -> None:
    """Add a dataset (e.g. from `image_folder`) under `fmt.info.name`, listed after those before it."""
    name = fmt.info.name
    if name in _FORMATS:
        raise ValueError(f"dataset {name!r} is registered twice")
    _FORMATS[name] = fmt
    DATASETS[name] = fmt.info


def unregister(name: str) -> None:
    """Remove a dataset `register` added (a suite file re-registering its dataset, a failed plug-in)."""
    _FORMATS.pop(name, None)
    DATASETS.pop(name, None)


def names() -> list[str]:
    """Registry names, in registry order."""
    return list(DATASETS)


def _canonical(name: str) -> str:
    if name in DATASETS:  # a registered user name is taken as spelled, even with capitals or "_"
        return name
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown dataset '{name}'{hint}; known: {', '.join(DATASETS)}")
    return key


def info(name: str) -> DatasetInfo:
    """The registry entry for `name`; UserError listing the known names if there is none."""
    return DATASETS[_canonical(name)]


def roots(data_dir: str | Path | None = None) -> list[Path]:
    """Directories searched for data: [data_dir] if given (must exist), else [$BENCH_DATA, ~/.cache/ssl-bench/data]."""
    if data_dir is not None:
        d = Path(data_dir).expanduser()
        if not d.is_dir():
            what = "is not a directory" if d.exists() else "does not exist"
            raise UserError(f"data dir '{d}' {what}; create it or pass an existing --data-dir")
        return [d]
    found = [Path(os.environ["BENCH_DATA"]).expanduser()] if os.environ.get("BENCH_DATA") else []
    return found + [Path.home() / ".cache" / "ssl-bench" / "data"]


def _stamp(path: Path) -> tuple[int, int]:
    """Cache-key part that changes when the data at `path` (a file or a dir of files) is replaced."""
    try:
        stats = [path.stat()] + ([p.stat() for p in path.iterdir()] if path.is_dir() else [])
    except OSError:
        return 0, 0
    return max(s.st_mtime_ns for s in stats), sum(s.st_size for s in stats)


def _tensors(arrays: Arrays) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    images, labels, classes = arrays
    if not images.flags.writeable:  # frombuffer views are read-only; torch wants writable memory
        images = images.copy()
    return torch.from_numpy(images).contiguous(), torch.from_numpy(labels), classes


@functools.lru_cache(maxsize=6)
def _read_cached(name: str, split: str, location: str,
                 stamp: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    return _tensors(_FORMATS[name].read(Path(location), split))


def _find(fmt: Format, search: list[Path], split: str, tried: list[str]) -> Path | None:
    for root in search:
        for place in fmt.candidates(root, split):
            if fmt.complete(place, split):
                return place
            if str(place) not in tried:
                tried.append(str(place))
    return None


def _download(fmt: Format, root: Path, split: str) -> str | None:
    """Try a torchvision download into `root`; return the failure reason, or None on success."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # a dead network must not hang the run
    try:
        root.mkdir(parents=True, exist_ok=True)
        fmt.download(root, split)  # type: ignore[misc]
        return None
    except Exception as e:  # network, disk, checksum, torchvision errors: all reported in one line
        return f"{type(e).__name__}: {one_line(e)}" if str(e) else type(e).__name__
    finally:
        socket.setdefaulttimeout(old)


def load(name: str, split: str, data_dir: str | Path | None = None, download: bool = True) -> ImageData:
    """Load one split ("train" or "test") of a registry dataset.

    Every root is searched for a local copy first; only if none is found and `download` is true
    is a torchvision download into the first root tried. Results are cached per file location;
    each call returns fresh tensors, so callers may modify them freely.
    """
    name = _canonical(name)
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}' for dataset '{name}'; use 'train' or 'test'")
    fmt = _FORMATS[name]
    if fmt.location is not None:
        # A user dataset keeps its own content-keyed caches: the stamp below only sees the top
        # level of a folder, not an edited image two levels down.
        images, labels, classes = _tensors(fmt.read(fmt.location, split))
        mean, std = fmt.stats() if fmt.stats is not None else (fmt.mean, fmt.std)
        return ImageData(name, split, images.clone(), labels.clone(), classes, mean, std)
    if fmt.builtin:
        place: Path | None = Path()
    else:
        search = roots(data_dir)
        tried: list[str] = []
        place = _find(fmt, search + fmt.extra_roots(), split, tried)
        if place is None:
            if not download:
                reason = "download disabled"
            elif fmt.download is None:
                reason = "no download available"
            else:
                reason = _download(fmt, search[0], split)
                if reason is None:
                    place = _find(fmt, [search[0]], split, [])
                    reason = f"download into {search[0]} finished but the files are still missing"
                else:
                    reason = f"download into {search[0]} failed ({reason}; no network?)"
        if place is None:
            raise UserError(f"dataset '{name}' ({split} split) not found; tried {', '.join(tried)}; {reason}. "
                            f"Get it by running once with download enabled on a machine with internet, "
                            f"or {fmt.hint} (or into $BENCH_DATA)")
    stamp = (0, 0) if fmt.builtin else _stamp(place)
    images, labels, classes = _read_cached(name, split, str(place), stamp)
    # Clone so that in-place edits by one caller never reach the cache or other callers.
    mean, std = fmt.stats() if fmt.stats is not None else (fmt.mean, fmt.std)
    return ImageData(name, split, images.clone(), labels.clone(), classes, mean, std)
