"""Issue #15 through the CLI: a user's image folder, a TOML suite on a timm backbone and a plugin
method (docs/examples/barlow_twins.py) train, evaluate and report beside simclr; the trained
backbone exports into timm; and every bad input is exit 2 with one line and nothing written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "docs" / "examples" / "barlow_twins.py"
CLASSES = ("circle", "square", "stripes")


def _image(kind: str, rng: np.random.Generator, size: int) -> Image.Image:
    """A small synthetic picture of one of three classes, in colour, at a random size."""
    yy, xx = np.mgrid[:size, :size] / size
    if kind == "circle":
        mask = (yy - 0.5) ** 2 + (xx - 0.5) ** 2 < rng.uniform(0.05, 0.15)
    elif kind == "square":
        a, b = rng.uniform(0.1, 0.3), rng.uniform(0.6, 0.9)
        mask = (yy > a) & (yy < b) & (xx > a) & (xx < b)
    else:
        mask = np.sin(xx * rng.uniform(15, 25)) > 0
    colour = rng.integers(80, 255, size=3)
    img = np.where(mask[..., None], colour, rng.integers(0, 60, size=3)).astype(np.uint8)
    img = np.clip(img + rng.integers(0, 30, size=img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img)


def write_folder(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, n in per_class.items():
        for c in CLASSES:
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _image(c, rng, int(rng.integers(18, 40))).save(d / f"{i}.png")
    return root


SUITE = """\
name = "byo-shapes"
description = "three synthetic shape classes from PNG files"
backbone = "{backbone}"
image_size = 16
methods = ["simclr", "barlow-twins"]
baselines = ["pixels"]

[dataset]
name = "shapes"
format = "image-folder"
path = "{path}"

[train]
epochs = 1
batch_size = 16
warmup_epochs = 0

[aug]
crop_scale_min = 0.5

[eval]
knn_k = 5
knn_k_small = 3
label_fractions = []
curve_every = 1
feature_batch = 64
"""

@pytest.fixture(autouse=True, scope="module")
def _restore_registries():
    """What this module's plug-ins and suite files register is removed afterwards, as it would be
    in a new process: other test modules see the built-in registries only."""
    import sys

    import datasets
    import methods
    from bench import plugins, suite_file
    from bench.backbones import BACKBONES
    registries = [methods.METHODS, methods.BASELINES, BACKBONES]
    snapshots = [r.snapshot() for r in registries]
    datasets_before, loaded_before = set(datasets.DATASETS), set(plugins._loaded)
    yield
    for registry, snapshot in zip(registries, snapshots):
        registry.restore(snapshot)
    for name in set(datasets.DATASETS) - datasets_before:
        datasets.unregister(name)
    suite_file._owned.clear()
    suite_file._registered.clear()
    for path in set(plugins._loaded) - loaded_before:
        sys.modules.pop(plugins._loaded.pop(path), None)


FAST = ["--set", "barlow-twins.proj_hidden_dim=64", "--set", "barlow-twins.proj_output_dim=64",
        "--set", "simclr.proj_hidden_dim=64", "--threads", "1"]


def write_suite(tmp: Path, path: str = "shapes", backbone: str = "timm:resnet10t", extra: str = "") -> Path:
    f = tmp / "suite.toml"
    f.write_text(SUITE.format(path=path, backbone=backbone) + extra)
    return f


@pytest.fixture(scope="module")
def byo_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("byo")
    write_folder(tmp / "shapes", {"train": 16, "test": 6})
    out = tmp / "out"
    rc = main(["run", "--suite-file", str(write_suite(tmp)), "--plugin", str(PLUGIN), "--out", str(out),
               "--tensorboard", *FAST])
    assert rc == 0
    return out


def test_suite_file_with_plugin_method_trains_evaluates_and_reports(byo_run: Path) -> None:
    results = [json.loads(p.read_text()) for p in byo_run.glob("runs/*/result.json")]
    assert sorted(r["spec"]["method"] for r in results) == ["barlow-twins", "pixels", "simclr"]
    for r in results:
        assert r["status"] == "ok", r.get("reason")
        assert r["config"]["backbone"] == "timm:resnet10t"
        assert r["config"]["dataset"] == "shapes"
        assert r["config"]["data_source"]["format"] == "image-folder"
        assert 0.0 <= r["metrics"]["knn_top1"] <= 100.0
    html = (byo_run / "leaderboard.html").read_text()
    assert "barlow-twins" in html and "simclr" in html and "shapes" in html
    # TensorBoard: one event directory per run, with the training terms and the curve
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    bt = next(r for r in results if r["spec"]["method"] == "barlow-twins")
    acc = EventAccumulator(str(byo_run / "tensorboard" / bt["run_id"]))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/barlow", "curve/knn_top1"} <= tags
    assert len(acc.Scalars("train/loss")) == 3  # 48 images / batch 16, one epoch


def test_a_second_run_of_the_suite_file_reuses_every_result(byo_run: Path, tmp_path: Path, capsys) -> None:
    suite = byo_run.parent / "suite.toml"
    before = {p: p.stat().st_mtime_ns for p in byo_run.glob("runs/*/result.json")}
    assert main(["run", "--suite-file", str(suite), "--plugin", str(PLUGIN), "--out", str(byo_run), *FAST]) == 0
    assert "complete, skipped" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in byo_run.glob("runs/*/result.json")} == before


def test_list_suites_show_prints_a_suite_file_that_loads_back(tmp_path: Path, capsys) -> None:
    from bench import suite_file, suites
    assert main(["list", "suites", "--show", "cifar10-all"]) == 0
    f = tmp_path / "cifar10-all.toml"
    f.write_text(capsys.readouterr().out)
    assert suite_file.load(f) == suites.get("cifar10-all")


def test_list_methods_shows_a_plugin(capsys) -> None:
    assert main(["list", "methods", "--plugin", str(PLUGIN)]) == 0
    assert "barlow-twins" in capsys.readouterr().out


def test_plugins_from_the_environment(monkeypatch, capsys) -> None:
    monkeypatch.setenv("BENCH_PLUGINS", str(PLUGIN))
    assert main(["list", "methods"]) == 0
    assert "barlow-twins" in capsys.readouterr().out


# --- bad inputs: exit 2, one `error:` line, nothing written ------------------------------------

def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    good = write_folder(tmp / "shapes", {"train": 4, "test": 2})
    cases: dict[str, tuple[list[str], str]] = {}

    def suite(name: str, **kw) -> str:
        d = tmp / name
        d.mkdir()
        return str(write_suite(d, **kw))

    cases["missing folder"] = (["--suite-file", suite("a", path=str(tmp / "nowhere"))], "nowhere")
    empty = shutil.copytree(good, tmp / "empty")
    for p in (empty / "train" / "square").iterdir():
        p.unlink()
    cases["empty class folder"] = (["--suite-file", suite("b", path=str(empty))], "square")
    broken = shutil.copytree(good, tmp / "broken")
    (broken / "train" / "circle" / "0.png").write_bytes(b"not a png at all")
    cases["unreadable image"] = (["--suite-file", suite("c", path=str(broken))], "0.png")
    absent = shutil.copytree(good, tmp / "absent")
    (absent / "test" / "triangle").mkdir()
    shutil.copy(absent / "test" / "circle" / "0.png", absent / "test" / "triangle" / "0.png")
    cases["test class absent from train"] = (["--suite-file", suite("d", path=str(absent))], "triangle")
    cases["unknown timm name"] = (["--suite-file", suite("e", path=str(good), backbone="timm:resnet10q")],
                                  "resnet10")
    cases["TOML unknown key"] = (["--suite-file", suite("f", path=str(good), extra="colour = 3\n")], "colour")
    wrong = tmp / "g.toml"
    wrong.write_text(SUITE.format(path=str(good), backbone="timm:resnet10t").replace("epochs = 1", 'epochs = "one"'))
    cases["TOML wrong type"] = (["--suite-file", str(wrong)], "train.epochs")
    raising = tmp / "raising.py"
    raising.write_text("import methods\nraise RuntimeError('my plugin is broken')\n")
    cases["plugin raises on import"] = (["--suite-file", suite("h", path=str(good)), "--plugin", str(raising)],
                                        "my plugin is broken")
    duplicate = tmp / "duplicate.py"
    duplicate.write_text(PLUGIN.read_text().replace('name = "barlow-twins"', 'name = "simclr"'))
    cases["plugin registers an existing name"] = (["--suite-file", suite("i", path=str(good)),
                                                   "--plugin", str(duplicate)], "simclr")
    return cases


CASES = ["missing folder", "empty class folder", "unreadable image", "test class absent from train",
         "unknown timm name", "TOML unknown key", "TOML wrong type", "plugin raises on import",
         "plugin registers an existing name"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_exit_2_with_one_line_and_writes_nothing(case: str, tmp_path: Path, capsys) -> None:
    args, needle = _bad_cases(tmp_path)[case]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = tmp_path / "out"
    rc = main(["run", *args, "--plugin", str(PLUGIN), "--out", str(out), *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], err
    assert not out.exists()
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_export_gives_the_runs_features_in_timm(byo_run: Path, tmp_path: Path) -> None:
    import timm

    from bench.engine.execute import build_method
    from bench.engine.train import CHECKPOINT, load_checkpoint
    from bench.results import store
    from methods.base import DataInfo
    run_dir = next(p.parent for p in byo_run.glob("runs/simclr-*/result.json"))
    out = tmp_path / "backbone.pt"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    net = timm.create_model("resnet10t", num_classes=0, in_chans=3)
    net.load_state_dict(torch.load(out))
    net.eval()
    record = store.read_result(run_dir)
    method = build_method(record.config, DataInfo(3, 16, 3, (0.5,) * 3, (0.25,) * 3), torch.device("cpu"))
    method.load_state_dict(load_checkpoint(run_dir / CHECKPOINT, record.spec_hash)["model"])
    method.eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net(x), method.encode(x))


def test_features_of_a_suite_file_run_rederive_from_its_stored_config(byo_run: Path, tmp_path: Path,
                                                                       capsys) -> None:
    """`features` needs no suite file: the run's config carries its dataset's definition."""
    from bench import suite_file
    run_dir = next(p.parent for p in byo_run.glob("runs/simclr-*/result.json"))
    for name in list(suite_file._owned):  # as in a new process: the dataset is not registered
        import datasets
        datasets.unregister(name)
        suite_file._owned.discard(name)
        suite_file._registered.pop(name, None)
    assert main(["features", str(run_dir), "--split", "test", "--out", str(tmp_path / "f.npz")]) == 0
    assert "matches the stored digest" in capsys.readouterr().out


def test_unlabeled_pretraining_folder_and_npz_arrays(tmp_path: Path) -> None:
    """Pretraining on a folder of unlabeled images (the supervised baseline is left out), and a
    dataset given as one .npz split here."""
    write_folder(tmp_path / "shapes", {"train": 6, "test": 3})
    unlabeled = tmp_path / "unlabeled"
    write_folder(unlabeled, {"extra": 12}, seed=1)  # 36 images, twice the labeled train split
    suite = write_suite(tmp_path, extra="")
    text = suite.read_text().replace('path = "shapes"', 'path = "shapes"\npretrain = "unlabeled"')
    text = text.replace('baselines = ["pixels"]', 'baselines = ["pixels", "supervised"]')
    suite.write_text(text)
    out = tmp_path / "out"
    assert main(["run", "--suite-file", str(suite), "--plugin", str(PLUGIN), "--out", str(out),
                 "--methods", "simclr", *FAST]) == 0
    (r,) = [json.loads(p.read_text()) for p in out.glob("runs/*/result.json")]
    assert r["status"] == "ok" and r["config"]["pretrain_dataset"] == "shapes-unlabeled"
    assert r["train"]["steps_per_epoch"] == 36 // 16  # the 36 unlabeled images, not the 18 labeled ones
    assert main(["run", "--suite-file", str(suite), "--plugin", str(PLUGIN), "--out", str(out),
                 "--methods", "supervised", *FAST]) == 2  # labels needed, none to pretrain on

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(30, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "arrays.npz", images=images, labels=np.arange(30) % 3)
    npz_suite = tmp_path / "npz.toml"
    npz_suite.write_text(SUITE.format(path="arrays.npz", backbone="resnet-tiny-s1")
                         .replace('format = "image-folder"', 'format = "npz"')
                         .replace('name = "shapes"', 'name = "arrays"').replace("batch_size = 16", "batch_size = 8"))
    out2 = tmp_path / "out2"
    assert main(["run", "--suite-file", str(npz_suite), "--plugin", str(PLUGIN), "--out", str(out2),
                 "--methods", "simclr", *FAST]) == 0
    (r,) = [json.loads(p.read_text()) for p in out2.glob("runs/*/result.json")]
    assert r["status"] == "ok" and r["config"]["data_source"]["format"] == "npz"
