"""Learning curves: kNN top-1 points at the right epochs (0 = the initialisation), training
bit-identical with and without them, the points surviving an interrupted and resumed run, their
time kept out of train_s, and result.json holding them (none for untrained baselines).

Tiny budget: the quick suite (digits, 8px) with a 260-image pretraining subset (2 steps per
epoch), a 300-image kNN bank and 200 query images, trained in-process on the CPU.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench import suites
from bench.cli import main
from bench.engine.data import SuiteData
from bench.engine.execute import build_augment, build_method, learning_curve
from bench.engine.train import LOG, TrainContext, TrainFailed, train
from bench.suites import SUITES, RunSpec

EPOCHS = 3
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data() -> SuiteData:
    quick = SUITES.get("quick")
    suite = replace(quick, train=replace(quick.train, train_subset=260),
                    eval=replace(quick.eval, train_subset=300, test_subset=200, transfer=()))
    return SuiteData(suite, None, False, CPU)


def resolved(method: str, **eval_sets: str):
    sets = {"train": {"epochs": str(EPOCHS), "train_subset": "260"}, "eval": dict(eval_sets)}
    return suites.resolve(SUITES.get("quick"), RunSpec("quick", method, 0), sets)


def run_train(run, data: SuiteData, run_dir: Path, on_epoch_end=None):
    """(method, outcome) of training `run` into `run_dir` with `on_epoch_end`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    method = build_method(run, data.info, CPU)
    aug = build_augment(run, data.info, CPU)
    ctx = TrainContext(run_dir=run_dir, device=CPU, seed=run.seed, spec_hash=run.spec_hash, on_epoch_end=on_epoch_end)
    return method, train(method, data.images, data.labels, aug, run.train, run.optim, ctx)


def losses(run_dir: Path) -> list[str]:
    with open(run_dir / LOG, newline="") as f:
        return [r["loss"] for r in csv.DictReader(f)]


def callback(run, data: SuiteData):
    point, _ = learning_curve(run, data, build_augment(run, data.info, CPU), CPU)
    return point


@pytest.mark.parametrize("every, epochs", [(1, [0, 1, 2, 3]), (2, [0, 2, 3])])
def test_points_at_every_nth_epoch_the_last_and_zero(data, tmp_path, every, epochs):
    run = resolved("simclr", curve_every=str(every))
    _, out = run_train(run, data, tmp_path, callback(run, data))
    assert [p["epoch"] for p in out.curve] == epochs
    assert all(0.0 <= p["knn_top1"] <= 100.0 for p in out.curve)
    assert out.curve[-1]["knn_top1"] != out.curve[0]["knn_top1"]  # the encoder learned something


def test_curves_off_and_the_query_subset(data):
    assert learning_curve(resolved("simclr", curve_every="0"), data, None, CPU) == (None, None)
    run = resolved("simclr", curve_test_subset="100")
    _, protocol = learning_curve(run, data, build_augment(run, data.info, CPU), CPU)
    assert protocol == ("kNN k=50 T=0.1, bank: 300 un-augmented train images, queries: 100 class-balanced test "
                        "images (fixed, seed 0), every 1 epoch(s), the last and epoch 0 (initialisation)")


@pytest.mark.parametrize("name", ["simclr", "byol", "vae"])
def test_training_is_bit_identical_with_and_without_curves(data, tmp_path, name):
    run = resolved(name)
    plain, out_plain = run_train(run, data, tmp_path / "plain")
    curved, out_curved = run_train(run, data, tmp_path / "curved", callback(run, data))
    assert not out_plain.curve and len(out_curved.curve) == EPOCHS + 1
    a, b = plain.state_dict(), curved.state_dict()  # weights and BatchNorm running statistics
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert losses(tmp_path / "plain") == losses(tmp_path / "curved")


def test_a_point_leaves_train_mode_rng_and_batchnorm_alone(data):
    run = resolved("simclr")
    method = build_method(run, data.info, CPU).train()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    rng = torch.get_rng_state()
    point = callback(run, data)(EPOCHS, method)
    assert point["epoch"] == EPOCHS and method.training and all(m.training for m in method.modules())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in method.state_dict().items())


def test_resumed_run_keeps_every_point(data, tmp_path):
    run = resolved("simclr")
    point = callback(run, data)
    _, ref = run_train(run, data, tmp_path / "ref", point)

    def killed_after_epoch_1(epochs_done, method):
        if epochs_done == 2:  # before epoch 2's checkpoint: the run resumes from epoch 1
            raise RuntimeError("killed")
        return point(epochs_done, method)

    with pytest.raises(TrainFailed):
        run_train(run, data, tmp_path / "run", killed_after_epoch_1)
    _, out = run_train(run, data, tmp_path / "run", point)
    assert out.resumed_from_epoch == 1
    assert out.curve == ref.curve  # every epoch, 0 included, and exactly the same values


def test_curve_time_is_not_training_time(data, tmp_path):
    run, pause = resolved("simclr"), 0.3
    point = callback(run, data)

    def slow(epochs_done, method):
        time.sleep(pause)
        return point(epochs_done, method)

    t0 = time.perf_counter()
    _, out = run_train(run, data, tmp_path, slow)
    wall = time.perf_counter() - t0
    assert len(out.curve) == EPOCHS + 1
    assert out.train_s <= wall - pause * len(out.curve)


def test_result_json_holds_the_curve_and_its_protocol(tmp_path, capsys):
    args = ["run", "--suite", "quick", "--methods", "simclr,pixels", "--epochs", "2", "--out", str(tmp_path),
            "--no-download", "--device", "cpu", "--set", "train.train_subset=260", "--set", "eval.transfer=",
            "--set", "eval.label_fractions=", "--set", "eval.probe_grid_points=3", "--set", "eval.train_subset=300",
            "--set", "eval.test_subset=200"]
    assert main(args) == 0
    capsys.readouterr()
    results = {r["config"]["method"]: r for r in
               (json.loads(p.read_text()) for p in tmp_path.glob("runs/*/result.json"))}
    simclr, pixels = results["simclr"], results["pixels"]
    assert [p["epoch"] for p in simclr["curve"]] == [0, 1, 2]
    assert simclr["train"]["curve"] == simclr["curve"]
    assert "bank: 300 un-augmented train images, queries: all 200 test images" in simclr["curve_protocol"]
    # the last point is the final checkpoint's kNN top-1 when the queries are the whole test split
    assert simclr["curve"][-1]["knn_top1"] == simclr["metrics"]["knn_top1"]
    assert pixels["curve"] == [] and pixels["curve_protocol"] is None
    html = (tmp_path / "leaderboard.html").read_text()
    assert "alt='learning curves' src='data:image/png;base64," in html
