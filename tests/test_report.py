"""The leaderboard report: sections, mean ± std over seeds, baselines, failures, escaping,
shard directories, the terminal table, and the page rendered by headless Chromium.

Result files are written here in the documented result.json shape (two seeds per method, one
failed and one diverged run, a method with a hostile name), so the report is tested without
training anything; tests/test_check.py renders a report of a real run.
"""
from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench import cli, report
from bench.results import store
from bench.eval.probe import l2_grid

XSS = "<script>alert(1)</script>"
CHROMIUM = "/usr/bin/chromium"

# method -> (paradigm, variant, views, knn top-1 for seeds 0 and 1)
METHODS = {
    "vae": ("autoencoding", "vae (beta=0.1)", ["clean"], (40.0, 42.0)),
    "simclr": ("contrastive", "simclr", ["augmented", "augmented"], (80.0, 82.0)),
    "byol": ("non-contrastive", "byol", ["augmented", "augmented"], (84.0, 85.0)),
    "mae": ("masked", "mae (masked-input reconstruction, CNN)", ["augmented"], (60.0, 61.0)),
    "pixels": ("baseline", "pixels", ["clean"], (70.0, 70.0)),
    "random-init": ("baseline", "random-init", ["clean"], (30.0, 31.0)),
    "supervised": ("baseline", "supervised", ["augmented"], (95.0, 96.0)),
    XSS: ("contrastive", XSS + " variant", ["augmented"], (10.0, 12.0)),
}
UNTRAINED = ("pixels", "random-init")
CURVE_PROTOCOL = ("kNN k=200 T=0.1, bank: 5000 un-augmented train images, queries: all 1000 test images, "
                  "every 50 epoch(s)")
AUG = "RandomResizedCrop(scale=0.08-1), HFlip(p=0.5), ColorJitter(0.4,0.4,0.4,0.1, p=0.8), Grayscale(p=0.2)"


def _protocols(knn: float, seed: int) -> dict:
    common = {"dataset": "cifar10", "features": "encode(x): backbone output before any head, un-augmented, eval mode",
              "split_sizes": {"train": 5000, "test": 1000}}
    linear = {**common, "eval": "linear probe", "classifier": "multinomial logistic regression",
              "solver": "LBFGS", "val_fraction": 0.2, "seed": seed, "l2_grid": list(l2_grid()),
              "val_top1": [50.0] * 19, "l2": [1e-4, 1e-3][seed % 2], "n_train": 5000, "n_val": 1000, "n_test": 1000,
              "top1": knn + 3}
    return {
        "knn_top1": {**common, "eval": "kNN", "k": 200, "temperature": 0.1, "similarity": "cosine"},
        "knn20_top1": {**common, "eval": "kNN", "k": 20, "temperature": 0.07, "similarity": "cosine"},
        "linear_top1": linear,
        "linear_1pct_top1": {**linear, "eval": "linear probe on 1% of train labels", "n_train": 50, "n_val": 10},
        "linear_10pct_top1": {**linear, "eval": "linear probe on 10% of train labels", "n_train": 500, "n_val": 100},
        "transfer_stl10_knn_top1": {**common, "dataset": "stl10", "eval": "kNN", "k": 200, "temperature": 0.1},
        "transfer_stl10_linear_top1": {**linear, "dataset": "stl10"},
    }


def make_result(method: str, seed: int, status: str = "ok", reason: str | None = None, suite: str = "cifar10-all",
                epochs: int = 200) -> dict:
    paradigm, variant, views, knn = METHODS[method]
    k = knn[seed % 2]
    config = {"suite": suite, "method": method, "seed": seed, "aug_mode": "shared", "dataset": "cifar10",
              "backbone": "resnet18-cifar", "image_size": 32, "views": views, "paradigm": paradigm,
              "train": {"epochs": epochs, "batch_size": 256}, "aug": {"crop_scale_min": 0.08},
              "eval": {"knn_k": 200, "transfer": ["stl10"]},
              "method_config": {"temperature": 0.5, "note": "quote\" & <b>bold</b>"},
              "optim": {"name": "sgd", "lr": 0.06, "lr_batch_size": 256, "weight_decay": 5e-4, "schedule": "cosine"}}
    run_id = f"{re.sub(r'[^a-z0-9-]', '_', method)}-s{seed}-{suite}-{epochs}"
    r = {"schema_version": store.SCHEMA_VERSION, "run_id": run_id, "spec_hash": "0" * 64,
         "spec": {"suite": suite, "method": method, "seed": seed, "aug_mode": "shared"}, "config": config,
         "variant": variant, "status": status, "reason": reason,
         "python": "3.11.7", "packages": {"torch": "2.x"}, "git_commit": "abc123", "machine": {"host": "test"}}
    if status == "failed":
        r["traceback"] = "Traceback (most recent call last):\n  ...\nRuntimeError: boom"
        return r
    r["train"] = {"status": status, "reason": reason, "step": 390 if status == "ok" else 17,
                  "epochs_done": epochs if status == "ok" else 0, "train_s": 100.0 + 10 * seed, "views_per_s": 2000.0,
                  "peak_memory_mb": 900.0, "peak_memory_kind": "cuda max allocated"}
    r["augmentation"] = AUG
    if status != "ok":
        return r
    r["metrics"] = {"knn_top1": k, "knn20_top1": k - 1, "linear_top1": k + 3, "linear_1pct_top1": k - 20,
                    "linear_10pct_top1": k - 10, "transfer_stl10_knn_top1": k - 5, "transfer_stl10_linear_top1": k - 4}
    if method == "supervised":
        r["metrics"]["linear_top1"] = 99.0
    r["protocols"] = _protocols(k, seed)
    r["diagnostics"] = {"effective_rank": 100.0 + seed, "alignment": 0.5 + 0.01 * seed, "uniformity": -2.0 - 0.1 * seed,
                        "invariance": 0.8, "collapsed": method == "random-init", "feature_std": 0.04,
                        "protocol": {"features": "test split", "views": "2048 test images x 2"}}
    r["transfer_skipped"] = {}
    r["feature_digests"] = {}
    if method not in UNTRAINED:  # a learning-curve point every 50 epochs, epoch 0 included
        r["curve"] = [{"epoch": e, "knn_top1": k * e / epochs} for e in range(0, epochs + 1, 50)]
        r["curve_protocol"] = CURVE_PROTOCOL
    r["timings"] = {"train_s": 100.0 + 10 * seed, "views_per_s": 2000.0 + seed, "peak_memory_mb": 900.0 + seed,
                    "peak_memory_kind": "cuda max allocated", "eval_s": 5.0, "total_s": 110.0,
                    "device": "NVIDIA H100 80GB HBM3"}
    return r


def write_run(out: Path, r: dict, log: bool = True) -> Path:
    d = out / "runs" / r["run_id"]
    store.write_json(d / "result.json", r)
    if log and r["status"] != "failed":
        steps = np.arange(1, 21)
        loss = 5.0 / steps ** 0.3 if r["status"] == "ok" else np.r_[5.0 / steps[:-1] ** 0.3, np.nan]
        lines = ["step,epoch,lr,loss,ntxent,views_per_s"] + [f"{s},{s / 10},0.1,{v},{v},2000" for s, v in zip(steps, loss)]
        (d / "train_log.csv").write_text("\n".join(lines) + "\n")
    if r["config"]["paradigm"] in ("autoencoding", "masked") and r["status"] == "ok":
        import matplotlib.pyplot as plt
        plt.imsave(d / "recon.png", np.random.default_rng(0).random((16, 64, 3)))
    return d


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    for m in METHODS:
        for seed in (0, 1):
            write_run(out, make_result(m, seed))
    write_run(out, make_result("simclr", 2, status="failed", reason="RuntimeError: boom <b>not bold</b>"))
    write_run(out, make_result("byol", 2, status="diverged", reason="loss is NaN at step 17 (epoch 1)"))
    return out


@pytest.fixture(scope="module")
def page(results_dir) -> tuple[Path, str]:
    path = report.write_report(results_dir)
    return path, path.read_text(encoding="utf-8")


def _row(html: str, method: str, table_id: str = "leaderboard") -> str:
    table = html[html.index(f"id='{table_id}'"):]
    table = table[: table.index("</table>")]
    m = re.search(r"<tr[^>]*data-method='" + re.escape(method) + r"'[^>]*>(.*?)</tr>", table)
    assert m, f"no row for {method} in #{table_id}"
    return m.group(1)


def test_files_written_next_to_the_html(page):
    path, _ = page
    for name in ("leaderboard.html", "leaderboard.md", "leaderboard.csv", "runs.csv"):
        assert (path.parent / name).is_file(), name


def test_leaderboard_mean_std_n_and_one_row_per_method(page):
    _, html = page
    rows = re.findall(r"<tr[^>]*data-method='([^']*)'", html[html.index("id='leaderboard'"):].split("</table>")[0])
    assert sorted(rows) == sorted(report.esc(m) for m in METHODS)
    simclr = _row(html, "simclr")
    assert "81.00 ± 1.41" in simclr          # kNN: 80, 82
    assert "84.00 ± 1.41" in simclr          # linear: 83, 85
    assert re.search(r"<td class='num'>2 <span class='muted small'>of 3</span>", simclr)  # n=2 of 3 runs
    assert "1 failed" in simclr
    assert "84.50 ± 0.71" in _row(html, "byol")


def test_best_per_column_excludes_baselines(page):
    _, html = page
    byol, sup = _row(html, "byol"), _row(html, "supervised")
    assert "class='num best'" in byol and "<strong>84.50 ± 0.71</strong>" in byol
    assert "best" not in sup                      # supervised is higher but a baseline
    assert "95.50 ± 0.71" in sup


def test_grouped_by_paradigm_with_baselines_beside(page):
    _, html = page
    board = html[html.index("id='leaderboard'"):].split("</table>")[0]
    heads = re.findall(r"<tr class='group' data-paradigm='([^']*)'", board)
    assert heads == ["autoencoding", "contrastive", "non-contrastive", "masked", "baseline"]
    for title in ("Autoencoding", "Contrastive", "Non-contrastive / distillation", "Masked modelling", "Baselines"):
        assert title in board
    # baselines come after every SSL method, and all three are present
    order = re.findall(r"data-method='([^']*)'", board)
    assert order[-3:] == ["supervised", "pixels", "random-init"]
    # within a group: ranked by the primary metric
    assert order.index("simclr") < order.index(report.esc(XSS))


def test_every_section_is_present(page):
    _, html = page
    for sid in ("leaderboard", "rankings", "failed", "cost", "protocols", "methods", "diagnostics", "environment",
                "training", "learning-curves", "reconstructions", "accuracy"):
        assert f"id='{sid}'" in html, sid
    # one column per evaluation, transfer included, with readable names
    for name in ("kNN k=200 T=0.1", "kNN k=20 T=0.07", "linear", "linear 1% labels", "linear 10% labels",
                 "stl10 → kNN k=200 T=0.1", "stl10 → linear"):
        assert f"<th>{report.esc(name)}</th>" in html, name
    # a ranked table per evaluation
    assert html.count("class='ranking'") == 7


def test_protocols_setup_and_variants(page):
    _, html = page
    prot = html[html.index("id='protocols'"):].split("</table>")[0]
    assert "k: 200" in prot and "temperature: 0.1" in prot and "temperature: 0.07" in prot
    assert "L2 grid: 19 values 1e-07 … 100" in prot
    assert "simclr: 0.0001, 0.001" in prot          # chosen L2 per run, summarized per method
    assert "train 5000, test 1000" in prot and "5000 (1000) / 1000" in prot
    assert "encode(x): backbone output before any head" in prot
    assert "stl10" in prot
    assert "resnet18-cifar" in html and report.esc(AUG) in html
    methods = html[html.index("id='methods'"):].split("</table>")[0]
    assert "mae (masked-input reconstruction, CNN)" in _row(html, "mae", "methods")
    assert "augmented + augmented" in _row(html, "simclr", "methods") and "clean" in _row(html, "vae", "methods")
    assert "Masked modelling" in methods


def test_cost_per_method(page):
    _, html = page
    row = _row(html, "simclr", "cost")
    assert "105.0 ± 7.1" in row and "2,000" in row and "901" in row and "NVIDIA H100 80GB HBM3" in row
    assert "cuda max allocated" in row


def test_figures_embedded_and_recon_grids(page):
    _, html = page
    imgs = re.findall(r"<img [^>]*src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(imgs) >= 8  # accuracy, transfer, accuracy vs time, loss, learning curves, diagnostics, 2 recon grids
    curves = html[html.index("id='learning-curves'"):].split("</section>")[0]
    img = r"<img class='fig' alt='learning curves' src='data:image/png;base64,[A-Za-z0-9+/=]{100,}'>"
    assert re.search(img, curves)
    assert "Protocol: " + report.esc(CURVE_PROTOCOL) in curves
    recon = html[html.index("id='reconstructions'"):]
    assert "data-method='vae'" in recon and "data-method='mae'" in recon and "data-method='simclr'" not in recon
    assert "figure failed" not in html


def test_failed_and_diverged_runs_shown_with_reason(page):
    _, html = page
    failed = html[html.index("id='failed'"):].split("</table>")[0]
    assert "RuntimeError: boom &lt;b&gt;not bold&lt;/b&gt;" in failed and "<b>not bold" not in html
    assert "loss is NaN at step 17 (epoch 1)" in failed and "diverged" in failed
    assert "traceback" in failed
    text = report.terminal_table(Path(page[0]).parent)
    assert "FAILED RuntimeError: boom" in text and "DIVERGED loss is NaN" in text


def test_user_strings_are_escaped(page):
    path, html = page
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.count("<script") == 1                  # only the report's own inline script
    assert "quote&quot; &amp; &lt;b&gt;bold&lt;/b&gt;" in html
    md = (path.parent / "leaderboard.md").read_text()
    assert XSS not in md and "&lt;script&gt;" in md


def test_self_contained_no_external_requests(page):
    _, html = page
    refs = re.findall(r"(?:src|href)=['\"]([^'\"]*)", html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r for r in refs if not r.startswith(("data:", "#"))]
    assert "http://" not in html and "https://" not in html
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


def test_markdown_and_csv_hold_the_same_tables(page):
    import pandas as pd
    path, _ = page
    md = (path.parent / "leaderboard.md").read_text()
    assert "| simclr — 1 failed | contrastive | 2 | 81.00 ± 1.41 |" in md
    assert "**84.50 ± 0.71**" in md and "RuntimeError: boom" in md
    board = pd.read_csv(path.parent / "leaderboard.csv")
    row = board[board["method"] == "simclr"].iloc[0]
    assert row["knn_top1_mean"] == 81.0 and row["knn_top1_n"] == 2 and abs(row["knn_top1_std"] - 2 ** 0.5) < 1e-9
    assert bool(board[board["method"] == "byol"].iloc[0]["knn_top1_best"])
    runs = pd.read_csv(path.parent / "runs.csv")
    assert len(runs) == 2 * len(METHODS) + 2
    assert set(runs["status"]) == {"ok", "failed", "diverged"}
    assert "RuntimeError: boom <b>not bold</b>" in set(runs["reason"].dropna())


def test_terminal_table_is_compact(results_dir):
    text = report.terminal_table(results_dir)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    assert any(line.startswith("simclr") and "81.00 ± 1.41" in line for line in lines)
    assert "linear 1%" not in lines[0] and "stl10" not in text


def test_cli_report_on_parent_of_shard_dirs(tmp_path, capsys):
    """Shards of one suite in sibling directories are read together: n counts every shard."""
    for shard, seed in (("shard0", 0), ("shard1", 1)):
        for m in ("simclr", "pixels"):
            write_run(tmp_path / shard, make_result(m, seed), log=False)
    dest = tmp_path / "out" / "board.html"
    assert cli.main(["report", str(tmp_path), "--out", str(dest)]) == 0
    out = capsys.readouterr().out
    assert "81.00 ± 1.41" in out and str(dest) in out
    html = dest.read_text()
    assert "81.00 ± 1.41" in _row(html, "simclr") and (dest.parent / "leaderboard.md").is_file()


def test_runs_of_different_configurations_are_not_averaged(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, make_result("simclr", seed, epochs=100), log=False)
        write_run(tmp_path, make_result("simclr", seed, epochs=200), log=False)
    rep = report.Report(store.load_results(tmp_path), tmp_path)
    assert sorted(rep.board["label"]) == ["simclr [train.epochs=100]", "simclr [train.epochs=200]"]
    assert list(rep.board["n"]) == [2, 2]


def test_report_with_only_failed_runs(tmp_path):
    write_run(tmp_path, make_result("simclr", 0, status="failed", reason="out of memory: CUDA"))
    path = report.write_report(tmp_path)
    html = path.read_text()
    assert "out of memory: CUDA" in html and "data-method='simclr'" in html
    assert "out of memory: CUDA" in report.terminal_table(tmp_path)


def test_missing_results_dir_is_a_user_error(tmp_path, capsys):
    assert cli.main(["report", str(tmp_path / "nothing")]) == 2
    assert capsys.readouterr().err.startswith("error:")


def _chromium_dom(path: Path, profile: Path) -> tuple[str, str]:
    """The page as headless Chromium leaves it after its scripts ran: (DOM, stderr)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=3000", "--dump-dom", path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shutil.rmtree(profile, ignore_errors=True)
    return proc.stdout, proc.stderr


def _page_errors(dom: str) -> str:
    errors = re.search(r'<div id="page-errors"[^>]*>(.*?)</div>', dom, re.S)
    assert errors is not None
    return errors.group(1).strip()


CHROMIUM_ONLY = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian chromium at /usr/bin/chromium")


@CHROMIUM_ONLY
def test_renders_in_headless_chromium_without_errors(page, tmp_path):
    path, _ = page
    dom, stderr = _chromium_dom(path, tmp_path / "profile")
    assert 'id="leaderboard"' in dom
    board = dom[dom.index('id="leaderboard"'):].split("</table>")[0]
    rows = [html.unescape(r) for r in re.findall(r'<tr[^>]*data-method="([^"]*)"', board)]
    assert sorted(rows) == sorted(METHODS)
    assert 'data-ready="1"' in dom                        # the page's script ran to the end
    # the learning-curve figure is in the rendered page (an image that fails to decode is a page error)
    curves = dom[dom.index('id="learning-curves"'):].split("</section>")[0]
    assert re.search(r'<img class="fig" alt="learning curves" src="data:image/png;base64,', curves)
    assert _page_errors(dom) == ""
    assert "Uncaught" not in stderr
    assert XSS not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom


@CHROMIUM_ONLY
def test_chromium_reports_a_figure_that_does_not_decode(page, tmp_path):
    """The check above is real: a learning-curve PNG Chromium cannot decode is a page error."""
    _, text = page
    broken = re.sub(r"(alt='learning curves' src='data:image/png;base64,)[A-Za-z0-9+/=]+", r"\1AAAA", text)
    assert broken != text
    path = tmp_path / "broken.html"
    path.write_text(broken, encoding="utf-8")
    dom, _ = _chromium_dom(path, tmp_path / "profile")
    assert "image failed to load: learning curves" in _page_errors(dom)
