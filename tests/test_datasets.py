"""Tests for the datasets package: readers against real-format fixtures, errors, transforms."""

from __future__ import annotations

import gzip
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import datasets
import datasets.idx
from datasets import ImageData
from tests import fixtures_formats as fx
from tests.fixtures_formats import user_error

FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


def check(data: ImageData, name: str, split: str, expected: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = expected
    assert (data.name, data.split) == (name, split)
    assert data.images.dtype == torch.uint8 and data.images.is_contiguous()
    assert data.labels.dtype == torch.int64
    assert tuple(data.images.shape) == x.shape
    assert np.array_equal(data.images.numpy(), x)
    assert np.array_equal(data.labels.numpy(), y)
    info = datasets.info(name)
    assert (data.channels, data.size, data.num_classes) == (info.channels, info.size, info.num_classes)
    assert len(data.mean) == len(data.std) == data.channels


@pytest.fixture(autouse=True)
def isolated_roots(tmp_path_factory, monkeypatch):
    """Keep tests away from the real ~/.cache, $BENCH_DATA and the system Fashion-MNIST copy."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("BENCH_DATA", raising=False)
    monkeypatch.setattr(datasets.idx, "SYSTEM_DIR", home / "no-system-copy")


# --- registry -------------------------------------------------------------------------------

def test_registry_and_info():
    assert datasets.names() == ["cifar10", "cifar100", "stl10", "svhn", "fashion-mnist", "digits"]
    assert list(datasets.DATASETS) == datasets.names()
    assert datasets.info("stl10").size == 96 and datasets.info("cifar100").num_classes == 100
    assert datasets.info("fashion-mnist").channels == 1
    assert "dataset-fashion-mnist" in datasets.info("fashion-mnist").source
    msg = user_error(datasets.info, "imagenet")
    assert "imagenet" in msg and all(n in msg for n in datasets.names())


def test_bad_split_and_data_dir(tmp_path):
    assert "'val'" in user_error(datasets.load, "cifar10", "val", data_dir=tmp_path)
    missing = tmp_path / "nope"
    assert f"data dir '{missing}' does not exist" in user_error(datasets.load, "cifar10", "train", data_dir=missing)


# --- readers on real-format fixtures ---------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10(tmp_path, split):
    expected = fx.write_cifar10(tmp_path)
    data = datasets.load("cifar10", split, data_dir=tmp_path, download=False)
    check(data, "cifar10", split, expected[split])
    assert data.classes == tuple(f"c10_{i}" for i in range(10))
    assert data.mean == (0.4914, 0.4822, 0.4465)
    # Layout straight from the format spec: row n of 'data' is R plane, G plane, B plane.
    batch = "data_batch_1" if split == "train" else "test_batch"
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / batch).read_bytes())["data"]
    for c, h, w in [(0, 1, 2), (1, 31, 0), (2, 5, 30)]:
        assert data.images[1, c, h, w] == raw[1, c * 1024 + h * 32 + w]


def test_cifar100(tmp_path):
    expected = fx.write_cifar100(tmp_path)
    for split in ("train", "test"):
        data = datasets.load("cifar100", split, data_dir=tmp_path, download=False)
        check(data, "cifar100", split, expected[split])  # fine labels, not coarse
        assert data.num_classes == 100 and data.classes[7] == "f7"


def test_stl10(tmp_path):
    expected = fx.write_stl10(tmp_path)
    for split in ("train", "test"):
        data = datasets.load("stl10", split, data_dir=tmp_path, download=False)
        check(data, "stl10", split, expected[split])
        assert data.classes[0] == "stl_0"
    # Spec: each 96x96 plane is column-major, labels are 1..10 on disk.
    raw = (tmp_path / "stl10_binary" / "train_X.bin").read_bytes()
    n, c, h, w = 2, 0, 3, 70
    assert data.images.shape[1:] == (3, 96, 96)
    train = datasets.load("stl10", "train", data_dir=tmp_path)
    assert train.images[n, c, h, w] == raw[n * 27648 + c * 9216 + w * 96 + h]
    assert train.labels[0] + 1 == (tmp_path / "stl10_binary" / "train_y.bin").read_bytes()[0]


def test_svhn(tmp_path):
    import scipy.io

    expected = fx.write_svhn(tmp_path)
    for split in ("train", "test"):
        data = datasets.load("svhn", split, data_dir=tmp_path, download=False)
        check(data, "svhn", split, expected[split])
        assert data.labels[0] == 0  # stored as 10
    mat = scipy.io.loadmat(str(tmp_path / "train_32x32.mat"))
    assert mat["y"][0, 0] == 10
    train = datasets.load("svhn", "train", data_dir=tmp_path)
    assert train.images[2, 1, 4, 9] == mat["X"][4, 9, 1, 2]  # X is (H, W, C, N)


@pytest.mark.parametrize("sub,gz", [("", True), ("", False), ("fashion-mnist", True), ("FashionMNIST/raw", True)])
def test_fashion_mnist_fixture(tmp_path, sub, gz):
    expected = fx.write_fashion_mnist(tmp_path / sub, gz=gz)
    for split in ("train", "test"):
        data = datasets.load("fashion-mnist", split, data_dir=tmp_path, download=False)
        check(data, "fashion-mnist", split, expected[split])
        assert data.classes[-1] == "Ankle boot"
    raw = gzip.decompress((tmp_path / sub / "t10k-images-idx3-ubyte.gz").read_bytes()) if gz else \
        (tmp_path / sub / "t10k-images-idx3-ubyte").read_bytes()
    assert data.images[3, 0, 7, 20] == raw[16 + 3 * 784 + 7 * 28 + 20]


def test_default_roots_and_system_dir(tmp_path, monkeypatch):
    env_root, system = tmp_path / "env", tmp_path / "system"
    env_root.mkdir()
    monkeypatch.setenv("BENCH_DATA", str(env_root))
    assert datasets.roots() == [env_root, Path.home() / ".cache" / "ssl-bench" / "data"]
    msg = user_error(datasets.load, "fashion-mnist", "test", download=False)
    assert str(env_root) in msg and ".cache/ssl-bench/data" in msg and "apt-get install dataset-fashion-mnist" in msg
    monkeypatch.setattr(datasets.idx, "SYSTEM_DIR", system)
    expected = fx.write_fashion_mnist(system)
    check(datasets.load("fashion-mnist", "test", download=False), "fashion-mnist", "test", expected["test"])
    expected = fx.write_cifar10(env_root)
    check(datasets.load("cifar10", "test", download=False), "cifar10", "test", expected["test"])


def test_loads_are_independent_copies(tmp_path):
    fx.write_cifar10(tmp_path)
    a = datasets.load("cifar10", "train", data_dir=tmp_path)
    a.images.zero_()
    a.labels.fill_(-1)
    b = datasets.load("cifar10", "train", data_dir=tmp_path)
    assert b.images.any() and (b.labels >= 0).all()


# --- missing data ----------------------------------------------------------------------------

def test_missing_without_download_names_paths(tmp_path):
    msg = user_error(datasets.load, "cifar10", "train", data_dir=tmp_path, download=False)
    assert "'cifar10'" in msg and str(tmp_path / "cifar-10-batches-py") in msg and "download disabled" in msg
    msg = user_error(datasets.load, "svhn", "test", data_dir=tmp_path, download=False)
    assert str(tmp_path / "test_32x32.mat") in msg


def test_missing_with_failing_download(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def offline(root, train=True, download=False):
        calls.append((root, train, download, socket.getdefaulttimeout()))
        raise OSError("simulated: network unreachable")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    before = socket.getdefaulttimeout()
    msg = user_error(datasets.load, "cifar10", "test", data_dir=tmp_path, download=True)
    assert calls == [(str(tmp_path), False, True, 20.0)]
    assert socket.getdefaulttimeout() == before
    assert str(tmp_path / "cifar-10-batches-py") in msg
    assert "download" in msg and "failed" in msg and "simulated: network unreachable" in msg


# --- corrupt files ---------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncate_data", "truncate_gzip", "bad_magic", "count_mismatch"])
def test_damaged_idx(tmp_path, damage):
    fx.write_fashion_mnist(tmp_path, gz=True)
    images = tmp_path / "train-images-idx3-ubyte.gz"
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    target = labels if damage == "count_mismatch" else images
    raw = gzip.decompress(target.read_bytes())
    if damage == "truncate_data":
        target.write_bytes(gzip.compress(raw[:-100]))
    elif damage == "truncate_gzip":
        target.write_bytes(target.read_bytes()[:-40])
    elif damage == "bad_magic":
        target.write_bytes(gzip.compress(b"\x00\x00\x09\x03" + raw[4:]))
    else:
        target.write_bytes(gzip.compress(fx.idx_bytes(np.zeros(3, dtype=np.uint8))))
    msg = user_error(datasets.load, "fashion-mnist", "train", data_dir=tmp_path, download=False)
    assert str(target) in msg


@pytest.mark.parametrize("damage", [b"not a pickle at all", "truncate", "wrong_shape"])
def test_corrupt_cifar_pickle(tmp_path, damage):
    fx.write_cifar10(tmp_path)
    datasets.load("cifar10", "train", data_dir=tmp_path)  # cached good copy must not mask the damage
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    if damage == "truncate":
        batch.write_bytes(batch.read_bytes()[:500])
    elif damage == "wrong_shape":
        batch.write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    else:
        batch.write_bytes(damage)
    msg = user_error(datasets.load, "cifar10", "train", data_dir=tmp_path)
    assert str(batch) in msg


def test_truncated_stl10(tmp_path):
    fx.write_stl10(tmp_path)
    x = tmp_path / "stl10_binary" / "test_X.bin"
    x.write_bytes(x.read_bytes()[:-10])
    assert str(x) in user_error(datasets.load, "stl10", "test", data_dir=tmp_path)


def test_corrupt_svhn(tmp_path):
    (tmp_path / "test_32x32.mat").write_bytes(b"MATLAB garbage")
    assert "test_32x32.mat" in user_error(datasets.load, "svhn", "test", data_dir=tmp_path)


# --- digits and real Fashion-MNIST -----------------------------------------------------------

def test_digits_split():
    train, test = datasets.load("digits", "train"), datasets.load("digits", "test")
    assert (len(train), len(test)) == (1438, 359)
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0
    again = datasets.load("digits", "test")
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    assert torch.bincount(test.labels, minlength=10).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]
    # The split is disjoint and complete: train + test is all 1,797 images once.
    from sklearn.datasets import load_digits
    everything = np.round(load_digits().images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    both = torch.cat([train.images, test.images]).reshape(1797, -1).numpy()
    assert sorted(map(bytes, both)) == sorted(map(bytes, everything))
    # The hardcoded constants are this split's pixel statistics.
    px = train.images.double() / 255
    assert train.mean == pytest.approx((px.mean().item(),), abs=1e-4)
    assert train.std == pytest.approx((px.std(unbiased=False).item(),), abs=1e-4)


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist(monkeypatch):
    monkeypatch.setattr(datasets.idx, "SYSTEM_DIR", FASHION_SYSTEM)
    train = datasets.load("fashion-mnist", "train", download=False)
    test = datasets.load("fashion-mnist", "test", download=False)
    assert tuple(train.images.shape) == (60000, 1, 28, 28) and tuple(test.images.shape) == (10000, 1, 28, 28)
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert abs(train.images.float().mean().item() / 255 - train.mean[0]) < 1e-3


# --- transforms and subsets ------------------------------------------------------------------

def make(channels: int, n: int = 20, side: int = 8, classes: int = 4) -> ImageData:
    x = torch.from_numpy(fx.images(n, channels, side, 0))
    y = torch.arange(n) % classes
    return ImageData("toy", "train", x, y, tuple(map(str, range(classes))), (0.5,) * channels, (0.25,) * channels)


def test_resize():
    data = make(3)
    up = datasets.resize(data, 32)
    assert tuple(up.images.shape) == (20, 3, 32, 32) and up.images.dtype == torch.uint8
    assert up.size == 32 and torch.equal(up.labels, data.labels) and up.mean == data.mean
    flat = ImageData("toy", "train", torch.full((2, 1, 28, 28), 77, dtype=torch.uint8),
                     torch.zeros(2, dtype=torch.long), ("a",), (0.3,), (0.3,))
    assert (datasets.resize(flat, 11).images == 77).all()  # constant stays constant: rounded, not truncated
    assert datasets.resize(data, 8) is data
    user_error(datasets.resize, data, 0)


def test_to_channels():
    gray = make(1)
    rgb = datasets.to_channels(gray, 3)
    assert rgb.channels == 3 and all(torch.equal(rgb.images[:, c], gray.images[:, 0]) for c in range(3))
    assert rgb.mean == (0.5,) * 3
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    x[0, 0] = 255  # pure red
    x[0, 1, 0, 0] = 255  # white-ish pixel: red + green
    colour = ImageData("toy", "train", x, torch.zeros(1, dtype=torch.long), ("a",), (0.4, 0.5, 0.6), (0.1, 0.2, 0.3))
    g = datasets.to_channels(colour, 1)
    assert g.images[0, 0].tolist() == [[round(255 * 0.886), 76], [76, 76]]
    assert g.mean[0] == pytest.approx(0.299 * 0.4 + 0.587 * 0.5 + 0.114 * 0.6)
    assert g.std[0] == pytest.approx(0.299 * 0.1 + 0.587 * 0.2 + 0.114 * 0.3)
    assert datasets.to_channels(colour, 3) is colour
    user_error(datasets.to_channels, colour, 2)


def test_balanced_subset():
    labels = torch.arange(1000) % 10
    labels[labels == 9] = 8  # make class 8 twice as big as the others (imbalanced input)
    a = datasets.balanced_subset(labels, 7, seed=0)
    assert a.dtype == torch.int64 and torch.equal(a, a.sort().values)
    assert torch.bincount(labels[a]).tolist() == [7] * 9
    assert torch.equal(a, datasets.balanced_subset(labels, 7, seed=0))
    assert not torch.equal(a, datasets.balanced_subset(labels, 7, seed=1))
    tenth = datasets.balanced_subset(labels, 0.1, seed=3)
    assert torch.bincount(labels[tenth]).tolist() == [10] * 8 + [20]
    assert torch.bincount(labels[datasets.balanced_subset(labels, 0.001, seed=3)]).tolist() == [1] * 9
    assert len(datasets.balanced_subset(labels, 1.0, seed=3)) == 1000
    for bad in (0, 0.0, 1.5, 201, -3, True, "10%"):
        user_error(datasets.balanced_subset, labels, bad, 0)


def test_subset():
    data = make(3)
    part = data.subset(torch.tensor([3, 1]))
    assert len(part) == 2 and torch.equal(part.images[0], data.images[3]) and part.labels.tolist() == [3, 1]
    assert part.classes == data.classes and part.mean == data.mean
