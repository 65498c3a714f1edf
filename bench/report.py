"""Leaderboard report: pandas aggregation of stored result.json files.

`write_report(out_dir)` reads every `**/runs/*/result.json` below `out_dir` (one results
directory, or a parent of several shard directories) and writes, next to the HTML file:

- `leaderboard.html`: ONE self-contained file (inline CSS, figures as base64 PNG data URIs, a
  Content-Security-Policy that forbids any network request): the leaderboard (mean ± std over
  seeds, n, best non-baseline value per column in bold, rows grouped by paradigm with the
  baselines beside them), a ranking per evaluation, failed/diverged runs with their reason,
  cost, the protocol of every column, the suite setup (backbone, augmentation, views, variant),
  figures (accuracy, accuracy vs training time, loss curves, diagnostics, reconstructions) and
  the environment;
- `leaderboard.md` / `leaderboard.csv`: the same tables as Markdown / numbers;
- `runs.csv`: one row per run (failed ones included, with their reason).

Every string that came from a config or a user (method names, reasons, config values) is
HTML-escaped. A leaderboard row is one (suite, method, configuration without the seed): runs
made with different overrides are never averaged together; such rows are labelled with what
differs, e.g. `simclr [train.epochs=2]`.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from bench.results import store

# paradigm key (methods/base.py) -> heading, in display order; baselines sit beside them, last
PARADIGMS = {
    "autoencoding": "Autoencoding",
    "contrastive": "Contrastive",
    "non-contrastive": "Non-contrastive / distillation",
    "masked": "Masked modelling",
    "baseline": "Baselines (not ranked)",
}
BASELINE = "baseline"
RECON_PARADIGMS = ("autoencoding", "masked")
MAIN_ORDER = ("knn_top1", "knn20_top1", "linear_top1")
TRANSFER_ORDER = ("knn_top1", "knn20_top1", "linear_top1")
PRIMARY = ("knn_top1", "linear_top1")
DIAG = ("effective_rank", "alignment", "uniformity", "invariance", "feature_std", "collapsed")


# ----------------------------------------------------------------------------- frames

def runs_frame(results: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run (failed ones included): identity, status, metrics, cost, diagnostics."""
    rows = []
    for r in results:
        cfg = r.get("config") or {}
        spec = r.get("spec") or {}
        train = r.get("train") or {}
        t = r.get("timings") or {}
        diag = r.get("diagnostics") or {}
        setting = {k: v for k, v in cfg.items() if k != "seed"}
        row = {
            "suite": str(cfg.get("suite", spec.get("suite"))), "method": str(cfg.get("method", spec.get("method"))),
            "seed": cfg.get("seed", spec.get("seed")), "paradigm": cfg.get("paradigm") or "?",
            "variant": r.get("variant"), "status": r.get("status"), "reason": r.get("reason"),
            "aug_mode": cfg.get("aug_mode", spec.get("aug_mode")), "dataset": cfg.get("dataset"),
            "backbone": cfg.get("backbone"), "image_size": cfg.get("image_size"),
            "views": " + ".join(map(str, cfg.get("views") or [])), "run_id": r.get("run_id"),
            "epochs_done": train.get("epochs_done"), "step": train.get("step"),
            "setting": json.dumps(setting, sort_keys=True, default=str),
        }
        for k, v in (r.get("metrics") or {}).items():
            row[k] = _num(v)
        row.update({"train_s": _num(t.get("train_s", train.get("train_s"))),
                    "views_per_s": _num(t.get("views_per_s", train.get("views_per_s"))),
                    "peak_memory_mb": _num(t.get("peak_memory_mb", train.get("peak_memory_mb"))),
                    "peak_memory_kind": t.get("peak_memory_kind", train.get("peak_memory_kind")),
                    "eval_s": _num(t.get("eval_s")), "total_s": _num(t.get("total_s")),
                    "device": t.get("device")})
        for k in DIAG:
            if k in diag:
                row[k] = diag[k] if k == "collapsed" else _num(diag[k])
        row["git_commit"] = r.get("git_commit")
        row["_dir"] = r.get("_dir")
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["label"] = _labels(df, results)
    return df


def _num(v: Any) -> float:
    if isinstance(v, bool) or v is None:
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _labels(df: pd.DataFrame, results: list[dict[str, Any]]) -> list[str]:
    """The method name, plus what differs when one method ran with several configurations."""
    labels = list(df["method"].astype(str))
    flat = [_flatten({k: v for k, v in (r.get("config") or {}).items() if k != "seed"}) for r in results]
    for (_suite, method), idx in df.groupby(["suite", "method"], dropna=False, sort=False).groups.items():
        idx = list(idx)
        if df.loc[idx, "setting"].nunique() < 2:
            continue
        keys = sorted({k for i in idx for k in flat[i]})
        differ = [k for k in keys if len({json.dumps(flat[i].get(k), default=str) for i in idx}) > 1]
        for i in idx:
            desc = ", ".join(f"{k}={_short(flat[i].get(k))}" for k in differ[:3])
            labels[i] = f"{method} [{desc}{', …' if len(differ) > 3 else ''}]"
    return labels


def _short(v: Any) -> str:
    if isinstance(v, list):
        return ",".join(map(str, v)) or "()"
    return str(v)


def metric_sort_key(name: str, transfer_order: list[str] | None = None) -> tuple:
    """kNN, kNN k=20, linear, label fractions (ascending), then each transfer target."""
    if name.startswith("transfer_"):
        rest = name[len("transfer_"):]
        for kind in TRANSFER_ORDER:
            if rest.endswith("_" + kind):
                target = rest[: -len(kind) - 1]
                pos = transfer_order.index(target) if transfer_order and target in transfer_order else 99
                return (2, pos, target, TRANSFER_ORDER.index(kind))
        return (3, 0, name, 0)
    if name in MAIN_ORDER:
        return (0, MAIN_ORDER.index(name), "", 0)
    m = re.fullmatch(r"linear_([0-9.]+)pct_top1", name)
    if m:
        return (1, float(m.group(1)), "", 0)
    return (1, 1e9, name, 0)


def metric_columns(df: pd.DataFrame, results: list[dict[str, Any]] | None = None) -> list[str]:
    order: list[str] = []
    for r in results or []:
        for t in ((r.get("config") or {}).get("eval") or {}).get("transfer") or []:
            if t not in order:
                order.append(t)
    cols = [c for c in df.columns if isinstance(c, str) and c.endswith("_top1") and df[c].notna().any()]
    return sorted(cols, key=lambda c: metric_sort_key(c, order))


def metric_name(metric: str, protocols: dict[str, dict[str, Any]] | None = None) -> str:
    """Readable column name: 'kNN k=200', 'linear 1% labels', 'fashion-mnist linear'."""
    p = (protocols or {}).get(metric) or {}
    prefix = ""
    base = metric
    if metric.startswith("transfer_"):
        rest = metric[len("transfer_"):]
        for kind in TRANSFER_ORDER:
            if rest.endswith("_" + kind):
                prefix, base = rest[: -len(kind) - 1] + " → ", kind
                break
    if base in ("knn_top1", "knn20_top1"):
        k, t = p.get("k"), p.get("temperature")
        name = f"kNN k={k}" if k is not None else ("kNN" if base == "knn_top1" else "kNN k=20")
        if isinstance(t, (int, float)) and not isinstance(t, bool):
            name += f" T={t:g}"
    elif base == "linear_top1":
        name = "linear"
    else:
        m = re.fullmatch(r"linear_([0-9.]+)pct_top1", base)
        name = f"linear {m.group(1)}% labels" if m else base
    return prefix + name


def leaderboard(df: pd.DataFrame, cols: list[str] | None = None) -> pd.DataFrame:
    """One row per (suite, label): n ok seeds, runs, failures, mean/std/n of every metric,
    rank among non-baseline rows and the best marker. Rows are in display order: suite, paradigm
    group, then descending by the first metric the group has."""
    if df.empty:
        return pd.DataFrame(columns=["suite", "label", "method", "paradigm", "n"])
    cols = cols if cols is not None else metric_columns(df)
    rows = []
    for (suite, label), g in df.groupby(["suite", "label"], dropna=False, sort=False):
        ok = g[g["status"] == "ok"]
        row = {"suite": suite, "label": label, "method": g["method"].iloc[0], "paradigm": g["paradigm"].iloc[0],
               "variant": g["variant"].iloc[0], "n": int(len(ok)), "runs": int(len(g)),
               "failed": int((g["status"] != "ok").sum()),
               "seeds": ",".join(str(s) for s in sorted(ok["seed"].dropna().astype(int))),
               "train_s": ok["train_s"].mean(), "views_per_s": ok["views_per_s"].mean()}
        for c in cols:
            v = ok[c].dropna() if c in ok else pd.Series(dtype=float)
            row[c + "_mean"] = v.mean() if len(v) else np.nan
            row[c + "_std"] = v.std(ddof=1) if len(v) > 1 else (0.0 if len(v) else np.nan)
            row[c + "_n"] = int(len(v))
        rows.append(row)
    board = pd.DataFrame(rows)
    # ranks and best among non-baseline rows of the same suite (on the displayed, 2-decimal value)
    for c in cols:
        board[c + "_rank"] = np.nan
        board[c + "_best"] = False
        for _suite, g in board.groupby("suite", dropna=False, sort=False):
            ssl = g[(g["paradigm"] != BASELINE) & g[c + "_mean"].notna()]
            if ssl.empty:
                continue
            shown = ssl[c + "_mean"].round(2)
            board.loc[ssl.index, c + "_rank"] = shown.rank(ascending=False, method="min")
            board.loc[ssl.index, c + "_best"] = shown == shown.max()
    primary = next((c for c in cols if c in PRIMARY), cols[0] if cols else None)
    group_pos = {p: i for i, p in enumerate(PARADIGMS)}
    board["_suite_pos"] = board["suite"].map({s: i for i, s in enumerate(dict.fromkeys(board["suite"]))})
    board["_group"] = board["paradigm"].map(lambda p: group_pos.get(p, len(PARADIGMS) - 1 - 0.5))
    board["_score"] = -board[primary + "_mean"].fillna(-1e9) if primary else 0.0
    board = board.sort_values(["_suite_pos", "_group", "_score", "label"], kind="stable")
    return board.drop(columns=["_suite_pos", "_group", "_score"]).reset_index(drop=True)


def fmt(mean: Any, std: Any, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def _fmt_num(v: Any, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:,.{digits}f}"


def _g(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# ----------------------------------------------------------------------------- context

class Report:
    """Everything the HTML, Markdown and CSV outputs are made from."""

    def __init__(self, results: list[dict[str, Any]], source: Path) -> None:
        self.results = results
        self.source = source
        self.df = runs_frame(results)
        self.cols = metric_columns(self.df, results)
        self.protocols = self._protocol_samples()
        self.names = {c: metric_name(c, self.protocols) for c in self.cols}
        self.board = leaderboard(self.df, self.cols)
        self.suites = list(dict.fromkeys(self.df["suite"].astype(str)))
        self.paradigm_of = dict(zip(self.board["label"], self.board["paradigm"]))
        self.order = list(self.board["label"])

    def _protocol_samples(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in self.results:
            for k, p in (r.get("protocols") or {}).items():
                if isinstance(p, dict):
                    out.setdefault(k, p)
        return out

    @property
    def failed(self) -> pd.DataFrame:
        return self.df[self.df["status"] != "ok"]

    def title(self) -> str:
        return "ssl-bench leaderboard: " + ", ".join(self.suites)


# ----------------------------------------------------------------------------- HTML helpers

def esc(v: Any) -> str:
    """HTML-escape anything (quotes too, so the result is safe in attribute values)."""
    return html.escape("" if v is None else str(v), quote=True)


def _table(head: list[str], rows: Iterable[str], attrs: str = "") -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    return f"<table {attrs}><thead><tr>{th}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _img(png: bytes | None, alt: str, cls: str = "fig") -> str:
    if not png:
        return f"<p class='muted'>{esc(alt)}: no data to plot.</p>"
    data = base64.b64encode(png).decode("ascii")
    return f"<img class='{cls}' alt='{esc(alt)}' src='data:image/png;base64,{data}'>"


def _kv(d: dict[str, Any]) -> str:
    return ", ".join(f"{esc(k)}={esc(_short(v))}" for k, v in d.items()) or "–"


CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0 auto;max-width:1280px;
 padding:1rem 2rem;color:#1d2430;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.2rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem;
 margin-top:2rem}h3{font-size:1rem}
nav a{margin-right:.8rem;font-size:.9rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left;vertical-align:top}
thead th{background:#f3f5f7;position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.best{background:#e6f4ea}td.best strong{color:#0b5d1e}
tr.group th{background:#eef1f6;text-align:left;font-weight:600}
tr.suite th{background:#dde3ee;text-align:left}
tr.baseline td{color:#555;font-style:italic}
tr.failedrow td{color:#8a1c1c}
.muted{color:#667}.small{font-size:.8rem}.badge{display:inline-block;padding:0 .35rem;border-radius:.6rem;
 font-size:.75rem;background:#fde2e1;color:#8a1c1c;margin-left:.3rem;font-style:normal}
.status-failed,.status-diverged{color:#8a1c1c;font-weight:600}
.rank{color:#667;font-size:.7rem;margin-left:.15rem}
.variant{display:block;color:#667;font-size:.75rem}
img.fig{max-width:100%;border:1px solid #eee}
img.recon{image-rendering:pixelated;width:100%;max-width:960px;border:1px solid #eee}
.rankings{display:flex;flex-wrap:wrap;gap:1rem}.rankings table{margin:0}
pre{white-space:pre-wrap;font-size:.75rem;background:#f6f8fa;padding:.5rem;max-height:20rem;overflow:auto}
code{font-size:.8rem}
"""

# The only script: reports any error of the page into #page-errors (tests read it back).
SCRIPT = """
window.__errors=[];window.onerror=function(m){window.__errors.push(String(m));
var e=document.getElementById('page-errors');if(e){e.textContent=window.__errors.join('\\n');}};
document.addEventListener('DOMContentLoaded',function(){document.body.setAttribute('data-ready','1');});
"""

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")


# ----------------------------------------------------------------------------- HTML sections

def _cell(row: pd.Series, c: str) -> str:
    mean, std, n = row.get(c + "_mean"), row.get(c + "_std"), int(row.get(c + "_n") or 0)
    text = esc(fmt(mean, std, n))
    if n and n != int(row["n"]):
        text += f" <span class='muted small'>(n={n})</span>"
    best = bool(row.get(c + "_best"))
    rank = row.get(c + "_rank")
    rank_html = f"<span class='rank'>#{int(rank)}</span>" if isinstance(rank, float) and not math.isnan(rank) else ""
    if best:
        return f"<td class='num best' title='best non-baseline mean'><strong>{text}</strong>{rank_html}</td>"
    return f"<td class='num'>{text}{rank_html}</td>"


def variant_suffix(method: Any, variant: Any) -> str:
    """What to print after a method's label: nothing when the variant is the method itself, the
    variant's own words when it already names the method ("mae (masked-input ..., CNN)")."""
    method, variant = str(method), str(variant or "")
    if not variant or variant == method:
        return ""
    if variant.startswith(method + " (") and variant.endswith(")"):
        return " " + variant[len(method):].strip()
    return f" ({variant})"


def _method_cell(row: pd.Series) -> str:
    name = f"<strong>{esc(row['label'])}</strong>"
    if row.get("variant") and str(row["variant"]) != str(row["method"]):
        name += f"<span class='variant'>{esc(row['variant'])}</span>"
    if row["failed"]:
        name += f" <a class='badge' href='#failed'>{int(row['failed'])} failed</a>"
    return f"<td>{name}</td>"


def leaderboard_html(rep: Report) -> str:
    b = rep.board
    head = ["Method", "Seeds (n)"] + [esc(rep.names[c]) for c in rep.cols]
    ncol = len(head)
    rows: list[str] = []
    multi = len(rep.suites) > 1
    last_suite, last_group = None, None
    for _, r in b.iterrows():
        if multi and r["suite"] != last_suite:
            rows.append(f"<tr class='suite'><th colspan='{ncol}'>suite {esc(r['suite'])}</th></tr>")
            last_group = None
        last_suite = r["suite"]
        if r["paradigm"] != last_group:
            group = PARADIGMS.get(r["paradigm"], f"Other paradigm: {r['paradigm']}")
            rows.append(f"<tr class='group' data-paradigm='{esc(r['paradigm'])}'><th colspan='{ncol}'>"
                        f"{esc(group)}</th></tr>")
            last_group = r["paradigm"]
        cls = ["baseline" if r["paradigm"] == BASELINE else "method"]
        if r["n"] == 0:
            cls.append("failedrow")
        seeds = f"{int(r['n'])}" + (f" <span class='muted small'>of {int(r['runs'])}</span>" if r["runs"] != r["n"] else "")
        cells = _method_cell(r) + f"<td class='num'>{seeds}</td>" + "".join(_cell(r, c) for c in rep.cols)
        rows.append(f"<tr class='{' '.join(cls)}' data-method='{esc(r['method'])}' data-suite='{esc(r['suite'])}' "
                    f"data-paradigm='{esc(r['paradigm'])}'>{cells}</tr>")
    return _table(head, rows, "id='leaderboard' class='leaderboard'")


def rankings_html(rep: Report) -> str:
    parts = []
    for c in rep.cols:
        for suite in rep.suites:
            b = rep.board[(rep.board["suite"] == suite) & rep.board[c + "_mean"].notna()]
            if b.empty:
                continue
            b = b.sort_values(c + "_mean", ascending=False, kind="stable")
            rows = []
            for _, r in b.iterrows():
                rank = r[c + "_rank"]
                rank_s = str(int(rank)) if not math.isnan(rank) else "–"
                cls = "baseline" if r["paradigm"] == BASELINE else "method"
                val = esc(fmt(r[c + "_mean"], r[c + "_std"], int(r[c + "_n"])))
                if r[c + "_best"]:
                    val = f"<strong>{val}</strong>"
                rows.append(f"<tr class='{cls}' data-method='{esc(r['method'])}'><td class='num'>{rank_s}</td>"
                            f"<td>{esc(r['label'])}</td><td class='num'>{val}</td>"
                            f"<td class='num'>{int(r[c + '_n'])}</td></tr>")
            title = esc(rep.names[c]) + (f" <span class='muted'>({esc(suite)})</span>" if len(rep.suites) > 1 else "")
            parts.append(f"<div><h3>{title}</h3>"
                         + _table(["#", "Method", "top-1 (%)", "n"], rows, f"class='ranking' data-metric='{esc(c)}'")
                         + "</div>")
    return "<div class='rankings'>" + "".join(parts) + "</div>" if parts else "<p>no metrics.</p>"


def failed_html(rep: Report) -> str:
    f = rep.failed
    out = []
    if f.empty:
        out.append("<p id='failed'>none: every run finished with status ok.</p>")
    else:
        by_id = {r.get("run_id"): r for r in rep.results}
        rows = []
        for _, r in f.iterrows():
            res = by_id.get(r["run_id"], {})
            where = ""
            if not (isinstance(r["step"], float) and math.isnan(r["step"])) and r["step"] is not None:
                where = f"epoch {_fmt_num(r['epochs_done'], 0)}, step {_fmt_num(r['step'], 0)}"
            tb = res.get("traceback")
            tb_html = f"<details><summary>traceback</summary><pre>{esc(tb)}</pre></details>" if tb else ""
            rows.append(f"<tr class='failedrow' data-method='{esc(r['method'])}'><td>{esc(r['label'])}</td>"
                        f"<td class='num'>{esc(r['seed'])}</td><td class='status-{esc(r['status'])}'>{esc(r['status'])}</td>"
                        f"<td class='reason'>{esc(r['reason'] or 'no reason recorded')}{tb_html}</td>"
                        f"<td>{esc(where)}</td><td><code>{esc(r['run_id'])}</code></td></tr>")
        out.append(_table(["Method", "Seed", "Status", "Reason", "Stopped at", "Run"], rows, "id='failed'"))
    skipped = []
    for r in rep.results:
        for target, why in (r.get("transfer_skipped") or {}).items():
            skipped.append((target, why))
    if skipped:
        items = "".join(f"<li><strong>{esc(t)}</strong>: {esc(w)} <span class='muted'>({n} runs)</span></li>"
                        for (t, w), n in Counter(skipped).items())
        out.append(f"<h3>Skipped evaluations</h3><ul id='skipped'>{items}</ul>")
    return "".join(out)


def cost_frame(rep: Report) -> pd.DataFrame:
    ok = rep.df[rep.df["status"] == "ok"]
    rows = []
    for label in rep.order:
        g = ok[ok["label"] == label]
        all_g = rep.df[rep.df["label"] == label]
        kinds = sorted({str(k) for k in g["peak_memory_kind"].dropna()})
        rows.append({"label": label, "method": all_g["method"].iloc[0], "n": len(g),
                     "train_s": g["train_s"].mean(), "train_s_std": g["train_s"].std(ddof=1) if len(g) > 1 else 0.0,
                     "views_per_s": g["views_per_s"].mean(), "peak_memory_mb": g["peak_memory_mb"].max(),
                     "peak_memory_kind": ", ".join(kinds), "eval_s": g["eval_s"].mean(), "total_s": g["total_s"].mean(),
                     "epochs": _join(g["epochs_done"]), "device": ", ".join(sorted({str(d) for d in g["device"].dropna()}))})
    return pd.DataFrame(rows)


def _join(s: pd.Series) -> str:
    vals = sorted({int(v) for v in s.dropna()})
    return ", ".join(map(str, vals)) or "–"


def cost_html(rep: Report) -> str:
    c = cost_frame(rep)
    rows = []
    for _, r in c.iterrows():
        mem = _fmt_num(r["peak_memory_mb"], 0) + (f" <span class='muted small'>({esc(r['peak_memory_kind'])})</span>"
                                                  if r["peak_memory_kind"] else "")
        train = _fmt_num(r["train_s"]) + (f" ± {_fmt_num(r['train_s_std'])}" if r["n"] > 1 else "")
        rows.append(f"<tr data-method='{esc(r['method'])}'><td>{esc(r['label'])}</td><td class='num'>{r['n']}</td>"
                    f"<td class='num'>{train}</td><td class='num'>{_fmt_num(r['views_per_s'], 0)}</td>"
                    f"<td class='num'>{mem}</td><td class='num'>{_fmt_num(r['eval_s'])}</td>"
                    f"<td class='num'>{_fmt_num(r['total_s'])}</td><td class='num'>{esc(r['epochs'])}</td>"
                    f"<td>{esc(r['device'])}</td></tr>")
    note = ("<p class='muted small'>Means over the ok seeds. Views/s counts every augmented or clean view the method "
            "consumed per second of training. Peak memory is the maximum over seeds; on CPU it is the process's "
            "max RSS (cumulative across runs in one process), on CUDA the allocator's peak.</p>")
    return _table(["Method", "n", "Train (s)", "Views/s", "Peak memory (MB)", "Eval (s)", "Total (s)", "Epochs",
                   "Device"], rows, "id='cost'") + note


SKIP_PROTOCOL_KEYS = {"top1", "val_top1", "seed", "sklearn_C", "l2", "dataset", "eval", "features", "split_sizes",
                      "l2_grid", "n_train", "n_val", "n_test"}


def _summarize(values: list[Any]) -> str:
    """One value when all runs agree, else each distinct value with its count."""
    counts = Counter(json.dumps(v, sort_keys=True, default=str) for v in values)
    if len(counts) == 1:
        return _pretty(values[0])
    return "; ".join(f"{_pretty(json.loads(k))} ({n} runs)" for k, n in counts.most_common())


def _pretty(v: Any) -> str:
    if isinstance(v, dict):
        return ", ".join(f"{k} {_pretty(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "[" + ", ".join(_pretty(x) for x in v) + "]"
    return _g(v)


def protocol_rows(rep: Report) -> list[dict[str, str]]:
    """Per metric column: evaluation, dataset, settings, split sizes, features, chosen L2 per method."""
    out = []
    for c in rep.cols:
        ps = [(r, r["protocols"][c]) for r in rep.results
              if r.get("status") == "ok" and isinstance((r.get("protocols") or {}).get(c), dict)]
        if not ps:
            out.append({"metric": c, "name": rep.names[c], "evaluation": "–", "dataset": "–", "settings": "no protocol stored",
                        "splits": "–", "features": "–", "l2": "–"})
            continue
        protos = [p for _, p in ps]
        keys = list(dict.fromkeys(k for p in protos for k in p if k not in SKIP_PROTOCOL_KEYS))
        settings = "; ".join(f"{k}: {_summarize([p.get(k) for p in protos])}" for k in keys)
        grid = protos[0].get("l2_grid")
        if isinstance(grid, list) and grid:
            settings = (f"L2 grid: {len(grid)} values {_g(min(grid))} … {_g(max(grid))} (log-spaced); " + settings)
        splits = _summarize([p.get("split_sizes") for p in protos])
        if any("n_val" in p for p in protos):
            splits += "; probe train (held-out val part) / test: " + _summarize(
                [f"{p.get('n_train')} ({p.get('n_val')}) / {p.get('n_test')}" for p in protos])
        l2 = "–"
        if any("l2" in p for p in protos):
            per: dict[str, list[Any]] = {}
            for r, p in ps:
                per.setdefault(str((r.get("config") or {}).get("method")), []).append(p.get("l2"))
            l2 = "\n".join(f"{m}: " + ", ".join(f"{_g(v)}" + (f" ×{n}" if n > 1 else "")
                                                for v, n in Counter(vals).most_common())
                           for m, vals in per.items())
        out.append({"metric": c, "name": rep.names[c], "evaluation": _summarize([p.get("eval") for p in protos]),
                    "dataset": _summarize([p.get("dataset") for p in protos]), "settings": settings,
                    "splits": splits, "features": _summarize([p.get("features") for p in protos]), "l2": l2})
    return out


def protocols_html(rep: Report) -> str:
    rows = [f"<tr data-metric='{esc(p['metric'])}'><td><strong>{esc(p['name'])}</strong><br><code>{esc(p['metric'])}</code></td>"
            f"<td>{esc(p['evaluation'])}</td><td>{esc(p['dataset'])}</td><td class='small'>{esc(p['settings'])}</td>"
            f"<td class='small'>{esc(p['splits'])}</td><td class='small'>{esc(p['features'])}</td>"
            f"<td class='small'>{esc(p['l2']).replace(chr(10), '<br>')}</td></tr>" for p in protocol_rows(rep)]
    diag = next((r["diagnostics"].get("protocol") for r in rep.results
                 if isinstance(r.get("diagnostics"), dict) and isinstance(r["diagnostics"].get("protocol"), dict)), None)
    note = (f"<p class='small'><strong>Diagnostics protocol:</strong> {esc(_pretty(diag))}</p>" if diag else "")
    return (_table(["Column", "Evaluation", "Dataset", "Settings", "Split sizes", "Features", "Chosen L2 per run"],
                   rows, "id='protocols'")
            + "<p class='muted small'>Every value is read from the protocol stored with each run; where runs disagree "
              "each value is listed with its count. No evaluation hyperparameter sees test labels: the probe's L2 "
              "strength is chosen on a held-out part of the train split, then refit on all of train.</p>" + note)


def _common(results: list[dict[str, Any]], key: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Fields of config[key] shared by every run, and per-run-label those that differ."""
    dicts = [((r.get("config") or {}).get(key) or {}) for r in results]
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    common = {k: dicts[0].get(k) for k in keys
              if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) == 1}
    return common, {}


def setup_html(rep: Report) -> str:
    parts = []
    for suite in rep.suites:
        res = [r for r in rep.results if str((r.get("config") or {}).get("suite")) == suite]
        cfg0 = res[0].get("config") or {}
        augs = Counter(str(r.get("augmentation")) for r in res if r.get("augmentation"))
        train_c, _ = _common(res, "train")
        eval_c, _ = _common(res, "eval")
        aug_html = "".join(f"<li><code>{esc(a)}</code>" + (f" <span class='muted'>({n} runs)</span>" if len(augs) > 1 else "")
                           + "</li>" for a, n in augs.items()) or "<li>–</li>"
        parts.append(
            f"<h3>Suite {esc(suite)}</h3><table class='setup' data-suite='{esc(suite)}'><tbody>"
            f"<tr><th>Dataset</th><td>{esc(cfg0.get('dataset'))} at {esc(cfg0.get('image_size'))}px</td></tr>"
            f"<tr><th>Backbone</th><td><code>{esc(cfg0.get('backbone'))}</code> (identical for every method)</td></tr>"
            f"<tr><th>Augmentation</th><td><ul class='aug'>{aug_html}</ul></td></tr>"
            f"<tr><th>Training (shared)</th><td class='small'>{_kv(train_c)}</td></tr>"
            f"<tr><th>Evaluation (shared)</th><td class='small'>{_kv(eval_c)}</td></tr>"
            f"</tbody></table>")
    rows = []
    for label in rep.order:
        g = [r for r, lab in zip(rep.results, rep.df["label"]) if lab == label]
        cfg = g[0].get("config") or {}
        seeds = sorted({(r.get("config") or {}).get("seed") for r in g}, key=str)
        optim = cfg.get("optim") or {}
        opt = (f"{optim.get('name')} lr {_g(optim.get('lr'))} (@bs {optim.get('lr_batch_size')}), "
               f"wd {_g(optim.get('weight_decay'))}, {optim.get('schedule')}") if optim else "–"
        tr = cfg.get("train") or {}
        if all((r.get("train") or {}).get("step") == 0 and r.get("status") == "ok" for r in g):
            opt = "not trained (evaluated at initialisation)"
        rows.append(f"<tr data-method='{esc(cfg.get('method'))}'><td><strong>{esc(label)}</strong></td>"
                    f"<td>{esc(PARADIGMS.get(cfg.get('paradigm'), cfg.get('paradigm')))}</td>"
                    f"<td class='variant-name'>{esc(g[0].get('variant'))}</td>"
                    f"<td class='views'>{esc(' + '.join(map(str, cfg.get('views') or [])) or '–')}</td>"
                    f"<td>{esc(cfg.get('aug_mode'))}</td><td class='num'>{esc(tr.get('epochs'))}</td>"
                    f"<td class='num'>{esc(tr.get('batch_size'))}</td><td class='small'>{esc(opt)}</td>"
                    f"<td class='small'>{_kv(cfg.get('method_config') or {})}</td>"
                    f"<td class='num'>{esc(', '.join(map(str, seeds)))}</td></tr>")
    parts.append("<h3>Methods</h3>" + _table(
        ["Method", "Paradigm", "Variant (what ran)", "Views consumed per step", "Aug", "Epochs", "Batch", "Optimizer",
         "Method config", "Seeds"], rows, "id='methods'")
        + "<p class='muted small'>Views: <code>augmented</code> = a fresh draw of the suite's augmentation pipeline; "
          "<code>clean</code> = the un-augmented, normalized image. Untrained baselines (pixels, random-init) consume "
          "no views in training; their views are those of feature extraction.</p>")
    return "".join(parts)


def diagnostics_html(rep: Report) -> str:
    ok = rep.df[rep.df["status"] == "ok"]
    if "effective_rank" not in ok:
        return "<p class='muted'>no diagnostics stored.</p>"
    rows = []
    for label in rep.order:
        g = ok[ok["label"] == label]
        if g.empty:
            continue
        cells = []
        for k in ("effective_rank", "alignment", "uniformity", "invariance", "feature_std"):
            v = g[k].dropna() if k in g else pd.Series(dtype=float)
            cells.append(f"<td class='num'>{esc(fmt(v.mean(), v.std(ddof=1), len(v)) if len(v) else '–')}</td>")
        collapsed = int(g["collapsed"].fillna(False).astype(bool).sum()) if "collapsed" in g else 0
        cells.append(f"<td class='{'status-failed' if collapsed else ''}'>{'yes (' + str(collapsed) + ' runs)' if collapsed else 'no'}</td>")
        rows.append(f"<tr data-method='{esc(g['method'].iloc[0])}'><td>{esc(label)}</td>{''.join(cells)}</tr>")
    return _table(["Method", "Effective rank", "Alignment", "Uniformity", "Invariance", "Feature std", "Collapsed"],
                  rows, "id='diagnostics'")


def recon_html(rep: Report) -> str:
    parts = []
    for label in rep.order:
        g = rep.df[(rep.df["label"] == label) & (rep.df["status"] == "ok")].sort_values("seed")
        if g.empty or g["paradigm"].iloc[0] not in RECON_PARADIGMS and not _has_recon(g):
            continue
        for _, r in g.iterrows():
            p = Path(str(r["_dir"])) / "recon.png" if isinstance(r["_dir"], str) else None
            if p is not None and p.is_file():
                parts.append(f"<figure data-method='{esc(r['method'])}'>{_img(p.read_bytes(), f'reconstructions of {label}', 'recon')}"
                             f"<figcaption>{esc(label)}{esc(variant_suffix(r['method'], r['variant']))}, seed {esc(r['seed'])}: "
                             "test images (top row) over their reconstructions (bottom row)</figcaption></figure>")
                break
        else:
            parts.append(f"<p class='muted'>{esc(label)}: no recon.png stored.</p>")
    return "".join(parts) or "<p class='muted'>no autoencoding or masked-modelling runs.</p>"


def _has_recon(g: pd.DataFrame) -> bool:
    return any(isinstance(d, str) and (Path(d) / "recon.png").is_file() for d in g["_dir"])


def environment_html(rep: Report) -> str:
    def uniq(key: str) -> list[str]:
        return list(dict.fromkeys(json.dumps(r.get(key), sort_keys=True, default=str) for r in rep.results
                                  if r.get(key) is not None))
    commits = [json.loads(c) for c in uniq("git_commit")]
    pys = [json.loads(c) for c in uniq("python")]
    pkgs = [json.loads(c) for c in uniq("packages")]
    machines = [json.loads(c) for c in uniq("machine")]
    devices = sorted({str(d) for d in rep.df["device"].dropna()})
    rows = [("Git commit", ", ".join(map(str, commits)) or "–"), ("Python", ", ".join(map(str, pys)) or "–"),
            ("Packages", " | ".join(_pretty(p) for p in pkgs) or "–"),
            ("Machine", " | ".join(_pretty(m) for m in machines) or "–"), ("Devices", ", ".join(devices) or "–"),
            ("Results read from", f"{rep.source} ({len(rep.results)} result.json files)")]
    return "<table id='environment'><tbody>" + "".join(
        f"<tr><th>{esc(k)}</th><td class='small'>{esc(v)}</td></tr>" for k, v in rows) + "</tbody></table>"


def _figure(fn, *args) -> bytes | None | str:
    """Run a figure function; an exception becomes a visible note instead of a missing report."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - a broken plot must not hide the tables
        return f"figure failed: {type(e).__name__}: {e}"


def _fig_html(png: bytes | None | str, alt: str) -> str:
    if isinstance(png, str):
        return f"<p class='status-failed'>{esc(alt)}: {esc(png)}</p>"
    return _img(png, alt)


def render_html(rep: Report) -> str:
    from bench import figures
    order = rep.order
    acc_metrics = [c for c in rep.cols if not c.startswith("transfer_")]
    primary = next((c for c in ("linear_top1", "knn_top1") if c in rep.cols), rep.cols[0] if rep.cols else None)
    fig_acc = _figure(figures.accuracy_bars, rep.df, acc_metrics, rep.names, order)
    fig_time = _figure(figures.accuracy_vs_time, rep.df, primary, rep.names.get(primary, ""), rep.paradigm_of) \
        if primary else None
    fig_loss = _figure(figures.loss_curves, rep.df, order)
    fig_diag = _figure(figures.diagnostics, rep.df, order, rep.paradigm_of)
    transfer = [c for c in rep.cols if c.startswith("transfer_")]
    fig_transfer = _figure(figures.accuracy_bars, rep.df, transfer, rep.names, order) if transfer else None

    n_ok = int((rep.df["status"] == "ok").sum())
    n_bad = len(rep.df) - n_ok
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    summary = (f"{len(rep.df)} runs ({n_ok} ok, <a href='#failed'>{n_bad} failed or diverged</a>), "
               f"{len(rep.order)} leaderboard rows; generated {esc(when)}.")
    sections = [
        ("leaderboard-section", "Leaderboard",
         "<p class='small muted'>Top-1 accuracy (%) on the test split, mean ± std over seeds (n = seeds that "
         "finished). Bold on green: the best non-baseline mean in the column; <span class='rank'>#k</span>: rank among "
         "the self-supervised methods. Baselines (pixels = raw pixels as features, random-init = untrained backbone, "
         "supervised = backbone trained with labels) are the floor and ceiling, never ranked.</p>"
         + leaderboard_html(rep)),
        ("rankings", "Ranking per evaluation", rankings_html(rep)),
        ("failures", "Failed or diverged runs", failed_html(rep)),
        ("accuracy", "Accuracy", _fig_html(fig_acc, "accuracy per method")
         + (_fig_html(fig_transfer, "transfer accuracy per method") if transfer else "")),
        ("cost", "Cost", _fig_html(fig_time, "accuracy against training time") + cost_html(rep)),
        ("protocols", "Protocol of every column", protocols_html(rep)),
        ("setup", "Setup: backbone, augmentation, views, variants", setup_html(rep)),
        ("training", "Training loss", _fig_html(fig_loss, "training-loss curves")),
        ("diagnostics-section", "Representation diagnostics",
         diagnostics_html(rep) + _fig_html(fig_diag, "diagnostics")),
        ("reconstructions", "Reconstructions (autoencoding and masked methods)", recon_html(rep)),
        ("environment-section", "Environment", environment_html(rep)),
    ]
    nav = "".join(f"<a href='#{sid}'>{esc(t.split(':')[0])}</a>" for sid, t, _ in sections)
    body = "".join(f"<section id='{sid}'><h2>{esc(t)}</h2>{content}</section>" for sid, t, content in sections)
    title = esc(rep.title())
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{title}</title>"
            f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>"
            f"<h1>{title}</h1><p class='small'>{summary}</p><nav>{nav}</nav>{body}"
            f"<div id='page-errors' hidden></div></body></html>\n")


# ----------------------------------------------------------------------------- Markdown / CSV

def md_escape(v: Any) -> str:
    s = " ".join(str("" if v is None else v).split())
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(md_escape(h) for h in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(rows_cell for rows_cell in r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(rep: Report) -> str:
    out = [f"# {md_escape(rep.title())}", ""]
    for suite in rep.suites:
        res = [r for r in rep.results if str((r.get("config") or {}).get("suite")) == suite]
        c = res[0].get("config") or {}
        augs = sorted({str(r.get("augmentation")) for r in res if r.get("augmentation")})
        out.append(f"Suite **{md_escape(suite)}**: {md_escape(c.get('dataset'))} at {md_escape(c.get('image_size'))}px, "
                   f"backbone `{md_escape(c.get('backbone'))}`; augmentation: "
                   + "; ".join(f"`{md_escape(a)}`" for a in augs) + ".")
    out += ["", "Top-1 accuracy (%), mean ± std over n seeds; **bold** = best non-baseline; baselines are not ranked.", ""]
    head = ["method", "paradigm", "n"] + [rep.names[c] for c in rep.cols]
    rows = []
    for _, r in rep.board.iterrows():
        cells = [md_escape(r["label"] + variant_suffix(r["method"], r["variant"]))
                 + (f" — {int(r['failed'])} failed" if r["failed"] else ""),
                 md_escape(r["paradigm"]), str(int(r["n"]))]
        for col in rep.cols:
            t = md_escape(fmt(r[col + "_mean"], r[col + "_std"], int(r[col + "_n"])))
            cells.append(f"**{t}**" if r[col + "_best"] else t)
        rows.append(cells)
    out += [md_table(head, rows), ""]
    out += ["## Failed or diverged runs", ""]
    f = rep.failed
    if f.empty:
        out.append("none")
    else:
        out.append(md_table(["method", "seed", "status", "reason", "run"],
                            [[md_escape(r["label"]), md_escape(r["seed"]), md_escape(r["status"]),
                              md_escape(r["reason"] or "no reason recorded"), md_escape(r["run_id"])]
                             for _, r in f.iterrows()]))
    out += ["", "## Cost", ""]
    cost = cost_frame(rep)
    out.append(md_table(["method", "n", "train (s)", "views/s", "peak memory (MB)", "eval (s)", "device"],
                        [[md_escape(r["label"]), str(r["n"]), _fmt_num(r["train_s"]), _fmt_num(r["views_per_s"], 0),
                          _fmt_num(r["peak_memory_mb"], 0) + (f" ({md_escape(r['peak_memory_kind'])})" if r["peak_memory_kind"] else ""),
                          _fmt_num(r["eval_s"]), md_escape(r["device"])] for _, r in cost.iterrows()]))
    out += ["", "## Protocols", ""]
    for p in protocol_rows(rep):
        out.append(f"- **{md_escape(p['name'])}** (`{p['metric']}`): {md_escape(p['evaluation'])} on "
                   f"{md_escape(p['dataset'])}; splits {md_escape(p['splits'])}; {md_escape(p['settings'])}; "
                   f"chosen L2: {md_escape(p['l2'].replace(chr(10), '; '))}")
    out += ["", "## Methods", ""]
    out.append(md_table(["method", "paradigm", "variant", "views"],
                        [[md_escape(lab), md_escape(rep.paradigm_of.get(lab)),
                          md_escape(rep.df[rep.df["label"] == lab]["variant"].iloc[0]),
                          md_escape(rep.df[rep.df["label"] == lab]["views"].iloc[0])] for lab in rep.order]))
    return "\n".join(out) + "\n"


def board_csv(rep: Report) -> pd.DataFrame:
    keep = ["suite", "label", "method", "paradigm", "variant", "n", "runs", "failed", "seeds", "train_s", "views_per_s"]
    cols = keep + [f"{c}_{s}" for c in rep.cols for s in ("mean", "std", "n", "rank", "best")]
    return rep.board[[c for c in cols if c in rep.board.columns]]


# ----------------------------------------------------------------------------- entry points

def write_report(out_dir: Path, dest: Path | None = None) -> Path:
    """Write leaderboard.html (+ leaderboard.md, leaderboard.csv, runs.csv beside it) for every
    run below `out_dir`; returns the HTML path."""
    out_dir = Path(out_dir)
    rep = Report(store.load_results(out_dir), out_dir)
    dest = Path(dest) if dest else out_dir / "leaderboard.html"
    dest.parent.mkdir(parents=True, exist_ok=True)
    folder = dest.parent
    _write(folder / "runs.csv", rep.df.drop(columns=["_dir", "setting"], errors="ignore").to_csv(index=False))
    _write(folder / "leaderboard.csv", board_csv(rep).to_csv(index=False))
    _write(folder / "leaderboard.md", render_markdown(rep))
    _write(dest, render_html(rep))
    return dest


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two writers never share a temp file
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def terminal_table(out_dir: Path) -> str:
    """A compact plain-text leaderboard: kNN, kNN k=20, linear; failures listed below."""
    rep = Report(store.load_results(Path(out_dir)), Path(out_dir))
    cols = [c for c in ("knn_top1", "knn20_top1", "linear_top1") if c in rep.cols]
    head = ["method", "paradigm", "n"] + [rep.names[c] for c in cols]
    rows = []
    for _, r in rep.board.iterrows():
        label = _clip(str(r["label"]), 28) + (" *" if any(r[c + "_best"] for c in cols) else "")
        rows.append([label, _clip(str(r["paradigm"]), 15), f"{int(r['n'])}/{int(r['runs'])}"]
                    + [fmt(r[c + "_mean"], r[c + "_std"], int(r[c + "_n"])) for c in cols])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    lines += ["  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in rows]
    if len(rep.suites) > 1:
        lines.insert(0, "suites: " + ", ".join(rep.suites))
    if cols:
        lines.append("(top-1 %, mean ± std over seeds; * = best non-baseline in some column)")
    f = rep.failed
    if not f.empty:
        lines.append(f"{len(f)} run(s) failed or diverged:")
        for _, r in f.iterrows():
            lines.append(f"  {_clip(str(r['label']), 28)} seed {r['seed']}: {str(r['status']).upper()} "
                         f"{_clip(str(r['reason'] or 'no reason recorded'), 100)}")
    return "\n".join(lines)


def _clip(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"
