"""Leaderboard report: pandas aggregation of stored result.json files into HTML/Markdown/CSV."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench import store

PRIMARY = ("knn_top1", "linear_top1")


def runs_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run: identity, status, metrics, timings."""
    rows = []
    for r in results:
        cfg = r.get("config", {})
        row = {"method": cfg.get("method"), "variant": r.get("variant"), "paradigm": cfg.get("paradigm"),
               "seed": cfg.get("seed"), "status": r.get("status"), "reason": r.get("reason"),
               "suite": cfg.get("suite"), "backbone": cfg.get("backbone"), "run_id": r.get("run_id")}
        row.update(r.get("metrics") or {})
        t = r.get("timings") or {}
        row.update({"train_s": t.get("train_s"), "views_per_s": t.get("views_per_s"),
                    "peak_memory_mb": t.get("peak_memory_mb"), "device": t.get("device")})
        rows.append(row)
    return pd.DataFrame(rows)


def metric_columns(df: pd.DataFrame) -> list[str]:
    cols = [c for c in df.columns if c.endswith("_top1")]
    return sorted(cols, key=lambda c: (c.startswith("transfer_"), c not in PRIMARY, c))


def leaderboard(df: pd.DataFrame) -> pd.DataFrame:
    """mean ± std over seeds of every metric, per method, ranked by the kNN top-1 mean."""
    ok = df[df["status"] == "ok"]
    cols = metric_columns(df)
    if ok.empty:
        return pd.DataFrame(columns=["method", "n"])
    g = ok.groupby("method", sort=False)
    out = pd.DataFrame({"paradigm": g["paradigm"].first(), "variant": g["variant"].first(), "n": g.size()})
    for c in cols:
        out[c + "_mean"] = g[c].mean()
        out[c + "_std"] = g[c].std(ddof=1).fillna(0.0)
    out = out.reset_index()
    if "knn_top1_mean" in out:
        out = out.sort_values("knn_top1_mean", ascending=False, kind="stable")
    return out


def fmt(mean: float, std: float, n: int) -> str:
    if mean is None or (isinstance(mean, float) and np.isnan(mean)):
        return "–"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def display_table(board: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    rows = []
    for _, r in board.iterrows():
        row = {"method": r["method"], "paradigm": r["paradigm"], "n": int(r["n"])}
        for c in cols:
            row[c] = fmt(r.get(c + "_mean"), r.get(c + "_std"), int(r["n"]))
        rows.append(row)
    return pd.DataFrame(rows)


def write_report(out_dir: Path, dest: Path | None = None) -> Path:
    """Write leaderboard.html/.md/.csv for the runs below `out_dir`; returns the HTML path."""
    results = store.load_results(out_dir)
    df = runs_frame(results)
    cols = metric_columns(df)
    board = leaderboard(df)
    table = display_table(board, cols)
    dest = dest or out_dir / "leaderboard.html"
    dest.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(dest.with_suffix(".csv"), index=False)
    dest.with_suffix(".md").write_text(table.to_markdown(index=False) if _has_tabulate() else table.to_string(index=False))
    failed = df[df["status"] != "ok"][["method", "seed", "status", "reason"]]
    body = table.to_html(index=False, escape=True, classes="leaderboard", table_id="leaderboard")
    fail_html = failed.to_html(index=False, escape=True, table_id="failed") if not failed.empty else "<p>none</p>"
    title = html.escape(f"ssl-bench leaderboard: {', '.join(sorted(set(map(str, df['suite']))))}")
    dest.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
                    f"<body><h1>{title}</h1>{body}<h2>Failed or diverged runs</h2>{fail_html}</body></html>")
    return dest


def terminal_table(out_dir: Path) -> str:
    df = runs_frame(store.load_results(out_dir))
    cols = [c for c in metric_columns(df) if not c.startswith("transfer_")]
    return display_table(leaderboard(df), cols).to_string(index=False)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
        return True
    except ImportError:
        return False
