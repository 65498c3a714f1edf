"""Intervals and ties (issue #17): the statistics against hand-computed values, the stored
predictions against the stored metrics of a real (tiny) run, and the leaderboard's tie marks on
runs written in the result.json shape: identical predictions are tied, far-apart ones are not,
and results stored before predictions existed still report (no interval, no tie, a note)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bench import cli, report
from bench.eval import intervals as iv
from bench.results import store
from tests.test_report import make_result, write_run

FAST = ["--device", "cpu", "--threads", "1", "--epochs", "1", "--set", "train.train_subset=260",
        "--set", "eval.transfer=", "--set", "eval.probe_grid_points=3", "--set", "eval.train_subset=300",
        "--set", "eval.test_subset=200", "--set", "eval.curve_every=0"]


# --- the statistics -------------------------------------------------------------------------------

def test_bootstrap_interval_is_fixed_and_as_wide_as_the_binomial_spread():
    rng = np.random.default_rng(1)
    correct = rng.random(4000) < 0.8
    acc = 100 * correct.mean()
    lo, hi = iv.bootstrap_interval(correct)
    assert (lo, hi) == iv.bootstrap_interval(correct)       # fixed seed: the same run, the same interval
    assert lo < acc < hi
    half = 1.96 * 100 * math.sqrt(correct.mean() * (1 - correct.mean()) / len(correct))
    assert abs((hi - lo) / 2 - half) < 0.15 * half           # the percentile bootstrap of a proportion
    assert iv.bootstrap_interval(np.ones(50, bool)) == (100.0, 100.0)


def test_t_interval_on_the_seed_mean():
    x = [80.0, 82.0, 84.5]
    lo, hi = iv.t_interval(x)
    half = stats.t.ppf(0.975, 2) * np.std(x, ddof=1) / math.sqrt(3)
    assert lo == pytest.approx(np.mean(x) - half) and hi == pytest.approx(np.mean(x) + half)
    assert iv.t_interval([81.0]) is None
    assert iv.t_interval([99.0, 100.0]) [1] == 100.0          # clipped to accuracies


def test_mcnemar_exact_by_hand():
    a = np.array([True] * 10 + [False] * 2 + [True] * 30)    # 10 pairs only a is right, 2 only b
    b = np.array([False] * 10 + [True] * 2 + [True] * 30)
    assert iv.mcnemar_exact(a, b) == pytest.approx(2 * (1 + 12 + 66) / 2 ** 12)
    assert iv.mcnemar_exact(a, a) == 1.0
    with pytest.raises(ValueError):
        iv.mcnemar_exact(a, b[:-1])


def test_paired_t_and_holm():
    assert iv.paired_t([80, 81, 82], [80, 81, 82]) == 1.0
    assert iv.paired_t([80, 81, 82], [70, 71, 72]) == 0.0     # a constant shift: no spread to weigh it by
    assert iv.paired_t([80, 82, 81], [79, 80, 81]) == pytest.approx(stats.ttest_rel([80, 82, 81], [79, 80, 81]).pvalue)
    adj = iv.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adj == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


# --- a real run: predictions and intervals are stored, metrics unchanged -----------------------------

@pytest.fixture(scope="module")
def real_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real")
    assert cli.main(["run", "--suite", "quick", "--methods", "random-init", "--out", str(out), *FAST]) == 0
    return out


def test_stored_predictions_reproduce_every_metric_and_carry_its_interval(real_run):
    (rec,) = store.load_results(real_run)
    preds = iv.load_predictions(rec.directory, rec.predictions)
    assert rec.predictions == iv.PREDICTIONS and preds is not None
    assert set(preds.correct) == set(rec.metrics)             # every metric, label fractions included
    for k, v in rec.metrics.items():
        c = preds.correct[k]
        assert c.dtype == bool and 100.0 * c.sum() / len(c) == v  # the very numbers the metric averaged
        ivl = rec.intervals[k]
        assert ivl["lo"] <= v <= ivl["hi"] and ivl["resamples"] == iv.BOOTSTRAP_RESAMPLES
        assert ivl["seed"] == iv.BOOTSTRAP_SEED and ivl["n_test"] == len(c) == 200
    assert len(preds.labels["knn_top1"]) == 200


def test_per_image_correctness_averages_to_the_metric_functions_values():
    """kNN and probe: the kept correctness gives exactly what knn_top1 / the probe's top1 return."""
    import torch
    from bench.eval import knn, probe
    g = torch.Generator().manual_seed(0)
    ftr, fte = torch.randn(120, 16, generator=g), torch.randn(40, 16, generator=g)
    ytr, yte = torch.arange(120) % 4, torch.arange(40) % 4
    c = knn.knn_correct(ftr, ytr, fte, yte, 4, k=20, temperature=0.1)
    assert 100.0 * c.sum().item() / c.numel() == knn.knn_top1(ftr, ytr, fte, yte, 4, k=20, temperature=0.1)
    res = probe.linear_probe(ftr, ytr, fte, yte, 4, grid=(1e-2, 1e-1), seed=0)
    assert res.top1 == 100.0 * res.correct.sum().item() / len(yte) and res.correct.shape == (40,)


# --- tie marks on the leaderboard ---------------------------------------------------------------

N_TEST = 1000


def _run(method: str, seed: int, correct: np.ndarray, out: Path, with_predictions: bool = True) -> None:
    """A result.json of `method` whose knn_top1 and linear_top1 come from per-image `correct`."""
    r = make_result(method, seed)
    acc = 100.0 * correct.sum() / len(correct)
    r["metrics"] = {"knn_top1": acc, "linear_top1": acc}
    r["protocols"] = {k: v for k, v in r["protocols"].items() if k in r["metrics"]}
    labels = np.arange(N_TEST) % 10
    d = write_run(out, r, log=False)
    if with_predictions:
        r.update(iv.record(d, {k: correct for k in r["metrics"]}, {k: labels for k in r["metrics"]}))
        store.write_json(d / "result.json", r)


def _pattern(acc: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = np.zeros(N_TEST, bool)
    c[rng.permutation(N_TEST)[: int(acc * N_TEST)]] = True
    return c


def _board(out: Path) -> pd.DataFrame:
    rep = report.Report(store.load_results(out), out)
    return rep.board.set_index("method")


def test_one_seed_identical_predictions_are_tied_far_apart_are_not(tmp_path):
    same = _pattern(0.80, 0)
    _run("byol", 0, same, tmp_path)
    _run("simclr", 0, same.copy(), tmp_path)          # identical predictions
    _run("vae", 0, _pattern(0.55, 1), tmp_path)      # 25 points below on the same images
    b = _board(tmp_path)
    tied = [m for m in ("byol", "simclr") if b.at[m, "knn_top1_tied"] is True]
    assert len(tied) == 1                              # the other of the two is the column's reference
    assert b.at[tied[0], "knn_top1_p"] == 1.0 and "McNemar" in b.at[tied[0], "knn_top1_test"]
    assert b.at["vae", "knn_top1_tied"] is False and b.at["vae", "knn_top1_p"] < 1e-6
    assert list(b.loc[["byol", "simclr", "vae"], "knn_top1_sig_rank"]) == [1, 1, 3]
    # the interval is the run's own bootstrap interval
    (lo, hi) = iv.bootstrap_interval(same)
    assert (b.at["byol", "knn_top1_ci_lo"], b.at["byol", "knn_top1_ci_hi"]) == (lo, hi)
    # shown in every output
    path = report.write_report(tmp_path)
    html = path.read_text()
    row = re.search(r"<tr[^>]*data-method='" + tied[0] + r"'[^>]*>(.*?)</tr>", html).group(1)
    assert "class='tie'" in row and f"[{lo:.1f}, {hi:.1f}]" in html
    assert "class='tie'" not in re.search(r"<tr[^>]*data-method='vae'[^>]*>(.*?)</tr>", html).group(1)
    md = (path.parent / "leaderboard.md").read_text()
    assert re.search(r"\| " + tied[0] + r" \|.*\[\d+\.\d, \d+\.\d\] ≈", md)
    csv = pd.read_csv(path.parent / "leaderboard.csv").set_index("method")
    assert bool(csv.at[tied[0], "knn_top1_tied"]) and not bool(csv.at["vae", "knn_top1_tied"])
    assert {"knn_top1_ci_lo", "knn_top1_ci_hi", "knn_top1_p", "knn_top1_test"} <= set(csv.columns)


def test_three_seeds_paired_by_seed(tmp_path):
    for seed in range(3):
        same = _pattern(0.80 + 0.01 * seed, seed)
        _run("byol", seed, same, tmp_path)
        _run("simclr", seed, same.copy(), tmp_path)
        _run("vae", seed, _pattern(0.60 + 0.02 * seed, 10 + seed), tmp_path)
    b = _board(tmp_path)
    tied = [m for m in ("byol", "simclr") if b.at[m, "knn_top1_tied"] is True]
    assert len(tied) == 1 and b.at[tied[0], "knn_top1_test"].startswith("paired t-test over 3 seeds")
    assert b.at["vae", "knn_top1_tied"] is False
    vals = [80.0, 81.0, 82.0]
    assert b.at["byol", "knn_top1_ci_lo"] == pytest.approx(iv.t_interval(vals)[0])
    assert b.at["byol", "knn_top1_ci_method"] == "t-interval over 3 seeds"


def test_results_without_predictions_still_report_with_a_note(tmp_path):
    """Results stored before issue #17 (no predictions, no intervals) keep their numbers."""
    for m in ("simclr", "byol", "pixels"):
        r = make_result(m, 0)
        r.pop("intervals", None)
        r.pop("predictions", None)
        write_run(tmp_path, r, log=False)
    path = report.write_report(tmp_path)
    board = pd.read_csv(path.parent / "leaderboard.csv").set_index("method")
    assert board.at["byol", "knn_top1_mean"] == 84.0 and math.isnan(board.at["byol", "knn_top1_ci_lo"])
    assert board["knn_top1_tied"].isna().all()
    html = path.read_text()
    assert "id='no-predictions'" in html and "class='tie'" not in html
    assert "stored no per-image predictions" in (path.parent / "leaderboard.md").read_text()


def test_a_damaged_predictions_file_means_no_tie_not_a_crash(tmp_path, capsys):
    same = _pattern(0.8, 0)
    _run("byol", 0, same, tmp_path)
    _run("simclr", 0, same, tmp_path)
    path = tmp_path / "runs" / "simclr-s0-cifar10-all-200" / iv.PREDICTIONS
    whole = path.read_bytes()
    for damaged in (b"not a zip", whole[:len(whole) // 2]):  # not an archive; an archive cut short
        path.write_bytes(damaged)
        b = _board(tmp_path)
        assert b["knn_top1_tied"].isna().all()
        assert "cannot be read" in capsys.readouterr().err

