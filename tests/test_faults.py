"""Faults: a killed run resumes bit-exactly, bad checkpoints are refused, failing and diverging
runs are stored and the suite carries on, concurrent `bench run`s never train a run twice.

Everything runs the quick suite (digits, 8px) on a tiny budget: a 260-image pretraining subset
(2 steps per epoch) and a cut-down evaluation (no transfer, 3-point probe grid, small subsets).
"""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import methods
from bench import config, suites
from bench.results import store
from bench.cli import main
from bench.suites import SUITES, expand
from bench.engine.train import CHECKPOINT, LOG, load_checkpoint
from bench.errors import UserError
from methods.base import AUGMENTED, Method

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--device", "cpu", "--set", "train.train_subset=260", "--set", "eval.transfer=", "--set", "eval.label_fractions=",
        "--set", "eval.probe_grid_points=3", "--set", "eval.train_subset=300", "--set", "eval.test_subset=200"]


# one thread per process: on 2 shared cores, several multi-threaded processes mostly wait on
# each other (exactness is compared between processes with the same thread count)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "bench", "run", "--suite", "quick", "--no-download", *args, *FAST]


def run_dir_of(out: Path, method: str, extra_sets: list[str] = (), epochs: int | None = None) -> Path:
    """The run directory `bench run` uses for `method` (seed 0) with FAST + extra sets."""
    args = [*FAST, *extra_sets]
    items = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    sets = config.parse_sets(items)
    if epochs:
        sets.setdefault("train", {})["epochs"] = str(epochs)
    suite = SUITES.get("quick")
    spec = expand(suite, (method,), 1)[0]
    return out / "runs" / suites.resolve(suite, spec, sets).run_id


def result_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "result.json").read_text())


def only_run(out: Path) -> Path:
    dirs = list((out / "runs").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


# ---- kill -9 mid-run, rerun: resumes, metrics bit-identical --------------------------------------
def test_kill_and_resume_is_exact(tmp_path):
    args = ["--methods", "simclr", "--epochs", "3"]
    ref_out, out = tmp_path / "ref", tmp_path / "killed"
    env = ENV
    ref = subprocess.Popen(bench_cmd(*args, "--out", str(ref_out)), cwd=ROOT, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(bench_cmd(*args, "--out", str(out)), cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    ckpts = []
    while not ckpts and victim.poll() is None and time.monotonic() < deadline:
        ckpts = list(out.glob(f"runs/*/{CHECKPOINT}"))  # written atomically after each epoch
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert ckpts, "the run finished (or timed out) before its first checkpoint appeared"
    run_dir = ckpts[0].parent
    assert not (run_dir / "result.json").exists()
    killed_at = torch.load(ckpts[0], weights_only=True)["epoch"]
    assert 1 <= killed_at < 3

    resumed = subprocess.run(bench_cmd(*args, "--out", str(out)), cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=240)
    assert ref.wait(timeout=240) == 0, ref.stderr.read()
    assert resumed.returncode == 0, resumed.stderr

    a, b = result_of(only_run(ref_out)), result_of(run_dir)
    assert b["train"]["resumed_from_epoch"] == killed_at
    assert a["run_id"] == b["run_id"]
    assert a["metrics"] == b["metrics"]  # exact, not approximate
    assert a["feature_digests"] == b["feature_digests"]
    with open(run_dir / LOG, newline="") as f:
        log = list(csv.DictReader(f))
    with open(only_run(ref_out) / LOG, newline="") as f:
        ref_log = list(csv.DictReader(f))
    assert [int(r["step"]) for r in log] == list(range(1, len(ref_log) + 1))  # no duplicated or lost steps
    assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]
    # (a rerun skipping complete runs: test_failures_are_stored_and_the_suite_goes_on)


# ---- checkpoints: spec hash, corruption, weights_only ---------------------------------------------
def _fast_args(out: Path) -> list[str]:
    return ["run", "--suite", "quick", "--methods", "simclr", "--epochs", "1", "--out", str(out), "--no-download", *FAST]


def test_corrupt_checkpoint_is_refused(tmp_path, capsys, one_thread):
    run_dir = run_dir_of(tmp_path, "simclr", epochs=1)
    run_dir.mkdir(parents=True)
    garbage = b"PK\x03\x04 this is not a checkpoint" * 10
    (run_dir / CHECKPOINT).write_bytes(garbage)
    assert main(_fast_args(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: checkpoint") and "corrupt" in err[-1]
    assert (run_dir / CHECKPOINT).read_bytes() == garbage  # left for the user to inspect
    assert not (run_dir / "result.json").exists()


def test_checkpoint_of_another_spec_is_refused(tmp_path, capsys, one_thread):
    run_dir = run_dir_of(tmp_path, "simclr", epochs=1)
    run_dir.mkdir(parents=True)
    torch.save({"spec_hash": "0" * 64, "epoch": 1, "step": 2, "train_s": 1.0, "model": {}, "optimizer": {}},
               run_dir / CHECKPOINT)
    before = (run_dir / CHECKPOINT).read_bytes()
    assert main(_fast_args(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: checkpoint") and "different run spec" in err[-1]
    assert (run_dir / CHECKPOINT).read_bytes() == before
    assert not (run_dir / "result.json").exists()


class _Payload:  # anything weights_only=True must refuse to unpickle
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_checkpoint_is_loaded_weights_only(tmp_path):
    path = tmp_path / CHECKPOINT
    torch.save({"spec_hash": "abc", "model": _Payload()}, path)
    with pytest.raises(UserError, match="corrupt or unreadable"):
        load_checkpoint(path, "abc")
    torch.save({"spec_hash": "abc", "model": {"w": torch.ones(2)}}, path)
    assert load_checkpoint(path, "abc")["model"]["w"].sum() == 2


# ---- failing / diverging runs are stored; the suite carries on; exit 1 ---------------------------
@dataclass(frozen=True)
class _NoConfig:
    pass


class _Failing(Method):
    """Test-only: trains one step, then raises."""
    paradigm = "contrastive"
    views = (AUGMENTED,)
    Config = _NoConfig
    error: type[BaseException] = RuntimeError
    message = "boom: a bug in the method"

    def __init__(self, cfg, backbone, data) -> None:
        super().__init__(cfg, backbone, data)
        self.head = nn.Linear(backbone.num_features, 4)
        self.calls = 0

    def training_step(self, views, labels):
        self.calls += 1
        if self.calls > 1:
            raise self.error(self.message)
        return self.head(self.backbone(views[0])).pow(2).mean(), {}


class _Boom(_Failing):
    name = "test-boom"


class _OOM(_Failing):
    name = "test-oom"
    error = torch.OutOfMemoryError
    message = "CUDA out of memory. Tried to allocate 20.00 GiB"


@pytest.fixture
def failing_methods():
    for cls in (_Boom, _OOM):
        methods.register(cls)
    yield
    for cls in (_Boom, _OOM):
        methods.METHODS._items.pop(cls.name)


def test_failures_are_stored_and_the_suite_goes_on(tmp_path, capsys, failing_methods, one_thread):
    args = ["run", "--suite", "quick", "--methods", "test-boom,simclr,test-oom,random-init", "--epochs", "1",
            "--out", str(tmp_path), "--no-download", "--set", "simclr.optim.lr=1e30", *FAST]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "3 run(s) failed or diverged" in err
    by_method = {r["config"]["method"]: (r, Path(p).parent)
                 for p in map(str, tmp_path.glob("runs/*/result.json")) for r in [json.loads(Path(p).read_text())]}
    assert set(by_method) == {"test-boom", "simclr", "test-oom", "random-init"}

    boom = by_method["test-boom"][0]
    assert boom["status"] == "failed" and boom["reason"].startswith("RuntimeError: boom")
    assert boom["train"]["step"] == 1 and "at training step 1" in boom["reason"] and "boom" in boom["traceback"]
    oom = by_method["test-oom"][0]
    assert oom["status"] == "failed" and oom["reason"].startswith("out of memory: OutOfMemoryError")
    simclr = by_method["simclr"][0]
    assert simclr["status"] == "diverged" and "non-finite loss" in simclr["reason"]
    assert simclr["train"]["step"] >= 1 and f"at step {simclr['train']['step']}" in simclr["reason"]
    assert simclr["metrics"] == {} and simclr["timings"] == {}  # every field is present; nothing was evaluated
    ok = by_method["random-init"][0]
    assert ok["status"] == "ok" and 0 < ok["metrics"]["knn_top1"] <= 100

    # rerun: the complete run is skipped, the others are retried and their old records kept
    first = {m: result_of(d) for m, (_, d) in by_method.items()}
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.count("complete, skipped") == 1 and err.count(": training ") == 3
    for m, (_, d) in by_method.items():
        if m == "random-init":
            assert not (d / "result.attempt1.json").exists()
        else:
            assert json.loads((d / "result.attempt1.json").read_text()) == first[m]
            assert result_of(d)["status"] == first[m]["status"]


# ---- two processes on one output directory -------------------------------------------------------
def test_run_lock_is_exclusive(tmp_path):
    with store.run_lock(tmp_path / "r") as first:
        with store.run_lock(tmp_path / "r") as second:
            assert first and not second
    with store.run_lock(tmp_path / "r") as again:
        assert again


def test_concurrent_runs_train_each_run_once(tmp_path):
    """Both processes reach a run whose lock is held (as if a third process were training it,
    then died); they wait, exactly one trains it, the other takes its result."""
    out = tmp_path / "out"
    held = run_dir_of(out, "pixels")
    env = ENV
    logs = [tmp_path / f"p{i}.err" for i in range(2)]
    args = ["--methods", "pixels,random-init", "--out", str(out)]
    with store.run_lock(held) as locked:
        assert locked
        procs = [subprocess.Popen(bench_cmd(*args), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(log, "w")) for log in logs]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not all("will wait" in log.read_text() for log in logs):
            assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
            time.sleep(0.1)
    codes = [p.wait(timeout=240) for p in procs]
    errs = [log.read_text() for log in logs]
    assert codes == [0, 0], errs
    both = "".join(errs)
    assert both.count("training pixels") == 1 and both.count("training random-init") == 1, errs
    assert both.count("finished by another process") + both.count("complete, skipped") == 2, errs
    for r in tmp_path.glob("out/runs/*/result.json"):
        assert json.loads(r.read_text())["status"] == "ok"
    assert len(list(tmp_path.glob("out/runs/*/result.json"))) == 2
