"""User datasets (issue #15): image folders, unlabeled folders and npz arrays, on tiny trees in tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import datasets
import datasets.folder as folder
from tests.fixtures_formats import user_error

CLASSES = ("cat", "dog", "eel")
PER_CLASS = 6


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """Private HOME and cache dir, a cold in-process memo, and the registry restored afterwards."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("BENCH_CACHE", str(home / "cache"))
    folder._MEMO.clear()
    before = list(datasets.DATASETS)
    yield
    for name in [n for n in datasets.DATASETS if n not in before]:
        datasets.DATASETS.pop(name)
        datasets._FORMATS.pop(name)
    folder._MEMO.clear()


def random_image(rng: np.random.Generator, mode: str) -> Image.Image:
    w, h = (int(v) for v in rng.integers(10, 41, 2))
    if mode == "RGB":
        return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    if mode == "RGBA":
        return Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    if mode == "1":
        return Image.fromarray(rng.integers(0, 2, (h, w)).astype(bool))
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (h, w)).astype(np.uint16))
    return Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")


def write_classes(where: Path, rng: np.random.Generator, modes: tuple[str, ...] = ("RGB", "L"),
                  per_class: int = PER_CLASS, classes: tuple[str, ...] = CLASSES, reverse: bool = False) -> None:
    """`per_class` images per class folder under `where`, modes cycling, some PNG some JPEG."""
    jobs = [(c, i) for c in classes for i in range(per_class)]
    images = {job: random_image(rng, modes[k % len(modes)]) for k, job in enumerate(jobs)}
    for c, i in (reversed(jobs) if reverse else jobs):  # creation order must not matter
        (where / c).mkdir(parents=True, exist_ok=True)
        img = images[(c, i)]
        jpeg = i % 3 == 2 and img.mode in ("RGB", "L")
        img.save(where / c / (f"img{i}.jpg" if jpeg else f"img{i}.png"))


@pytest.fixture
def single(tmp_path) -> Path:
    """ROOT/<class>/...: 3 classes x 6 images of random sizes, RGB and L, one RGBA."""
    root = tmp_path / "single"
    write_classes(root, np.random.default_rng(0))
    random_image(np.random.default_rng(1), "RGBA").save(root / "dog" / "img9.png")
    return root


@pytest.fixture
def split(tmp_path) -> Path:
    """ROOT/train/<class>/ + ROOT/test/<class>/, all grayscale (L, 1 and 16-bit)."""
    root = tmp_path / "split"
    rng = np.random.default_rng(2)
    write_classes(root / "train", rng, modes=("L", "1", "I;16"))
    write_classes(root / "test", rng, modes=("L",), per_class=2, classes=CLASSES[:2])  # a class may lack test images
    return root


def register(fmt: datasets.Format) -> datasets.Format:
    datasets.register(fmt)
    return fmt


def cached_files() -> list[Path]:
    return sorted((Path(os.environ["BENCH_CACHE"])).glob("*.npz"))


# --- layouts, split, channels, geometry ------------------------------------------------------------

def test_single_folder_layout(single):
    fmt = register(datasets.image_folder("mine", single, 12))
    assert (fmt.info.channels, fmt.info.size, fmt.info.num_classes) == (3, 12, 3)
    assert datasets.names()[-1] == "mine" and datasets.info("mine") is fmt.info
    train, test = datasets.load("mine", "train"), datasets.load("mine", "test")
    assert train.classes == test.classes == CLASSES
    assert tuple(train.images.shape[1:]) == tuple(test.images.shape[1:]) == (3, 12, 12)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert len(train) + len(test) == 3 * PER_CLASS + 1
    assert len(train.mean) == len(train.std) == 3 and train.mean == test.mean


def test_split_layout_and_grayscale(split):
    fmt = register(datasets.image_folder("mine", split, 8, test_fraction=0.9))  # fraction unused here
    assert fmt.info.channels == 1  # L, 1 and I;16 are all grayscale
    train, test = datasets.load("mine", "train"), datasets.load("mine", "test")
    assert (train.channels, test.channels) == (1, 1)
    assert train.classes == test.classes == CLASSES
    assert np.bincount(train.labels.numpy()).tolist() == [PER_CLASS] * 3
    assert np.bincount(test.labels.numpy()).tolist() == [2, 2]


def test_one_colour_image_makes_the_dataset_rgb(split):
    gray = datasets.image_folder("gray", split, 8)
    random_image(np.random.default_rng(3), "RGBA").save(split / "test" / "cat" / "rgba.png")
    colour = datasets.image_folder("colour", split, 8)
    assert (gray.info.channels, colour.info.channels) == (1, 3)
    register(colour)
    assert datasets.load("colour", "train").channels == 3  # train follows the colour image in test


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((6, 9), 32896, dtype=np.uint16)).save(path)  # 32896 = 128 * 257
    assert Image.open(path).mode.startswith("I")
    assert (folder._decode(path, 4, 1) == 128).all()


def test_resize_shorter_side_then_centre_crop(tmp_path):
    # 60 x 20 (w x h): red left third, green centre square, blue right third
    x = np.zeros((20, 60, 3), dtype=np.uint8)
    x[:, :20, 0], x[:, 20:40, 1], x[:, 40:, 2] = 255, 255, 255
    Image.fromarray(x).save(tmp_path / "wide.png")
    Image.fromarray(x.transpose(1, 0, 2).copy()).save(tmp_path / "tall.png")
    for name, crop in (("wide.png", (10, 0, 20, 10)), ("tall.png", (0, 10, 10, 20))):
        out = folder._decode(tmp_path / name, 10, 3)
        assert out.shape == (3, 10, 10) and out.dtype == np.uint8
        # the same as resizing the shorter side to 10 and cropping the centre 10 x 10
        two_step = np.asarray(Image.open(tmp_path / name).resize((30, 10) if name == "wide.png" else (10, 30),
                                                                 Image.Resampling.BILINEAR).crop(crop))
        assert np.abs(out.transpose(1, 2, 0).astype(int) - two_step).max() <= 1
        inner = out[:, :, 1:-1] if name == "wide.png" else out[:, 1:-1, :]
        assert (inner[1] == 255).all() and (inner[[0, 2]] == 0).all()  # only the centre square survives
    assert folder._decode(tmp_path / "wide.png", 33, 3).shape == (3, 33, 33)  # upscaling works too


def test_stratified_split_is_deterministic_and_stratified(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_classes(a, np.random.default_rng(5), per_class=10)
    write_classes(b, np.random.default_rng(5), per_class=10, reverse=True)  # same files, other creation order
    register(datasets.image_folder("a", a, 8, test_fraction=0.3))
    register(datasets.image_folder("b", b, 8, test_fraction=0.3))
    register(datasets.image_folder("a-seed1", a, 8, test_fraction=0.3, split_seed=1))
    ta, tb, t1 = (datasets.load(n, "test") for n in ("a", "b", "a-seed1"))
    assert np.bincount(ta.labels.numpy()).tolist() == [3, 3, 3]  # 30% of every class
    assert len(datasets.load("a", "train")) == 21
    assert torch.equal(ta.images, tb.images) and torch.equal(ta.labels, tb.labels)
    assert np.bincount(t1.labels.numpy()).tolist() == [3, 3, 3] and not torch.equal(ta.images, t1.images)
    folder._MEMO.clear()
    assert torch.equal(datasets.load("a", "test").images, ta.images)  # same split from the disk cache


def test_split_helper_rounds_and_keeps_one_of_each():
    labels = np.repeat(np.arange(3), [2, 5, 11])
    mask = folder.stratified_test_mask(labels, 0.2, 0, ("x", "y", "z"), "here")
    assert [int(mask[labels == c].sum()) for c in range(3)] == [1, 1, 2]  # 0.4 -> 1 (at least one), 1.0, 2.2
    assert np.array_equal(mask, folder.stratified_test_mask(labels, 0.2, 0, ("x", "y", "z"), "here"))
    high = folder.stratified_test_mask(labels, 0.95, 0, ("x", "y", "z"), "here")
    assert [int(high[labels == c].sum()) for c in range(3)] == [1, 4, 10]  # at least one stays in train
    assert "'x'" in user_error(folder.stratified_test_mask, labels[1:], 0.2, 0, ("x", "y", "z"), "here")


# --- caches and stats ---------------------------------------------------------------------------

@pytest.fixture
def decode_calls(monkeypatch) -> list[Path]:
    calls: list[Path] = []
    real = folder._decode

    def counting(path, size, channels):
        calls.append(path)
        return real(path, size, channels)

    monkeypatch.setattr(folder, "_decode", counting)
    return calls


def test_cache_reused_and_invalidated(single, decode_calls):
    register(datasets.image_folder("mine", single, 8))
    n = 3 * PER_CLASS + 1
    first = datasets.load("mine", "train")
    datasets.load("mine", "test")
    assert len(decode_calls) == n  # both splits decoded once, together
    assert len(cached_files()) == 1
    folder._MEMO.clear()  # as in a new process
    again = datasets.load("mine", "train")
    assert len(decode_calls) == n and torch.equal(first.images, again.images)
    changed = single / "cat" / "img0.png"
    Image.new("RGB", (17, 23), (200, 10, 10)).save(changed)
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    datasets.load("mine", "train")
    assert len(decode_calls) == 2 * n
    assert len(cached_files()) == 1  # the stale version of this folder was removed
    assert not list(Path(os.environ["BENCH_CACHE"]).glob("*.tmp"))  # written via a temporary file, then renamed


def test_progress_bar_for_many_files(single, monkeypatch, capsys):
    register(datasets.image_folder("mine", single, 8))
    monkeypatch.setattr(folder, "PROGRESS_MIN_FILES", 3)  # the real threshold (2000) would make a slow test
    datasets.load("mine", "train")
    assert f"decoding {single}" in capsys.readouterr().err


def test_corrupt_cache_is_ignored_and_rewritten(single, decode_calls):
    register(datasets.image_folder("mine", single, 8))
    good = datasets.load("mine", "train")
    (cache,) = cached_files()
    cache.write_bytes(b"PK\x03\x04 not really a zip")
    folder._MEMO.clear()
    assert torch.equal(datasets.load("mine", "train").images, good.images)
    assert len(decode_calls) == 2 * (3 * PER_CLASS + 1)
    with np.load(cache) as z:
        assert z["train_images"].shape == tuple(good.images.shape)


def test_stats_file_matches_a_direct_computation(single):
    register(datasets.image_folder("mine", single, 8))
    train = datasets.load("mine", "train")
    x = train.images.double() / 255
    assert np.allclose(train.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-12)
    assert np.allclose(train.std, x.std(dim=(0, 2, 3), unbiased=False).numpy(), atol=1e-12)
    (entry,) = json.loads((single / folder.STATS_FILE).read_text())["entries"].values()
    assert tuple(entry["mean"]) == train.mean and tuple(entry["std"]) == train.std and entry["size"] == 8


def test_stats_fall_back_to_the_cache_dir_when_the_root_is_read_only(single, monkeypatch):
    real = folder.write_atomically

    def read_only_root(path, write):
        if path.parent == single:
            raise PermissionError(13, "Permission denied")
        real(path, write)

    monkeypatch.setattr(folder, "write_atomically", read_only_root)
    register(datasets.image_folder("mine", single, 8))
    mean = datasets.load("mine", "train").mean
    assert not (single / folder.STATS_FILE).exists()
    (fallback,) = Path(os.environ["BENCH_CACHE"]).glob("stats-*.json")
    (entry,) = json.loads(fallback.read_text())["entries"].values()
    assert tuple(entry["mean"]) == mean


# --- unlabeled folders ----------------------------------------------------------------------------

def test_unlabeled_folder(tmp_path):
    root = tmp_path / "raw"
    rng = np.random.default_rng(7)
    for i, sub in enumerate(["", "a", "a/b/c", ".hidden"]):
        (root / sub).mkdir(parents=True, exist_ok=True)
        random_image(rng, "L").save(root / sub / f"x{i}.png")
    (root / "notes.txt").write_text("not an image")
    fmt = register(datasets.unlabeled_folder("raw", root, 8))
    assert (fmt.info.channels, fmt.info.num_classes) == (1, 0)
    data = datasets.load("raw", "train")
    assert len(data) == 3 and data.classes == () and data.num_classes == 0 and not data.labeled
    assert data.labels.dtype == torch.int64 and (data.labels == -1).all()
    msg = user_error(datasets.load, "raw", "test")
    assert "unlabeled pretraining folder" in msg and "no test split" in msg
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"no images under {empty}" in user_error(datasets.unlabeled_folder, "e", empty, 8)


def test_unlabeled_image_data_needs_labels_of_minus_one():
    x = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError):
        datasets.ImageData("u", "train", x, torch.zeros(2, dtype=torch.int64), (), (0.5,), (0.2,))


# --- npz arrays ---------------------------------------------------------------------------------

def test_npz_folder_of_train_and_test(tmp_path):
    rng = np.random.default_rng(8)
    np.savez(tmp_path / "train.npz", images=rng.integers(0, 256, (12, 20, 30), dtype=np.uint8),
             labels=np.arange(12) % 4, classes=np.array(["a", "b", "c", "d"]))
    np.savez(tmp_path / "test.npz", images=rng.integers(0, 256, (5, 20, 30, 3), dtype=np.uint8),
             labels=np.arange(5) % 4)
    fmt = register(datasets.npz_arrays("arr", tmp_path, 16))
    assert (fmt.info.channels, fmt.info.num_classes) == (3, 4)  # gray train repeated to match colour test
    train, test = datasets.load("arr", "train"), datasets.load("arr", "test")
    assert tuple(train.images.shape) == (12, 3, 16, 16) and tuple(test.images.shape) == (5, 3, 16, 16)
    assert train.classes == ("a", "b", "c", "d") and train.labels.tolist() == (np.arange(12) % 4).tolist()
    assert (tmp_path / folder.STATS_FILE).is_file()
    x = train.images.double() / 255
    assert np.allclose(train.mean, x.mean(dim=(0, 2, 3)).numpy(), atol=1e-12)


def test_npz_single_file_is_split_like_a_folder(tmp_path):
    labels = np.repeat(np.arange(3), 10)
    path = tmp_path / "all.npz"
    np.savez(path, images=np.random.default_rng(9).integers(0, 256, (30, 8, 8, 1), dtype=np.uint8), labels=labels)
    register(datasets.npz_arrays("arr", path, 8, test_fraction=0.2, split_seed=3))
    train, test = datasets.load("arr", "train"), datasets.load("arr", "test")
    assert (train.channels, len(train), len(test)) == (1, 24, 6)
    assert np.bincount(test.labels.numpy()).tolist() == [2, 2, 2] and train.classes == ("0", "1", "2")
    mask = folder.stratified_test_mask(labels, 0.2, 3, ("0", "1", "2"), "")
    with np.load(path) as z:
        assert np.array_equal(test.images.numpy()[:, 0], z["images"][mask][..., 0])  # 8px: no resize


@pytest.mark.parametrize("arrays, key", [
    (dict(images=np.zeros((4, 8, 8), np.float32), labels=np.zeros(4, int)), "'images'"),
    (dict(images=np.zeros((4, 3, 8, 8), np.uint8), labels=np.zeros(4, int)), "'images'"),  # channels first
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(3, int)), "'labels'"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.zeros(4)), "'labels'"),  # float labels
    (dict(images=np.zeros((4, 8, 8), np.uint8)), "'labels'"),
    (dict(labels=np.zeros(4, int)), "'images'"),
    (dict(images=np.zeros((4, 8, 8), np.uint8), labels=np.arange(4), classes=np.array(["a"])), "'classes'"),
])
def test_npz_errors_name_the_file_and_key(tmp_path, arrays, key):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    msg = user_error(datasets.npz_arrays, "arr", path, 8)
    assert str(path) in msg and key in msg


def test_npz_missing_files(tmp_path):
    assert "does not exist" in user_error(datasets.npz_arrays, "arr", tmp_path / "nope.npz", 8)
    np.savez(tmp_path / "train.npz", images=np.zeros((2, 4, 4), np.uint8), labels=np.arange(2))
    assert str(tmp_path / "test.npz") in user_error(datasets.npz_arrays, "arr", tmp_path, 8)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    assert str(tmp_path / "junk.npz") in user_error(datasets.npz_arrays, "arr", tmp_path / "junk.npz", 8)


# --- errors ---------------------------------------------------------------------------------------

def test_tree_errors_name_the_path(tmp_path, single):
    missing = tmp_path / "missing"
    assert str(missing) in user_error(datasets.image_folder, "x", missing, 8)
    a_file = tmp_path / "file.png"
    a_file.write_bytes(b"")
    assert "not a directory" in user_error(datasets.image_folder, "x", a_file, 8)
    flat = tmp_path / "flat"
    flat.mkdir()
    random_image(np.random.default_rng(0), "L").save(flat / "a.png")
    msg = user_error(datasets.image_folder, "x", flat, 8)
    assert "no class folders" in msg and str(flat) in msg and "unlabeled_folder" in msg
    (single / "fox").mkdir()
    (single / "fox" / "readme.txt").write_text("no images here")
    assert str(single / "fox") in user_error(datasets.image_folder, "x", single, 8)
    hollow = tmp_path / "hollow"
    (hollow / "a").mkdir(parents=True)
    (hollow / "b").mkdir()
    assert "no images" in user_error(datasets.image_folder, "x", hollow, 8)


def test_split_layout_errors(split):
    write_classes(split / "test", np.random.default_rng(4), classes=("yak",), per_class=1)
    msg = user_error(datasets.image_folder, "x", split, 8)
    assert "'yak'" in msg and str(split / "test" / "yak") in msg and str(split / "train") in msg
    (split / "test").rename(split / "elsewhere")
    assert "no test/" in user_error(datasets.image_folder, "x", split, 8)


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, -0.1, 1.5, True, "0.2"])
def test_test_fraction_outside_0_1(single, fraction):
    assert "test_fraction" in user_error(datasets.image_folder, "x", single, 8, test_fraction=fraction)


def test_class_too_small_to_split(single):
    (single / "gnu").mkdir()
    random_image(np.random.default_rng(0), "L").save(single / "gnu" / "only.png")
    msg = user_error(datasets.image_folder, "x", single, 8)
    assert "'gnu'" in msg and "too few" in msg


def test_bad_option_values(single):
    assert "on_bad_file" in user_error(datasets.image_folder, "x", single, 8, on_bad_file="ignore")
    assert "on_bad_file" in user_error(datasets.unlabeled_folder, "x", single, 8, on_bad_file=None)
    assert "size" in user_error(datasets.image_folder, "x", single, 0)


def test_unreadable_images_fail_or_are_skipped(split, capsys):
    garbage = split / "train" / "cat" / "garbage.png"
    garbage.write_bytes(b"this is not a png")
    msg = user_error(datasets.image_folder, "x", split, 8)  # header unreadable: fails at registration
    assert str(garbage) in msg and "on_bad_file='skip'" in msg
    garbage.unlink()
    truncated = split / "train" / "dog" / "truncated.png"
    png = split / "train" / "dog" / "img0.png"
    truncated.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    register(datasets.image_folder("strict", split, 8))  # its header is fine: the decode fails, at load
    assert str(truncated) in user_error(datasets.load, "strict", "train")
    garbage.write_bytes(b"this is not a png")
    register(datasets.image_folder("lenient", split, 8, on_bad_file="skip"))
    capsys.readouterr()
    train = datasets.load("lenient", "train")
    assert len(train) == 3 * PER_CLASS
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"skipped 2 unreadable image(s) under {split} (first: {garbage})"]


def test_colour_image_added_after_registration(split):
    register(datasets.image_folder("mine", split, 8))
    random_image(np.random.default_rng(0), "RGB").save(split / "train" / "cat" / "new.png")
    assert "register" in user_error(datasets.load, "mine", "train")


# --- registry -------------------------------------------------------------------------------------

def test_register_twice_is_a_value_error(single):
    register(datasets.image_folder("mine", single, 8))
    with pytest.raises(ValueError, match=r"^dataset 'mine' is registered twice$"):
        datasets.register(datasets.image_folder("mine", single, 16))
    with pytest.raises(ValueError, match="registered twice"):
        datasets.register(datasets.image_folder("digits", single, 8))
    assert datasets.info("mine").size == 8
