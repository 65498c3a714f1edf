"""Fashion-MNIST from IDX files (gzipped or not), parsed and validated here with numpy."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from bench.errors import UserError

from .base import Arrays, DatasetInfo, Format, check_labels, corrupt, read_bytes

# Where Debian's `dataset-fashion-mnist` package installs the IDX files.
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
           "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

_PREFIX = {"train": "train", "test": "t10k"}


def _path(d: Path, stem: str) -> Path | None:
    """The gzipped or plain file for `stem` in `d`, whichever exists (gz preferred)."""
    for p in (d / f"{stem}.gz", d / stem):
        if p.is_file():
            return p
    return None


def _stems(split: str) -> tuple[str, str]:
    return f"{_PREFIX[split]}-images-idx3-ubyte", f"{_PREFIX[split]}-labels-idx1-ubyte"


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file with `ndim` dimensions; UserError if anything is off."""
    raw = read_bytes(path)
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # bad header, truncated stream, bad CRC
            raise corrupt(path, f"gzip: {e}") from None
    if len(raw) < 4:
        raise corrupt(path, f"only {len(raw)} bytes, no IDX header")
    magic = int.from_bytes(raw[:4], "big")
    want = 0x0800 | ndim  # 0x08 = unsigned byte data, low byte = number of dimensions
    if magic != want:
        raise corrupt(path, f"IDX magic number {magic:#010x}, expected {want:#010x}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise corrupt(path, f"only {len(raw)} bytes, IDX header needs {header}")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        raise corrupt(path, f"{len(raw)} bytes, IDX dims {dims} need {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _read(d: Path, split: str) -> Arrays:
    img_stem, lbl_stem = _stems(split)
    img_path, lbl_path = _path(d, img_stem), _path(d, lbl_stem)
    if img_path is None or lbl_path is None:  # `complete` checked, but files can vanish meanwhile
        raise UserError(f"Fashion-MNIST files {img_stem}(.gz) / {lbl_stem}(.gz) missing in {d}; copy them there again")
    images = read_idx(img_path, 3)
    if images.shape[1:] != (28, 28):
        raise corrupt(img_path, f"images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    labels = check_labels(lbl_path, read_idx(lbl_path, 1), len(images), 10)
    return images[:, None].copy(), labels, CLASSES


def _download(root: Path, split: str) -> None:
    import torchvision.datasets as tvd  # lazy: slow import, only needed to download

    tvd.FashionMNIST(str(root), train=(split == "train"), download=True)


FASHION_MNIST = Format(
    info=DatasetInfo("fashion-mnist", 1, 28, 10, "Fashion-MNIST: 60k/10k 28x28 grayscale clothing images, 10 classes",
                     "`apt-get install dataset-fashion-mnist` (IDX files in /usr/share/datasets/fashion-mnist) "
                     "or torchvision download into the data dir"),
    mean=(0.2860,),
    std=(0.3530,),
    # Plain dir, a fashion-mnist/ subdir, or torchvision's FashionMNIST/raw/ layout.
    candidates=lambda root, split: [root, root / "fashion-mnist", root / "FashionMNIST" / "raw"],
    complete=lambda d, split: all(_path(d, s) is not None for s in _stems(split)),
    read=_read,
    download=_download,
    hint="`apt-get install dataset-fashion-mnist`, or copy train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
         "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz into --data-dir",
    extra_roots=lambda: [SYSTEM_DIR],  # looked up at call time so tests can point it elsewhere
)
