"""Bad input: exit code 2, ONE line `error: ...` on stderr, no traceback, nothing overwritten.

Most cases go through `bench.cli.main([...])` in-process (fast); two go through a subprocess
to prove that the real command prints no traceback.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

import datasets
from bench import suites
from bench.results import store
from bench.backbones import BACKBONES
from bench.cli import main
from bench.errors import UserError
from bench.suites import SUITES, expand

ROOT = Path(__file__).resolve().parent.parent
FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")


def one_error(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; assert exit 2 and exactly one `error: ...` line; return it."""
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def run_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--suite", "quick", "--methods", "random-init", "--out", str(tmp_path / "out"),
            "--no-download", *extra]


@pytest.fixture
def test_suite():
    """Register throw-away suites built from `quick`; removed afterwards."""
    added = []

    def make(name: str, **changes):
        SUITES.register(name, replace(SUITES.get("quick"), name=name, **changes))
        added.append(name)
        return name

    yield make
    for name in added:
        SUITES._items.pop(name)


def test_unknown_suite(capsys, tmp_path):
    msg = one_error(capsys, ["run", "--suite", "cifar11", "--out", str(tmp_path / "out")])
    assert "unknown suite 'cifar11'" in msg and "quick" in msg
    assert not (tmp_path / "out").exists()


def test_unknown_method(capsys, tmp_path):
    msg = one_error(capsys, ["run", "--suite", "quick", "--methods", "simclr,moco", "--out", str(tmp_path / "out")])
    assert "unknown method 'moco'" in msg and "simclr" in msg
    assert not (tmp_path / "out").exists()


def test_unknown_backbone(capsys, tmp_path, test_suite):
    with pytest.raises(UserError, match="unknown backbone 'resnet-999'"):
        BACKBONES.get("resnet-999")
    # the backbone belongs to the suite: --set cannot change it ...
    msg = one_error(capsys, run_args(tmp_path, "--set", "train.backbone=resnet18"))
    assert "train.backbone: unknown key" in msg
    # ... and a suite naming an unknown backbone stops before any data is loaded or written
    name = test_suite("test-bad-backbone", backbone="resnet-999")
    msg = one_error(capsys, ["run", "--suite", name, "--out", str(tmp_path / "out")])
    assert "unknown backbone 'resnet-999'" in msg and "resnet-tiny" in msg
    assert not (tmp_path / "out").exists()


def test_unknown_dataset(capsys, tmp_path, test_suite):
    with pytest.raises(UserError, match="unknown dataset 'nope'"):
        datasets.load("nope", "train")
    name = test_suite("test-bad-dataset", dataset="cifar-10")
    msg = one_error(capsys, ["run", "--suite", name, "--out", str(tmp_path / "out")])
    assert "unknown dataset 'cifar-10'" in msg and "did you mean 'cifar10'" in msg
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "-3", "two"])
def test_bad_epochs(capsys, tmp_path, value):
    msg = one_error(capsys, run_args(tmp_path, "--epochs", value))
    assert "--epochs" in msg and ("must be >= 1" in msg or "positive integer" in msg)
    assert not (tmp_path / "out").exists()


def test_bad_seeds(capsys, tmp_path):
    msg = one_error(capsys, run_args(tmp_path, "--seeds", "0"))
    assert "--seeds" in msg and "must be >= 1" in msg


@pytest.mark.parametrize("item, expected", [
    ("train.epoch=3", "train.epoch: unknown key; train has: epochs"),
    ("simclr.temprature=0.2", "simclr.temprature: unknown key"),
    ("moco.lr=0.1", "unknown scope 'moco'"),
    ("temperature=0.2", "expected SCOPE.KEY=VALUE"),
])
def test_unknown_set_key(capsys, tmp_path, item, expected):
    msg = one_error(capsys, run_args(tmp_path, "--set", item))
    assert expected in msg
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("item, expected", [
    ("train.epochs=ten", "train.epochs=ten: expected a value of type int"),
    ("simclr.temperature=warm", "expected a value of type float"),
    ("train.amp=maybe", "expected a value of type bool"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
])
def test_set_value_of_wrong_type(capsys, tmp_path, item, expected):
    msg = one_error(capsys, run_args(tmp_path, "--set", item))
    assert expected in msg
    assert not (tmp_path / "out").exists()


def test_missing_data_dir(capsys, tmp_path):
    msg = one_error(capsys, ["run", "--suite", "cifar10-all", "--data-dir", "/nonexistent",
                             "--out", str(tmp_path / "out")])
    assert "/nonexistent" in msg and "does not exist" in msg


def test_dataset_missing_offline(capsys, tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    msg = one_error(capsys, ["run", "--suite", "cifar10-all", "--data-dir", str(empty), "--no-download",
                             "--out", str(tmp_path / "out")])
    assert "dataset 'cifar10'" in msg and "not found" in msg and "download disabled" in msg
    assert f"tried {empty}" in msg  # names the places it looked
    assert not list((tmp_path / "out").glob("runs/*"))


def _damaged_fashion_mnist(d: Path, how: str) -> Path:
    """A data dir with Fashion-MNIST's four files, the train images damaged."""
    d.mkdir()
    for name in ("train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        os.symlink(FASHION_SYSTEM / name, d / name)
    raw = (FASHION_SYSTEM / "train-images-idx3-ubyte.gz").read_bytes()
    if how == "truncated":
        data = raw[: len(raw) // 3]
    elif how == "corrupted":  # flip bytes in the middle of the deflate stream
        mid = len(raw) // 2
        data = raw[:mid] + bytes(b ^ 0xFF for b in raw[mid:mid + 64]) + raw[mid + 64:]
    else:  # a valid gzip of an IDX file that lost its tail
        data = gzip.compress(gzip.decompress(raw)[:10_000])
    (d / "train-images-idx3-ubyte.gz").write_bytes(data)
    return d / "train-images-idx3-ubyte.gz"


@pytest.mark.skipif(not FASHION_SYSTEM.is_dir(), reason="needs Debian's dataset-fashion-mnist")
@pytest.mark.parametrize("how", ["truncated", "corrupted", "short-idx"])
def test_damaged_dataset_file(capsys, tmp_path, how):
    # the --data-dir copy is found first (before /usr/share/datasets), so it must be refused, not skipped
    bad = _damaged_fashion_mnist(tmp_path / "data", how)
    before = bad.read_bytes()
    msg = one_error(capsys, ["run", "--suite", "fmnist-ci", "--methods", "random-init", "--data-dir",
                             str(tmp_path / "data"), "--no-download", "--out", str(tmp_path / "out")])
    assert str(bad) in msg
    assert bad.read_bytes() == before
    assert not list((tmp_path / "out").glob("runs/*"))


def test_unwritable_output_dir(capsys, tmp_path):
    blocker = tmp_path / "somefile"
    blocker.write_text("a regular file, so nothing can be created below it (even as root)")
    msg = one_error(capsys, run_args(tmp_path)[:-3] + ["--out", str(blocker / "x"), "--no-download"])
    assert str(blocker / "x") in msg and "not writable" in msg
    assert blocker.read_text().startswith("a regular file")


def test_results_of_another_schema_version(capsys, tmp_path):
    suite = SUITES.get("quick")
    spec = expand(suite, ("random-init",), 1)[0]
    run_dir = tmp_path / "out" / "runs" / suites.resolve(suite, spec, {}).run_id
    run_dir.mkdir(parents=True)
    path = run_dir / "result.json"
    path.write_text(json.dumps({"schema_version": store.SCHEMA_VERSION + 1, "status": "ok", "metrics": {}}))
    before = path.read_bytes(), path.stat().st_mtime_ns
    msg = one_error(capsys, run_args(tmp_path))
    assert "schema_version" in msg and str(path) in msg
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert sorted(p.name for p in run_dir.iterdir()) == ["result.json"]


def test_report_without_runs(capsys, tmp_path):
    msg = one_error(capsys, ["report", str(tmp_path)])
    assert "no runs" in msg and str(tmp_path) in msg
    assert list(tmp_path.iterdir()) == []
    msg = one_error(capsys, ["report", str(tmp_path / "missing")])
    assert "does not exist" in msg


def test_check_with_malformed_reference(tmp_path):
    ref = tmp_path / "ref"
    ref.mkdir()
    (ref / "results.json").write_text('{"suite": "quick", "methods": {"simclr": ')  # cut off
    before = (ref / "results.json").read_bytes()
    p = subprocess.run([sys.executable, "-m", "bench", "check", "--suite", "quick", "--reference", str(ref)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "results.json" in lines[0], lines
    assert (ref / "results.json").read_bytes() == before


# ---- the real command: one line, no traceback -----------------------------------------------------
def test_subprocess_prints_one_line_and_no_traceback(tmp_path):
    empty = tmp_path / "data"
    empty.mkdir()
    p = subprocess.run([sys.executable, "-m", "bench", "run", "--suite", "cifar10-all", "--data-dir", str(empty),
                        "--no-download", "--out", str(tmp_path / "out")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: dataset 'cifar10' (train split) not found"), p.stderr


@pytest.mark.parametrize("damage,needle", [
    ({"config": None}, "missing config"),
    ({"status": "finished"}, "status 'finished'"),
    ({"config": {"suite": "quick"}}, "its config cannot be read"),
    ({"config": {"seed": "x"}}, "its config cannot be read"),
])
def test_malformed_result_record_is_one_line(capsys, tmp_path, damage, needle):
    """A result.json that is valid JSON but not a run record: `bench report` names the file."""
    record = {"schema_version": store.SCHEMA_VERSION, "run_id": "r", "spec_hash": "0" * 64,
              "spec": {"suite": "quick", "method": "simclr", "seed": 0, "aug_mode": "shared"},
              "config": {"suite": "quick", "method": "simclr", "seed": 0}, "status": "ok"}
    for k, v in damage.items():
        record[k] = v if not (k == "config" and isinstance(v, dict) and "seed" in v) else {**record["config"], **v}
    path = tmp_path / "runs" / "r" / "result.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(record))
    before = path.read_bytes()
    msg = one_error(capsys, ["report", str(tmp_path)])
    assert needle in msg and str(path) in msg, msg
    assert path.read_bytes() == before
