"""User image folders ("bring your own data"): `image_folder` (labeled) and `unlabeled_folder`.

Layouts
    * torchvision's ImageFolder split layout: ROOT/train/<class>/... and ROOT/test/<class>/...
    * one folder ROOT/<class>/..., split per class: round(test_fraction * n) images of every
      class (at least 1, at most n - 1) go to test, picked by a generator seeded with
      (split_seed, crc32(class name)) from the class's *sorted* paths, so the split does not
      depend on file-system order and adding images to one class leaves the others' split alone.
    * `unlabeled_folder`: every image under ROOT at any depth; train split only, labels -1.
    Images are found recursively inside class folders by extension (IMAGE_EXTENSIONS, any case);
    hidden files and folders (".DS_Store", macOS "._x.jpg" resource forks, ".ipynb_checkpoints")
    are ignored. Classes are the sorted train class-folder names; labels index into them.

Pixels
    * Channels are decided once per dataset (both splits), from the file headers at registration
      (`Image.open(p).mode` does not decode): 1 channel when EVERY image is grayscale (modes 1, L,
      LA, I, I;16*, F), else 3 and every image is converted to RGB. Alpha is dropped, not
      composited, as torchvision's loader does; palette ("P") images count as colour.
      16-bit images (I;16*, I) are scaled by 255/65535; float ("F") images are clipped to 0..255.
    * EXIF orientation is applied (photos come out upright, as viewers show them).
    * Geometry: the centred square of side min(w, h) is resampled to size x size with PIL's
      bilinear filter, which is antialiased (its support widens with the downscale factor).
      That is "resize the shorter side to `size`, then centre-crop", done in one resampling on
      exact (sub-pixel) crop coordinates. JPEGs are first DCT-downscaled by a power of two while
      staying at least size x size (`Image.draft`), which makes large photos much cheaper.

Caches
    * Decoded uint8 arrays: $BENCH_CACHE if set, else ~/.cache/ssl-bench/folders/, one .npz per
      dataset version, named by a hash of the absolute root and the options (size, test_fraction,
      split_seed, on_bad_file, channels) plus a hash of every image's relative path, size and
      mtime; any change to the files makes a new key (the older file for the same root and
      options is deleted). Written atomically (temporary file + os.replace); a corrupt cache
      file is ignored and rewritten.
    * Train-split mean/std: ROOT/.ssl-bench-stats.json (entries keyed by the same content key),
      or stats-<hash>.json in the cache folder above when ROOT is not writable.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import sys
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageOps

from bench.errors import UserError

from .base import Arrays, DatasetInfo, Format, one_line, user_format

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".pbm", ".bmp", ".tif", ".tiff", ".webp", ".gif")
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
BAD_FILE_CHOICES = ("error", "skip")
PROGRESS_MIN_FILES = 2000  # a progress bar below this would flash by
STATS_FILE = ".ssl-bench-stats.json"
_CACHE_VERSION = 1  # bump when the decoding changes, so old caches are not reused
_STATS_ENTRIES_KEPT = 8  # several sizes / splits of one root may share its stats file
_MODE_SCAN_CHUNK = 256  # headers read per batch while looking for a colour image

Stats = tuple[tuple[float, ...], tuple[float, ...]]


# --- small shared helpers (also used by datasets.npz) ------------------------------------------

def cache_dir() -> Path:
    """Where decoded user datasets (and unwritable-root stats) are cached; read at call time."""
    env = os.environ.get("BENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ssl-bench" / "folders"


def check_size(size: object) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise UserError(f"image size must be a positive integer, got {size!r}")


def check_split(test_fraction: object, split_seed: object) -> None:
    """UserError for a test fraction or split seed that cannot work."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) \
            or not 0.0 < float(test_fraction) < 1.0:
        raise UserError(f"test_fraction must be a number strictly between 0 and 1, got {test_fraction!r}")
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise UserError(f"split_seed must be a non-negative integer, got {split_seed!r}")


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise UserError(f"dataset name must be a non-empty string without surrounding spaces, got {name!r}")
    return name


def stratified_test_mask(labels: np.ndarray, test_fraction: float, seed: int,
                         class_names: tuple[str, ...], where: str) -> np.ndarray:
    """Boolean test mask: round(test_fraction * n) rows of every class (clipped to 1..n-1).

    Rows must already be in a canonical (sorted) order. Each class draws from its own generator
    seeded by (seed, crc32(name)), so its split depends only on its own files.
    """
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        name = class_names[c] if c < len(class_names) else str(c)
        if len(rows) < 2:
            raise UserError(f"class {name!r} in {where} has {len(rows)} image, too few to split into train and "
                            f"test; add images to it or remove it")
        k = int(np.clip(np.floor(len(rows) * test_fraction + 0.5), 1, len(rows) - 1))
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        mask[rng.permutation(rows)[:k]] = True
    return mask


def channel_stats(images: np.ndarray) -> Stats:
    """Per-channel mean and population std of uint8 (N, C, H, W) images, in [0, 1] units.

    Counted as a 256-bin histogram per channel: exact integer counts, then float64 moments,
    so nothing is lost to float accumulation however many pixels there are.
    """
    values = np.arange(256, dtype=np.float64)
    mean, std = [], []
    for c in range(images.shape[1]):
        hist = np.zeros(256, dtype=np.int64)
        for i in range(0, len(images), 1024):  # bounds the copy made by ravel() of a strided channel
            hist += np.bincount(images[i:i + 1024, c].ravel(), minlength=256)
        n = hist.sum()
        m = float((values * hist).sum() / n)
        var = float((((values - m) ** 2) * hist).sum() / n)
        mean.append(m / 255.0)
        std.append(float(np.sqrt(var)) / 255.0)
    return tuple(mean), tuple(std)


def digest(*parts: object) -> str:
    """sha256 hex of a JSON rendering of `parts` (stable across runs and machines)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def write_atomically(path: Path, write: Callable[[object], None]) -> None:
    """Write `path` via a temporary file in its folder and os.replace, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# In-process memory of the last decoded datasets: `load` asks for train, then test, then stats,
# and each of those would otherwise read the cache file again.
_MEMO: OrderedDict[str, object] = OrderedDict()
_MEMO_SIZE = 2
_MEMO_LOCK = threading.Lock()


def recall(key: str) -> object | None:
    with _MEMO_LOCK:
        if key in _MEMO:
            _MEMO.move_to_end(key)
            return _MEMO[key]
    return None


def remember(key: str, value: object) -> None:
    with _MEMO_LOCK:
        _MEMO[key] = value
        _MEMO.move_to_end(key)
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)


def _read_stats_file(path: Path) -> dict[str, dict]:
    try:
        entries = json.loads(path.read_text())["entries"]
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):  # absent or damaged: start afresh
        return {}


def cached_stats(data_place: Path, key: str, size: int, compute: Callable[[], tuple[Stats, int]]) -> Stats:
    """Train mean/std from DATA_PLACE/.ssl-bench-stats.json (or the cache-dir fallback), else computed and stored."""
    primary = data_place / STATS_FILE
    fallback = cache_dir() / f"stats-{digest(str(data_place))[:16]}.json"
    for path in (primary, fallback):
        entry = _read_stats_file(path).get(key)
        try:
            mean, std = tuple(float(v) for v in entry["mean"]), tuple(float(v) for v in entry["std"])  # type: ignore[index]
            if len(mean) == len(std) > 0:
                return mean, std
        except (TypeError, KeyError, ValueError):
            pass
    (mean, std), n = compute()
    entry = {"mean": list(mean), "std": list(std), "size": size, "train_images": n}
    for path in (primary, fallback):
        entries = _read_stats_file(path)
        entries.pop(key, None)
        entries[key] = entry
        for old in list(entries)[:-_STATS_ENTRIES_KEPT]:
            del entries[old]
        text = json.dumps({"ssl-bench-stats": 1, "entries": entries}, indent=1).encode()
        try:
            write_atomically(path, lambda f: f.write(text))  # type: ignore[attr-defined]
            break
        except OSError:  # read-only data folder: fall back to the cache dir; if that fails too, just recompute
            continue
    return mean, std


# --- scanning the tree ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _File:
    rel: str  # posix path relative to the dataset root
    label: int  # index into the classes, -1 when unlabeled
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class _Tree:
    root: Path
    layout: str  # "split" (train/ + test/), "single" (split by test_fraction) or "unlabeled"
    classes: tuple[str, ...]
    files: dict[str, tuple[_File, ...]]  # split -> files in sorted order


def _root(root: str | Path) -> Path:
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise UserError(f"image folder {path} does not exist")
    if not path.is_dir():
        raise UserError(f"image folder {path} is not a directory")
    return path


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _images_under(folder: Path) -> list[Path]:
    """Image files under `folder` at any depth, sorted; hidden files and folders skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not _hidden(d)]
        found += [Path(dirpath) / f for f in filenames
                  if not _hidden(f) and f.lower().endswith(IMAGE_EXTENSIONS)]
    return sorted(found)


def _class_folders(split_dir: Path) -> dict[str, list[Path]]:
    """Class name -> its sorted image paths; UserError for no class folders, no images, an empty class."""
    dirs = sorted(d for d in split_dir.iterdir() if d.is_dir() and not _hidden(d.name))
    if not dirs:
        loose = sum(1 for p in split_dir.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_EXTENSIONS))
        also = f" (it holds {loose} image(s) directly: use unlabeled_folder for images without classes)" if loose else ""
        raise UserError(f"no class folders under {split_dir}: expected {split_dir}/<class>/<image>{also}")
    images = {d.name: _images_under(d) for d in dirs}
    if not any(images.values()):
        raise UserError(f"no images under {split_dir} (looked for {', '.join(IMAGE_EXTENSIONS)} in its class folders)")
    for d in dirs:
        if not images[d.name]:
            raise UserError(f"class folder {d} has no images; add some or remove the folder")
    return images


def _files(root: Path, paths: Iterable[Path], label: int) -> list[_File]:
    out = []
    for p in paths:
        try:
            st = p.stat()
        except OSError as e:
            raise UserError(f"cannot read image {p} ({one_line(e.strerror or e)})") from None
        out.append(_File(p.relative_to(root).as_posix(), label, st.st_size, st.st_mtime_ns))
    return out


def _scan_labeled(root: Path, test_fraction: float, split_seed: int) -> _Tree:
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir() or test_dir.is_dir():
        if not (train_dir.is_dir() and test_dir.is_dir()):
            have, lack = (train_dir, test_dir) if train_dir.is_dir() else (test_dir, train_dir)
            raise UserError(f"{root} has {have.name}/ but no {lack.name}/ folder: add {lack}/<class>/ images, "
                            f"or put the class folders directly in {root} to split them by test_fraction")
        train, test = _class_folders(train_dir), _class_folders(test_dir)
        classes = tuple(sorted(train))
        for c in sorted(test):
            if c not in train:
                raise UserError(f"test class {c!r} ({test_dir / c}) has no folder in {train_dir}; "
                                f"train and test need the same class names")
        index = {c: i for i, c in enumerate(classes)}
        files = {split: tuple(f for c in sorted(tree) for f in _files(root, tree[c], index[c]))
                 for split, tree in (("train", train), ("test", test))}
        return _Tree(root, "split", classes, files)
    images = _class_folders(root)
    classes = tuple(sorted(images))
    every = [f for i, c in enumerate(classes) for f in _files(root, images[c], i)]
    labels = np.array([f.label for f in every], dtype=np.int64)
    test = stratified_test_mask(labels, test_fraction, split_seed, classes, str(root))
    files = {"train": tuple(f for f, t in zip(every, test) if not t),
             "test": tuple(f for f, t in zip(every, test) if t)}
    return _Tree(root, "single", classes, files)


def _scan_unlabeled(root: Path) -> _Tree:
    paths = _images_under(root)
    if not paths:
        raise UserError(f"no images under {root} (looked for {', '.join(IMAGE_EXTENSIONS)} at any depth)")
    return _Tree(root, "unlabeled", (), {"train": tuple(_files(root, paths, -1))})


# --- decoding ------------------------------------------------------------------------------------

class _ColourImage(Exception):
    """A colour image in a dataset registered as grayscale (the files changed since)."""


def _mode(path: Path) -> str:
    with Image.open(path) as img:  # reads the header only
        return img.mode


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    if img.mode in _SIXTEEN_BIT_MODES:  # PIL's own conversion clips 16-bit values at 255
        wide = np.asarray(img).astype(np.float64)
        img = Image.fromarray(np.round(np.clip(wide, 0, 65535) * (255 / 65535)).astype(np.uint8), "L")
    return img.convert("L" if channels == 1 else "RGB")


def _decode(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file -> uint8 (channels, size, size): shorter side to `size`, centre square."""
    with Image.open(path) as img:
        if channels == 1 and img.mode not in GRAY_MODES:
            raise _ColourImage(img.mode)
        img.draft(None, (size, size))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale when that stays >= size
        img = _to_mode(ImageOps.exif_transpose(img), channels)
        w, h = img.size
        side = min(w, h)
        box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
        out = np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, box=box), dtype=np.uint8)
    return out[None] if channels == 1 else out.transpose(2, 0, 1)


def _workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)  # decoding is CPU-bound, plus a few for file latency


def _detect_channels(root: Path, files: Iterable[_File], skip_bad: bool) -> int:
    """3 as soon as one header says colour, else 1; unreadable headers fail unless skipped."""
    paths = [root / f.rel for f in files]

    def mode_or_error(p: Path) -> str | Exception:
        try:
            return _mode(p)
        except Exception as e:  # PIL raises many types for broken files (OSError, SyntaxError, ...)
            return e

    with concurrent.futures.ThreadPoolExecutor(_workers()) as pool:
        for i in range(0, len(paths), _MODE_SCAN_CHUNK):
            chunk = paths[i:i + _MODE_SCAN_CHUNK]
            for p, mode in zip(chunk, pool.map(mode_or_error, chunk)):
                if isinstance(mode, Exception):
                    if not skip_bad:
                        raise _bad_image(p, mode)
                elif mode not in GRAY_MODES:
                    return 3
    return 1


def _bad_image(path: Path, e: BaseException) -> UserError:
    reason = one_line(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
    return UserError(f"cannot read image {path} ({reason}); fix or delete it, or pass on_bad_file='skip'")


@dataclass(frozen=True)
class _Decoded:
    classes: tuple[str, ...]
    splits: dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images NCHW uint8, labels int64)
    skipped: tuple[str, ...]  # relative paths of unreadable images left out


def _decode_tree(tree: _Tree, size: int, channels: int, skip_bad: bool, name: str) -> _Decoded:
    """Decode every image of the tree in a thread pool (PIL releases the GIL while decoding)."""
    order = [(split, f) for split in tree.files for f in tree.files[split]]
    images = np.empty((len(order), channels, size, size), dtype=np.uint8)

    def work(i: int) -> Exception | None:
        try:
            images[i] = _decode(tree.root / order[i][1].rel, size, channels)
            return None
        except Exception as e:  # reported per file below
            return e

    from tqdm import tqdm  # lazy: only needed when decoding

    with concurrent.futures.ThreadPoolExecutor(_workers()) as pool:
        results = list(tqdm(pool.map(work, range(len(order))), total=len(order), file=sys.stderr, unit="img",
                            desc=f"decoding {tree.root}", disable=len(order) <= PROGRESS_MIN_FILES))
    for (_, f), err in zip(order, results):
        if isinstance(err, _ColourImage):
            raise UserError(f"image {tree.root / f.rel} is colour (mode {err}), but dataset {name!r} was registered "
                            f"as grayscale: the files changed since; register the dataset again")
    bad = [i for i, err in enumerate(results) if err is not None]
    if bad and not skip_bad:
        raise _bad_image(tree.root / order[bad[0]][1].rel, results[bad[0]])  # type: ignore[arg-type]
    keep = np.ones(len(order), dtype=bool)
    keep[bad] = False
    splits, start = {}, 0
    for split, files in tree.files.items():  # `order` holds each split's files in one run
        rows = slice(start, start + len(files))
        labels = np.array([f.label for f in files], dtype=np.int64)[keep[rows]]
        # Views when nothing was skipped: no second copy of a possibly large array.
        splits[split] = (images[rows] if keep[rows].all() else images[rows][keep[rows]], labels)
        start += len(files)
    if not len(splits["train"][1]):
        raise UserError(f"no readable images under {tree.root} (all {len(bad)} are unreadable)")
    if tree.classes:
        present = np.bincount(splits["train"][1], minlength=len(tree.classes))
        for i in np.flatnonzero(present == 0):
            raise UserError(f"every train image of class {tree.classes[i]!r} under {tree.root} is unreadable; "
                            f"fix them or remove the class")
    return _Decoded(tree.classes, splits, tuple(order[i][1].rel for i in bad))


def _save(path: Path, key: str, d: _Decoded) -> None:
    arrays = {f"{split}_{part}": a for split, (x, y) in d.splits.items() for part, a in (("images", x), ("labels", y))}
    write_atomically(path, lambda f: np.savez(f, key=np.array(key), classes=np.array(d.classes, dtype=str),
                                              skipped=np.array(d.skipped, dtype=str), **arrays))


def _load(path: Path, key: str, splits: Iterable[str], channels: int, size: int) -> _Decoded | None:
    """The cached decode at `path` if it is complete and for `key`; None if absent or damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            out = {}
            for split in splits:
                x, y = z[f"{split}_images"], z[f"{split}_labels"]
                if x.dtype != np.uint8 or x.shape[1:] != (channels, size, size) or y.dtype != np.int64 \
                        or y.shape != (len(x),):
                    return None
                out[split] = (x, y)
            return _Decoded(tuple(str(c) for c in z["classes"]), out, tuple(str(s) for s in z["skipped"]))
    except Exception:  # a truncated or foreign file (BadZipFile, EOFError, KeyError, ...): decode again
        return None


# --- the Format ------------------------------------------------------------------------------------

class _FolderDataset:
    """State behind one registered folder: its options, and the tree as seen at registration."""

    def __init__(self, name: str, root: Path, size: int, test_fraction: float, split_seed: int,
                 on_bad_file: str, labeled: bool) -> None:
        self.name, self.root, self.size = name, root, size
        self.test_fraction, self.split_seed, self.on_bad_file = float(test_fraction), split_seed, on_bad_file
        self.labeled = labeled
        tree = self.scan()
        self.classes = tree.classes
        self.counts = {split: len(files) for split, files in tree.files.items()}
        self.channels = _detect_channels(root, (f for files in tree.files.values() for f in files),
                                         on_bad_file == "skip")

    def scan(self) -> _Tree:
        if self.labeled:
            return _scan_labeled(self.root, self.test_fraction, self.split_seed)
        return _scan_unlabeled(self.root)

    def options(self) -> dict[str, object]:
        return {"version": _CACHE_VERSION, "layout": "labeled" if self.labeled else "unlabeled",
                "root": str(self.root), "size": self.size, "test_fraction": self.test_fraction,
                "split_seed": self.split_seed, "on_bad_file": self.on_bad_file, "channels": self.channels}

    def current(self) -> tuple[_Tree, str]:
        """The tree as it is now and its content key; UserError if its classes changed since registration."""
        tree = self.scan()
        if tree.classes != self.classes:
            raise UserError(f"the class folders of dataset {self.name!r} under {self.root} changed since it was "
                            f"registered ({len(self.classes)} then, {len(tree.classes)} now); register it again")
        listing = [[split, f.rel, f.label, f.size, f.mtime_ns] for split, files in tree.files.items() for f in files]
        return tree, digest(self.options(), listing)

    def decoded(self) -> tuple[_Decoded, str]:
        tree, key = self.current()
        hit = recall(key)
        if isinstance(hit, _Decoded):
            return hit, key
        prefix = digest(self.options())[:16]
        path = cache_dir() / f"{prefix}-{key[:24]}.npz"
        d = _load(path, key, tree.files, self.channels, self.size)
        if d is None:
            d = _decode_tree(tree, self.size, self.channels, self.on_bad_file == "skip", self.name)
            try:
                _save(path, key, d)
                for old in path.parent.glob(f"{prefix}-*.npz"):  # earlier versions of the same folder
                    if old != path:
                        old.unlink(missing_ok=True)
            except OSError as e:
                print(f"warning: could not cache decoded images in {path.parent} ({one_line(e.strerror or e)}); "
                      "they will be decoded again next time", file=sys.stderr)
        if d.skipped:  # once per process and dataset version, cached or not
            print(f"skipped {len(d.skipped)} unreadable image(s) under {self.root} (first: {self.root / d.skipped[0]})",
                  file=sys.stderr)
        remember(key, d)
        return d, key

    def read(self, place: Path, split: str) -> Arrays:
        if split not in self.counts:
            raise UserError(f"dataset {self.name!r} is an unlabeled pretraining folder ({self.root}) and has no "
                            f"{split} split; use it only for pretraining")
        d, _ = self.decoded()
        images, labels = d.splits[split]
        return images, labels, d.classes

    def stats(self) -> Stats:
        d, key = self.decoded()
        train = d.splits["train"][0]
        return cached_stats(self.root, key, self.size, lambda: (channel_stats(train), len(train)))


def _check_bad_file(on_bad_file: object) -> None:
    if on_bad_file not in BAD_FILE_CHOICES:
        raise UserError(f"on_bad_file must be one of {', '.join(BAD_FILE_CHOICES)}, got {on_bad_file!r}")


def image_folder(name: str, root: str | Path, size: int, *, test_fraction: float = 0.2, split_seed: int = 0,
                 on_bad_file: str = "error", description: str = "") -> Format:
    """A labeled dataset from ROOT/train/<class>/ + ROOT/test/<class>/, or ROOT/<class>/ split by test_fraction.

    test_fraction and split_seed only matter for the single-folder layout (they are checked in
    both). The tree is scanned and validated here, and the image headers read to choose 1 or 3
    channels (UserError naming the path); images are decoded, cached and their train mean/std
    computed at the first `datasets.load`.
    """
    check_name(name)
    check_size(size)
    check_split(test_fraction, split_seed)
    _check_bad_file(on_bad_file)
    ds = _FolderDataset(name, _root(root), size, test_fraction, split_seed, on_bad_file, labeled=True)
    counts = f"{ds.counts['train']} train / {ds.counts['test']} test images"
    info = DatasetInfo(name, ds.channels, size, len(ds.classes),
                       description or f"image folder {ds.root}: {counts}, {len(ds.classes)} classes",
                       f"your image folder {ds.root}")
    return user_format(info, ds.root, ds.read, ds.stats)


def unlabeled_folder(name: str, root: str | Path, size: int, *, on_bad_file: str = "error",
                     description: str = "") -> Format:
    """A pretraining-only dataset: every image under ROOT (any depth); train split only, labels -1, no classes."""
    check_name(name)
    check_size(size)
    _check_bad_file(on_bad_file)
    ds = _FolderDataset(name, _root(root), size, 0.0, 0, on_bad_file, labeled=False)  # no split: options unused
    info = DatasetInfo(name, ds.channels, size, 0,
                       description or f"unlabeled image folder {ds.root}: {ds.counts['train']} images (pretraining only)",
                       f"your image folder {ds.root}")
    return user_format(info, ds.root, ds.read, ds.stats)

