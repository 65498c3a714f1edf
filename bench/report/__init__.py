"""Leaderboard report: pandas aggregation of stored result.json files.

`write_report(out_dir)` reads every `**/runs/*/result.json` below `out_dir` (one results
directory, or a parent of several shard directories) and writes, next to the HTML file:

- `leaderboard.html`: ONE self-contained file (inline CSS, figures as base64 PNG data URIs, a
  Content-Security-Policy that forbids any network request): the leaderboard (mean ± std over
  seeds, n, best non-baseline value per column in bold, rows grouped by paradigm with the
  baselines beside them), a ranking per evaluation, failed/diverged runs with their reason,
  cost, the protocol of every column, the suite setup (backbone, augmentation, views, variant),
  figures (accuracy, accuracy vs training time, loss curves, learning curves, diagnostics,
  reconstructions) and
  the environment;
- `leaderboard.md` / `leaderboard.csv`: the same tables as Markdown / numbers;
- `runs.csv`: one row per run (failed ones included, with their reason);
- `ablation.csv` / `invariance.csv`: when augmentation-ablation runs exist (`bench run --ablate aug`).

Every accuracy carries a 95% interval and every ranked row a tie test against its column's best
(`uncertainty`); suites that reproduce a published setting show the published numbers beside
ours (`published`); ablation runs get their own section (`ablation`), not leaderboard rows.

Every string that came from a config or a user (method names, reasons, config values) is
HTML-escaped. A leaderboard row is one (suite, method, configuration without the seed): runs
made with different overrides are never averaged together; such rows are labelled with what
differs, e.g. `simclr [train.epochs=2]`.

Modules: `frame` (the aggregation, data only), `html` (the page, from `templates/`), `text`
(Markdown, CSV, terminal), `figures` (the PNGs).
"""
from __future__ import annotations

import os
from pathlib import Path

from bench.results import store

from .frame import (BASELINE, PARADIGMS, Report, cost_frame, fmt, leaderboard, metric_columns, metric_name,
                    metric_sort_key, protocol_rows, runs_frame, variant_suffix)
from .html import esc, render_html
from .text import ablation_csv, board_csv, invariance_csv, md_escape, md_table, render_markdown, terminal_table

__all__ = ["BASELINE", "PARADIGMS", "Report", "board_csv", "cost_frame", "esc", "fmt", "leaderboard", "md_escape",
           "md_table", "metric_columns", "metric_name", "metric_sort_key", "protocol_rows", "render_html",
           "render_markdown", "runs_frame", "terminal_table", "variant_suffix", "write_report"]


def write_report(out_dir: Path, dest: Path | None = None) -> Path:
    """Write leaderboard.html (+ leaderboard.md, leaderboard.csv, runs.csv beside it) for every
    run below `out_dir`; returns the HTML path."""
    out_dir = Path(out_dir)
    rep = Report(store.load_results(out_dir), out_dir)
    dest = Path(dest) if dest else out_dir / "leaderboard.html"
    dest.parent.mkdir(parents=True, exist_ok=True)
    folder = dest.parent
    # the learning curves stay in result.json: a list per cell is no CSV value
    runs = rep.all_df.drop(columns=["directory", "setting", "curve"], errors="ignore")
    _write(folder / "runs.csv", runs.to_csv(index=False))
    _write(folder / "leaderboard.csv", board_csv(rep).to_csv(index=False))
    for name, frame in (("ablation.csv", ablation_csv(rep)), ("invariance.csv", invariance_csv(rep))):
        if frame is not None:  # only when ablation runs (and their invariance profiles) exist
            _write(folder / name, frame.to_csv(index=False))
    _write(folder / "leaderboard.md", render_markdown(rep))
    _write(dest, render_html(rep))
    return dest


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two writers never share a temp file
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
