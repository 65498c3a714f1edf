"""The report's data: pandas aggregation of the stored runs (`RunRecord`s from result.json), no markup.

A leaderboard row is one (suite, method, configuration without the seed): runs made with
different overrides are never averaged together; such rows are labelled with what differs,
e.g. `simclr [train.epochs=2]`. `Report` bundles every frame the HTML, Markdown, CSV and
terminal outputs are rendered from; the small formatters here turn values into the plain-text
strings all of them show (escaping is the renderers' job).
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.results.store import RunRecord

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
LO, HI = "__lo", "__hi"  # runs_frame columns <metric>__lo / __hi: a run's stored bootstrap interval


# ----------------------------------------------------------------------------- frames

def runs_frame(results: list[RunRecord]) -> pd.DataFrame:
    """One row per run (failed ones included): identity, status, metrics, cost, diagnostics.
    `directory` holds the Path each record was read from (plots read its train_log.csv and
    recon.png), `curve` its learning-curve points (a list of dicts); `setting` is the JSON of the
    config without the seed (what a row groups by)."""
    rows = []
    for r in results:
        cfg = r.config
        train, t, diag = r.train, r.timings, r.diagnostics
        row = {
            "suite": cfg.suite, "method": cfg.method, "seed": cfg.seed, "paradigm": cfg.paradigm,
            "variant": r.variant, "status": r.status, "reason": r.reason,
            "aug_mode": cfg.aug_mode, "dataset": cfg.dataset, "backbone": cfg.backbone, "image_size": cfg.image_size,
            "views": " + ".join(map(str, cfg.views)), "run_id": r.run_id,
            "epochs_done": train.get("epochs_done"), "step": train.get("step"),
            "setting": json.dumps(_setting(r), sort_keys=True, default=str),
        }
        for k, v in r.metrics.items():
            row[k] = _num(v)
        for k, iv in r.intervals.items():  # the run's own 95% bootstrap interval per metric (issue #17)
            if isinstance(iv, dict):
                row[k + LO], row[k + HI] = _num(iv.get("lo")), _num(iv.get("hi"))
        row["predictions"] = r.predictions
        row.update({"train_s": _num(t.get("train_s", train.get("train_s"))),
                    "views_per_s": _num(t.get("views_per_s", train.get("views_per_s"))),
                    "peak_memory_mb": _num(t.get("peak_memory_mb", train.get("peak_memory_mb"))),
                    "peak_memory_kind": t.get("peak_memory_kind", train.get("peak_memory_kind")),
                    "eval_s": _num(t.get("eval_s")), "total_s": _num(t.get("total_s")),
                    "device": t.get("device")})
        for k in DIAG:
            if k in diag:
                row[k] = diag[k] if k == "collapsed" else _num(diag[k])
        row["curve"] = r.curve
        row["git_commit"] = r.git_commit
        row["directory"] = r.directory
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["label"] = _labels(df, results)
    return df


def _setting(r: RunRecord) -> dict[str, Any]:
    """The run's config as stored, without the seed: runs that share it are seeds of one row."""
    return {k: v for k, v in r.config.to_json().items() if k != "seed"}


def _num(v: Any) -> float:
    """A stored number as float; anything else (bools, None, text) as NaN."""
    if isinstance(v, bool) or v is None:
        return float("nan")
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys ("train.epochs")."""
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


def _labels(df: pd.DataFrame, results: list[RunRecord]) -> list[str]:
    """The method name, plus what differs when one method ran with several configurations."""
    labels = list(df["method"].astype(str))
    flat = [_flatten(_setting(r)) for r in results]
    for (_suite, method), idx in df.groupby(["suite", "method"], dropna=False, sort=False).groups.items():
        idx = list(idx)
        if df.loc[idx, "setting"].nunique() < 2:
            continue
        keys = sorted({k for i in idx for k in flat[i]})
        differ = [k for k in keys if len({json.dumps(flat[i].get(k), default=str) for i in idx}) > 1]
        for i in idx:
            desc = ", ".join(f"{k}={short(flat[i].get(k))}" for k in differ[:3])
            labels[i] = f"{method} [{desc}{', …' if len(differ) > 3 else ''}]"
    return labels


def short(v: Any) -> str:
    """A config value in a label or key=value list: lists (and the tuples of config fields) comma-joined."""
    if isinstance(v, (list, tuple)):
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


def metric_columns(df: pd.DataFrame, results: list[RunRecord] | None = None) -> list[str]:
    """The `*_top1` columns that hold a value, in display order (transfer targets as configured)."""
    order: list[str] = []
    for r in results or []:
        for t in r.config.eval.transfer:
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
    from .uncertainty import add_uncertainty
    add_uncertainty(board, df, cols)  # 95% intervals, and the tie test of every row against its column's best
    primary = next((c for c in cols if c in PRIMARY), cols[0] if cols else None)
    group_pos = {p: i for i, p in enumerate(PARADIGMS)}
    board["_suite_pos"] = board["suite"].map({s: i for i, s in enumerate(dict.fromkeys(board["suite"]))})
    board["_group"] = board["paradigm"].map(lambda p: group_pos.get(p, len(PARADIGMS) - 1 - 0.5))
    board["_score"] = -board[primary + "_mean"].fillna(-1e9) if primary else 0.0
    board = board.sort_values(["_suite_pos", "_group", "_score", "label"], kind="stable")
    return board.drop(columns=["_suite_pos", "_group", "_score"]).reset_index(drop=True)


# ----------------------------------------------------------------------------- display values

def fmt(mean: Any, std: Any, n: int) -> str:
    """'mean ± std' (2 decimals) over n > 1 seeds, the mean alone for one, '–' for none."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def fmt_num(v: Any, digits: int = 1) -> str:
    """A cost number with thousands separators; integers as such, NaN/None as '–'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:,.{digits}f}"


def fmt_g(v: Any) -> str:
    """Floats to 3 significant digits (learning rates, L2 strengths), the rest as str."""
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def variant_suffix(method: Any, variant: Any) -> str:
    """What to print after a method's label: nothing when the variant is the method itself, the
    variant's own words when it already names the method ("mae (masked-input ..., CNN)")."""
    method, variant = str(method), str(variant or "")
    if not variant or variant == method:
        return ""
    if variant.startswith(method + " (") and variant.endswith(")"):
        return " " + variant[len(method):].strip()
    return f" ({variant})"


# ----------------------------------------------------------------------------- context

class Report:
    """Everything the HTML, Markdown and CSV outputs are made from.

    `results`/`df`: the leaderboard's runs. Runs recognised as augmentation ablations of a
    full-pipeline row (bench/ablation.py `detect`) are kept apart (`ablation_results`,
    `ablation_df`, labelled "<full row> − <augmentation>") for the ablation section;
    `all_results` holds both."""

    def __init__(self, results: list[RunRecord], source: Path) -> None:
        from bench.ablation import TITLES, detect
        self.all_results = results
        self.source = source
        abl = detect([r.config.to_json() for r in results])
        self.results = [r for i, r in enumerate(results) if i not in abl]
        self.df = runs_frame(self.results)
        position = {id(r): i for i, r in enumerate(self.results)}
        ablated = sorted(abl)
        self.ablation_results = [results[i] for i in ablated]
        self.ablation_df = runs_frame(self.ablation_results)
        if not self.ablation_df.empty:
            full = [self.df["label"].iloc[position[id(results[abl[i][0]])]] for i in ablated]
            self.ablation_df["full_label"] = full
            self.ablation_df["removed"] = [abl[i][1] for i in ablated]
            self.ablation_df["label"] = [f"{f} − {TITLES[abl[i][1]]}" for f, i in zip(full, ablated)]
        self.cols = metric_columns(self.df, results)
        self.protocols = self._protocol_samples()
        self.names = {c: metric_name(c, self.protocols) for c in self.cols}
        self.board = leaderboard(self.df, self.cols)
        self.suites = list(dict.fromkeys(self.df["suite"].astype(str)))
        self.paradigm_of = dict(zip(self.board["label"], self.board["paradigm"]))
        self.order = list(self.board["label"])

    def _protocol_samples(self) -> dict[str, dict[str, Any]]:
        """The first stored protocol per metric: it names the column (k, temperature)."""
        out: dict[str, dict[str, Any]] = {}
        for r in self.results:
            for k, p in r.protocols.items():
                if isinstance(p, dict):
                    out.setdefault(k, p)
        return out

    @property
    def all_df(self) -> pd.DataFrame:
        """Every run: the leaderboard's and the ablation's."""
        if self.ablation_df.empty:
            return self.df
        return pd.concat([self.df, self.ablation_df], ignore_index=True)

    @property
    def failed(self) -> pd.DataFrame:
        """The runs that did not finish with status ok (failed or diverged), ablation runs included."""
        df = self.all_df
        return df[df["status"] != "ok"]

    def title(self) -> str:
        """The page title: every suite in the results."""
        return "ssl-bench leaderboard: " + ", ".join(self.suites)


# ----------------------------------------------------------------------------- shared tables

def cost_frame(rep: Report) -> pd.DataFrame:
    """Per leaderboard row: mean train/eval time, throughput and peak memory over the ok seeds."""
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
    """The distinct integers of a column ('200' or '100, 200'), '–' when none."""
    vals = sorted({int(v) for v in s.dropna()})
    return ", ".join(map(str, vals)) or "–"


SKIP_PROTOCOL_KEYS = {"top1", "val_top1", "seed", "sklearn_C", "l2", "dataset", "eval", "features", "split_sizes",
                      "l2_grid", "n_train", "n_val", "n_test"}


def summarize(values: list[Any]) -> str:
    """One value when all runs agree, else each distinct value with its count."""
    counts = Counter(json.dumps(v, sort_keys=True, default=str) for v in values)
    if len(counts) == 1:
        return pretty(values[0])
    return "; ".join(f"{pretty(json.loads(k))} ({n} runs)" for k, n in counts.most_common())


def pretty(v: Any) -> str:
    """A stored value (dicts and lists included) as one readable line."""
    if isinstance(v, dict):
        return ", ".join(f"{k} {pretty(x)}" for k, x in v.items())
    if isinstance(v, list):
        return "[" + ", ".join(pretty(x) for x in v) + "]"
    return fmt_g(v)


def protocol_rows(rep: Report) -> list[dict[str, str]]:
    """Per metric column: evaluation, dataset, settings, split sizes, features, chosen L2 per method."""
    out = []
    for c in rep.cols:
        ps = [(r, r.protocols[c]) for r in rep.results if r.ok and isinstance(r.protocols.get(c), dict)]
        if not ps:
            out.append({"metric": c, "name": rep.names[c], "evaluation": "–", "dataset": "–", "settings": "no protocol stored",
                        "splits": "–", "features": "–", "l2": "–"})
            continue
        protos = [p for _, p in ps]
        keys = list(dict.fromkeys(k for p in protos for k in p if k not in SKIP_PROTOCOL_KEYS))
        settings = "; ".join(f"{k}: {summarize([p.get(k) for p in protos])}" for k in keys)
        grid = protos[0].get("l2_grid")
        if isinstance(grid, list) and grid:
            settings = (f"L2 grid: {len(grid)} values {fmt_g(min(grid))} … {fmt_g(max(grid))} (log-spaced); " + settings)
        splits = summarize([p.get("split_sizes") for p in protos])
        if any("n_val" in p for p in protos):
            splits += "; probe train (held-out val part) / test: " + summarize(
                [f"{p.get('n_train')} ({p.get('n_val')}) / {p.get('n_test')}" for p in protos])
        l2 = "–"
        if any("l2" in p for p in protos):
            per: dict[str, list[Any]] = {}
            for r, p in ps:
                per.setdefault(r.method, []).append(p.get("l2"))
            l2 = "\n".join(f"{m}: " + ", ".join(f"{fmt_g(v)}" + (f" ×{n}" if n > 1 else "")
                                                for v, n in Counter(vals).most_common())
                           for m, vals in per.items())
        out.append({"metric": c, "name": rep.names[c], "evaluation": summarize([p.get("eval") for p in protos]),
                    "dataset": summarize([p.get("dataset") for p in protos]), "settings": settings,
                    "splits": splits, "features": summarize([p.get("features") for p in protos]), "l2": l2})
    return out


def common_fields(results: list[RunRecord], key: str) -> dict[str, Any]:
    """The fields of config section `key` (train, eval, ...) that every run shares (the
    per-method table shows the rest)."""
    dicts = [r.config.section(key) for r in results]
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    common = {k: dicts[0].get(k) for k in keys
              if len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) == 1}
    return common
