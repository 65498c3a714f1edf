"""User datasets stored as numpy arrays: `npz_arrays`.

PATH is either a folder holding train.npz and test.npz, or one .npz file that is split per class
like a single image folder (datasets.folder.stratified_test_mask: round(test_fraction * n) of
every class to test, seeded by (split_seed, class name), deterministic).

Each file holds `images`: uint8, (N, H, W) or channels-last (N, H, W, C) with C 1 or 3;
`labels`: integers 0..K-1, one per image; optionally `classes`: K strings (else "0".."K-1",
K = the largest train label + 1). A 1-channel split next to a 3-channel one is repeated to
3 channels, so train and test always agree.

Geometry as for image folders: the centred square of side min(H, W) (whole-pixel offsets) is
resized to size x size with datasets.ops.resize (antialiased bilinear). Arrays are read at
each `load` (reading an .npz is about as fast as any cache would be); the train mean/std is
cached in .ssl-bench-stats.json next to the data (datasets.folder.cached_stats).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.errors import UserError

from .base import Arrays, DatasetInfo, Format, ImageData, one_line, user_format
from .folder import (channel_stats, cached_stats, check_name, check_size, check_split, digest, recall, remember,
                     stratified_test_mask)
from .ops import resize

_VERSION = 1  # part of the content key: bump when the conversion changes


@dataclass(frozen=True)
class _Header:
    """What registration needs from one file, read without loading its images."""

    images_shape: tuple[int, ...]
    labels: np.ndarray  # int64
    classes: tuple[str, ...] | None

    @property
    def channels(self) -> int:
        return 1 if len(self.images_shape) == 3 else self.images_shape[3]


def _zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is not a readable .npz file ({one_line(e)}); save it with np.savez") from None


def _members(path: Path, zf: zipfile.ZipFile) -> set[str]:
    keys = {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    for key in ("images", "labels"):
        if key not in keys:
            raise UserError(f"{path} has no {key!r} array (it has: {', '.join(sorted(keys)) or 'none'}); "
                            f"save it with np.savez(file, images=..., labels=...)")
    return keys


def _check_images(path: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    if dtype != np.uint8:
        raise UserError(f"{path}: 'images' is {dtype}, expected uint8 (0..255); convert it, "
                        f"e.g. (x * 255).round().astype(np.uint8) for floats in [0, 1]")
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))) or 0 in shape[1:]:
        raise UserError(f"{path}: 'images' has shape {shape}, expected (N, H, W) or channels-last (N, H, W, C) "
                        f"with C 1 or 3")
    if shape[0] == 0:
        raise UserError(f"{path}: 'images' holds no images")


def _image_header(path: Path, zf: zipfile.ZipFile) -> tuple[np.dtype, tuple[int, ...]]:
    """dtype and shape of `images` from its .npy header, without reading the pixels."""
    try:
        with zf.open("images.npy") as f:
            version = np.lib.format.read_magic(f)
            read = {(1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read is not None:
                shape, _, dtype = read(f)
                return np.dtype(dtype), tuple(shape)
        with np.load(path, allow_pickle=False) as z:  # a newer header version: read it the slow way
            x = z["images"]
            return x.dtype, x.shape
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: 'images' cannot be read ({one_line(e)})") from None


def _small_arrays(path: Path, keys: set[str], n: int) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Validated int64 `labels` and optional `classes` of one file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = z["labels"]
            names = z["classes"] if "classes" in keys else None
    except ValueError as e:  # object arrays need pickle, which is never enabled for user files
        raise UserError(f"{path}: {one_line(e)}; store 'labels' as integers and 'classes' as "
                        f"np.array(names, dtype=str)") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} cannot be read ({one_line(e)})") from None
    if not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: 'labels' is {labels.dtype}, expected integers 0..K-1")
    if labels.ndim == 2 and labels.shape[1] == 1:  # (N, 1) columns are common (e.g. from MATLAB)
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n:
        raise UserError(f"{path}: 'labels' has shape {labels.shape}, expected ({n},): one label per image")
    if labels.min() < 0:
        raise UserError(f"{path}: 'labels' has negative values (min {labels.min()}), expected 0..K-1")
    classes = None
    if names is not None:
        if names.dtype.kind not in "US" or names.ndim != 1:
            raise UserError(f"{path}: 'classes' is {names.dtype} {names.shape}, expected a 1-D array of strings")
        classes = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in names.tolist())
        if labels.max() >= len(classes):
            raise UserError(f"{path}: 'labels' reach {labels.max()}, but 'classes' names only {len(classes)}")
    return labels.astype(np.int64), classes


def _header(path: Path) -> _Header:
    with _zip(path) as zf:
        keys = _members(path, zf)
        dtype, shape = _image_header(path, zf)
    _check_images(path, dtype, shape)
    labels, classes = _small_arrays(path, keys, shape[0])
    return _Header(shape, labels, classes)


def _images(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            x = z["images"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: 'images' cannot be read ({one_line(e)})") from None
    _check_images(path, x.dtype, x.shape)
    return x


def _nchw(x: np.ndarray, channels: int) -> np.ndarray:
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    if x.shape[1] != channels:  # 1 -> 3 only: lossless, keeps train and test alike
        x = np.repeat(x, channels, axis=1)
    return x


def _square(x: np.ndarray, size: int, name: str) -> np.ndarray:
    """Centre square (whole pixels) resized to size x size, as a uint8 array."""
    h, w = x.shape[2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = np.ascontiguousarray(x[:, :, top:top + side, left:left + side])
    n, c = x.shape[:2]
    # ops.resize works on ImageData; labels and mean/std are placeholders it carries through.
    tmp = ImageData(name, "train", torch.from_numpy(x), torch.zeros(n, dtype=torch.int64),
                    ("",), (0.0,) * c, (1.0,) * c)
    return resize(tmp, size).images.numpy()


class _NpzDataset:
    """State behind one registered npz dataset."""

    def __init__(self, name: str, path: Path, size: int, test_fraction: float, split_seed: int) -> None:
        self.name, self.size = name, size
        self.test_fraction, self.split_seed = float(test_fraction), split_seed
        if not path.exists():
            raise UserError(f"npz dataset {path} does not exist")
        if path.is_dir():
            self.place = path
            self.files = {"train": path / "train.npz", "test": path / "test.npz"}
            for f in self.files.values():
                if not f.is_file():
                    raise UserError(f"{f} does not exist: a folder of arrays needs train.npz and test.npz "
                                    f"(or pass one .npz file to split it by test_fraction)")
        else:
            self.place = path.parent
            self.files = {"all": path}
        headers = {split: _header(f) for split, f in self.files.items()}
        self.channels = max(h.channels for h in headers.values())
        self.classes = self._classes(headers)
        self.counts = self._counts(headers)

    def _classes(self, headers: dict[str, _Header]) -> tuple[str, ...]:
        named = {split: h.classes for split, h in headers.items() if h.classes is not None}
        if len(set(named.values())) > 1:
            raise UserError(f"{self.files['train']} and {self.files['test']} name different 'classes'; "
                            f"store the same list in both (or only in train.npz)")
        first = headers.get("train") or headers["all"]
        if named:
            return next(iter(named.values()))  # type: ignore[return-value]
        k = int(first.labels.max()) + 1
        if "test" in headers and headers["test"].labels.max() >= k:
            raise UserError(f"label {headers['test'].labels.max()} in {self.files['test']} has no train image in "
                            f"{self.files['train']} (labels there reach {k - 1}); train and test need the same classes")
        return tuple(str(i) for i in range(k))

    def _counts(self, headers: dict[str, _Header]) -> dict[str, int]:
        if "all" not in headers:
            return {split: len(h.labels) for split, h in headers.items()}
        test = stratified_test_mask(headers["all"].labels, self.test_fraction, self.split_seed, self.classes,
                                    str(self.files["all"]))
        return {"train": int((~test).sum()), "test": int(test.sum())}

    def key(self) -> str:
        stamps = []
        for f in self.files.values():
            try:
                st = f.stat()
            except OSError as e:
                raise UserError(f"cannot read {f} ({one_line(e.strerror or e)})") from None
            stamps.append([str(f), st.st_size, st.st_mtime_ns])
        return digest({"version": _VERSION, "kind": "npz", "size": self.size, "test_fraction": self.test_fraction,
                       "split_seed": self.split_seed, "channels": self.channels}, stamps)

    def arrays(self) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
        key = self.key()
        hit = recall(key)
        if isinstance(hit, dict):
            return hit, key
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for split, f in self.files.items():
            header = _header(f)  # validates again: the files may have changed since registration
            if header.channels > self.channels or (header.classes is not None and header.classes != self.classes) \
                    or header.labels.max() >= len(self.classes):
                raise UserError(f"{f} changed since dataset {self.name!r} was registered "
                                f"(channels or classes differ); register it again")
            images = _square(_nchw(_images(f), self.channels), self.size, self.name)
            if split != "all":
                out[split] = (images, header.labels)
                continue
            test = stratified_test_mask(header.labels, self.test_fraction, self.split_seed, self.classes, str(f))
            out = {"train": (images[~test], header.labels[~test]), "test": (images[test], header.labels[test])}
        remember(key, out)
        return out, key

    def read(self, place: Path, split: str) -> Arrays:
        images, labels = self.arrays()[0][split]
        return images, labels, self.classes

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        out, key = self.arrays()
        train = out["train"][0]
        return cached_stats(self.place, key, self.size, lambda: (channel_stats(train), len(train)))


def npz_arrays(name: str, path: str | Path, size: int, *, test_fraction: float = 0.2, split_seed: int = 0,
               description: str = "") -> Format:
    """A labeled dataset from PATH/train.npz + PATH/test.npz, or from one .npz file split by test_fraction.

    Keys, dtypes, shapes and labels are checked here (UserError naming the file and key); the
    images are read, resized and their train mean/std computed at `datasets.load`.
    """
    check_name(name)
    check_size(size)
    check_split(test_fraction, split_seed)
    ds = _NpzDataset(name, Path(path).expanduser().resolve(), size, test_fraction, split_seed)
    where = ds.place if "all" not in ds.files else ds.files["all"]
    counts = f"{ds.counts['train']} train / {ds.counts['test']} test images"
    info = DatasetInfo(name, ds.channels, size, len(ds.classes),
                       description or f"arrays in {where}: {counts}, {len(ds.classes)} classes", f"your arrays {where}")
    return user_format(info, where, ds.read, ds.stats)
