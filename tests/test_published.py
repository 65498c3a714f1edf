"""Published numbers (issue #17): cifar10-all carries the literature's CIFAR-10 numbers with their
sources, kept out of run ids; a cifar10-all leaderboard made from a real (tiny) run on the
CIFAR-10 fixture in the on-disk format shows them in their own column, with the sources and
the protocol differences, in the HTML (text and headless Chromium), the Markdown and the CSV."""
from __future__ import annotations

import html as htmllib
import re
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from bench import cli
from bench.suites import SUITES, RunSpec, resolve
from tests import fixtures_formats as fx
from tests.test_report import CHROMIUM_ONLY, _chromium_dom, _page_errors

SUITE = SUITES.get("cifar10-all")


def test_cifar10_all_carries_the_published_numbers_with_sources():
    got = {(p.method, p.metric): p.value for p in SUITE.published}
    assert got == {("simclr", "knn_top1"): 84.7, ("byol", "knn_top1"): 86.9, ("simclr", "linear_top1"): 90.74,
                   ("byol", "linear_top1"): 92.58, ("vicreg", "linear_top1"): 92.07, ("aasae", "linear_top1"): 87.14}
    for p in SUITE.published:
        assert p.source and p.differences
    lightly = [p for p in SUITE.published if p.metric == "knn_top1"]
    assert all("lightly" in p.source and "best" in p.differences.lower() for p in lightly)
    assert "ResNet-50" in next(p for p in SUITE.published if p.method == "aasae").differences
    assert all(not s.published for s in (SUITES.get(n) for n in SUITES.names()) if s.name != "cifar10-all")


def test_published_numbers_are_not_part_of_any_run_id():
    spec = RunSpec("cifar10-all", "simclr", 0)
    assert resolve(SUITE, spec, {}).run_id == resolve(replace(SUITE, published=()), spec, {}).run_id
    assert replace(SUITE, published=()) == SUITE  # annotations, not setup


@pytest.fixture(scope="module")
def board(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("published")
    fx.write_cifar10(tmp / "data", per_batch=20, n_test=20)   # 100 train / 20 test images, the real pickle layout
    out = tmp / "out"
    # one step of 32 images on the suite's own backbone (resnet18-cifar): the column needs the suite's setup
    code = cli.main(["run", "--suite", "cifar10-all", "--methods", "simclr", "--data-dir", str(tmp / "data"),
                     "--no-download", "--out", str(out), "--device", "cpu", "--threads", "1", "--epochs", "1",
                     "--set", "train.batch_size=32", "--set", "train.train_subset=32", "--set", "train.warmup_epochs=0",
                     "--set", "eval.curve_every=0", "--set", "eval.label_fractions=", "--set", "eval.probe_grid_points=3"])
    assert code == 0  # the missing transfer targets are skipped with their reason, not failures
    return out


def test_leaderboard_shows_the_published_column_with_sources(board):
    page = (board / "leaderboard.html").read_text()
    table = page[page.index("id='leaderboard'"):].split("</table>")[0]
    assert "<th>Published (not ours)</th>" in table
    simclr = re.search(r"<tr[^>]*data-method='simclr'[^>]*>(.*?)</tr>", table).group(1)
    assert "kNN k=200 T=0.1: 84.7 [1]" in simclr and "linear: 90.74 [2]" in simclr
    assert "86.9" not in page and "92.07" not in page        # only the methods that ran
    sources = page[page.index("id='published-sources'"):].split("</ol>")[0]
    assert "lightly docs, &quot;Benchmarks&quot;" in sources and "solo-learn README" in sources
    assert "BEST epoch of 200" in sources and "ONLINE linear classifier" in sources and "1000 epochs" in sources
    md = (board / "leaderboard.md").read_text()
    assert "| published (not ours) |" in md and "kNN k=200 T=0.1: 84.7 [1]; linear: 90.74 [2]" in md
    assert "1. lightly docs" in md and "Protocol differences:" in md
    csv = pd.read_csv(board / "leaderboard.csv").set_index("method")
    assert csv.at["simclr", "knn_top1_published"] == 84.7 and csv.at["simclr", "linear_top1_published"] == 90.74
    assert "solo-learn" in csv.at["simclr", "linear_top1_published_source"]


def test_other_suites_show_no_published_column(tmp_path):
    assert cli.main(["run", "--suite", "quick", "--methods", "random-init", "--out", str(tmp_path), "--device", "cpu",
                     "--threads", "1", "--set", "eval.transfer=", "--set", "eval.label_fractions=",
                     "--set", "eval.probe_grid_points=3", "--set", "eval.test_subset=100"]) == 0
    assert "Published (not ours)" not in (tmp_path / "leaderboard.html").read_text()


@CHROMIUM_ONLY
def test_published_column_renders_in_headless_chromium(board, tmp_path):
    dom, _ = _chromium_dom(board / "leaderboard.html", tmp_path / "profile")
    table = dom[dom.index('id="leaderboard"'):].split("</table>")[0]
    row = htmllib.unescape(re.search(r'<tr[^>]*data-method="simclr"[^>]*>(.*?)</tr>', table).group(1))
    assert "84.7 [1]" in row and "90.74 [2]" in row
    assert 'id="published-sources"' in dom and _page_errors(dom) == ""
