"""Writers of tiny datasets in the real on-disk formats, for testing the readers offline.

Each writer takes images in (N, C, H, W) order, converts them to the format's own layout the
way the original files are laid out, and returns the expected (images, labels) per split.
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

Split = tuple[np.ndarray, np.ndarray]  # images uint8 (N, C, H, W), labels int64 (N,)


def images(n: int, channels: int, side: int, seed: int) -> np.ndarray:
    """Random uint8 images (N, C, H, W): every pixel differs, so layout mistakes show up."""
    return np.random.default_rng(seed).integers(0, 256, (n, channels, side, side), dtype=np.uint8)


def labels(n: int, num_classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).integers(0, num_classes, n).astype(np.int64)


def _pickle(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))  # protocol 2, like the Python 2 originals


def write_cifar10(root: Path, per_batch: int = 2, n_test: int = 3) -> dict[str, Split]:
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    train_x, train_y = images(5 * per_batch, 3, 32, 1), labels(5 * per_batch, 10, 1)
    for b in range(5):
        rows = slice(b * per_batch, (b + 1) * per_batch)
        # 'data' rows are the R, G, B planes, each row-major: a plain NCHW flatten.
        _pickle(d / f"data_batch_{b + 1}", {"batch_label": f"training batch {b + 1} of 5",
                                            "data": train_x[rows].reshape(per_batch, -1),
                                            "labels": train_y[rows].tolist(), "filenames": []})
    test_x, test_y = images(n_test, 3, 32, 2), labels(n_test, 10, 2)
    _pickle(d / "test_batch", {"data": test_x.reshape(n_test, -1), "labels": test_y.tolist()})
    _pickle(d / "batches.meta", {"label_names": [f"c10_{i}" for i in range(10)], "num_vis": 3072})
    return {"train": (train_x, train_y), "test": (test_x, test_y)}


def write_cifar100(root: Path, n_train: int = 4, n_test: int = 3) -> dict[str, Split]:
    """root/cifar-100-python/{train, test, meta}, with fine and coarse labels."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    out = {}
    for split, n, seed in (("train", n_train, 3), ("test", n_test, 4)):
        x, y = images(n, 3, 32, seed), labels(n, 100, seed)
        _pickle(d / split, {"data": x.reshape(n, -1), "fine_labels": y.tolist(),
                            "coarse_labels": (y // 5).tolist()})
        out[split] = (x, y)
    _pickle(d / "meta", {"fine_label_names": [f"f{i}" for i in range(100)],
                         "coarse_label_names": [f"k{i}" for i in range(20)]})
    return out


def write_stl10(root: Path, n_train: int = 3, n_test: int = 2) -> dict[str, Split]:
    """root/stl10_binary/{train,test}_{X,y}.bin and class_names.txt; planes column-major, labels 1..10."""
    d = root / "stl10_binary"
    d.mkdir(parents=True)
    out = {}
    for split, n, seed in (("train", n_train, 5), ("test", n_test, 6)):
        x, y = images(n, 3, 96, seed), labels(n, 10, seed)
        (d / f"{split}_X.bin").write_bytes(np.ascontiguousarray(x.transpose(0, 1, 3, 2)).tobytes())
        (d / f"{split}_y.bin").write_bytes((y + 1).astype(np.uint8).tobytes())
        out[split] = (x, y)
    (d / "class_names.txt").write_text("\n".join(f"stl_{i}" for i in range(10)) + "\n")
    return out


def write_svhn(root: Path, n_train: int = 4, n_test: int = 3) -> dict[str, Split]:
    """root/{train,test}_32x32.mat with X (32, 32, 3, N) and y (N, 1) where digit 0 is 10."""
    import scipy.io

    out = {}
    for split, n, seed in (("train", n_train, 7), ("test", n_test, 8)):
        x, y = images(n, 3, 32, seed), labels(n, 10, seed)
        y[0] = 0  # make sure the 0 -> 10 mapping is exercised
        disk_y = np.where(y == 0, 10, y).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(str(root / f"{split}_32x32.mat"), {"X": x.transpose(2, 3, 1, 0), "y": disk_y})
        out[split] = (x, y)
    return out


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x0000 08 <ndim>, big-endian int32 dims, then the data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion_mnist(d: Path, n_train: int = 5, n_test: int = 4, gz: bool = True) -> dict[str, Split]:
    """d/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]."""
    d.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n, seed in (("train", "train", n_train, 9), ("test", "t10k", n_test, 10)):
        x, y = images(n, 1, 28, seed), labels(n, 10, seed)
        for stem, data in ((f"{prefix}-images-idx3-ubyte", idx_bytes(x[:, 0])),
                           (f"{prefix}-labels-idx1-ubyte", idx_bytes(y.astype(np.uint8)))):
            if gz:
                (d / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (d / stem).write_bytes(data)
        out[split] = (x, y)
    return out


def user_error(fn, *args, **kwargs) -> str:
    """Call fn expecting a UserError with a one-line message; return the message."""
    import pytest

    from bench.errors import UserError
    with pytest.raises(UserError) as e:
        fn(*args, **kwargs)
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg
