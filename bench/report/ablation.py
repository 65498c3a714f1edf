"""The augmentation-ablation section's data (issue #17; the runs: bench/ablation.py).

`ablation_table`: per full-pipeline row and removed augmentation, kNN and linear top-1 with the
augmentation removed against the full pipeline, on the seeds both have, the difference and its
paired test (Holm-corrected over each metric's cells). `invariance_table`: per full-pipeline row
and augmentation applied alone, the mean over seeds of the stored invariance profile.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import pandas as pd

from bench.ablation import AUGMENTATIONS, FULL, TITLES, read_invariance
from bench.eval import intervals as iv

from .uncertainty import PredictionCache, by_seed, compare

if TYPE_CHECKING:
    from .frame import Report

METRICS = ("knn_top1", "linear_top1")


def _cached(fn):
    """Compute once per Report (the page, the Markdown and the CSV all use the same tables)."""
    key = "_cache_" + fn.__name__

    def wrapper(rep: "Report"):
        if key not in rep.__dict__:
            rep.__dict__[key] = fn(rep)
        return rep.__dict__[key]
    wrapper.__doc__, wrapper.__name__ = fn.__doc__, fn.__name__
    return wrapper


@_cached
def ablation_table(rep: "Report") -> pd.DataFrame | None:
    """One row per (full row, removed augmentation, metric); None when there are no ablation runs."""
    abl = rep.ablation_df
    if abl.empty:
        return None
    preds = PredictionCache()
    order = {lab: i for i, lab in enumerate(rep.order)}
    rows = []
    groups = abl.groupby(["suite", "full_label", "removed"], sort=False)
    for (suite, full_label, removed), g in groups:
        full = rep.df[(rep.df["suite"] == suite) & (rep.df["label"] == full_label)]
        for m in METRICS:
            a, f = by_seed(g, m), by_seed(full, m)
            common = sorted(set(a) & set(f))
            row = {"suite": suite, "label": full_label, "method": full["method"].iloc[0], "removed": removed,
                   "removed_title": TITLES[removed], "metric": m, "seeds": ",".join(map(str, common)),
                   "n": len(common), "full": math.nan, "ablated": math.nan, "delta": math.nan, "p_raw": math.nan,
                   "test": "no finished run pair" if not common else "", "failed": int((g["status"] != "ok").sum())}
            if common:
                row["full"] = sum(float(f[s][m]) for s in common) / len(common)
                row["ablated"] = sum(float(a[s][m]) for s in common) / len(common)
                row["delta"] = row["ablated"] - row["full"]
                p, row["test"] = compare(f, a, m, preds)
                row["p_raw"] = math.nan if p is None else p
            rows.append(row)
    t = pd.DataFrame(rows)
    t["p"] = math.nan
    for m in METRICS:  # one family per metric: its heatmap panel
        sel = t[(t["metric"] == m) & t["p_raw"].notna()]
        for i, q in iv.holm(dict(zip(sel.index, sel["p_raw"]))).items():
            t.at[i, "p"] = q
    t["significant"] = t["p"] < iv.ALPHA
    t["_row"] = t["label"].map(lambda lab: order.get(lab, len(order)))
    t["_aug"] = t["removed"].map(AUGMENTATIONS.index)
    return t.sort_values(["_row", "_aug", "metric"], kind="stable").drop(columns=["_row", "_aug"]).reset_index(drop=True)


def ablation_wide(t: pd.DataFrame) -> pd.DataFrame:
    """The table as one line per (full row, removed augmentation), both metrics side by side."""
    keys = ["suite", "label", "method", "removed", "removed_title"]
    parts = []
    for m in METRICS:
        s = t[t["metric"] == m].set_index(keys)[["n", "full", "ablated", "delta", "p", "significant", "test"]]
        parts.append(s.add_prefix(m + "_"))
    wide = pd.concat(parts, axis=1).reset_index()
    return wide


@_cached
def invariance_table(rep: "Report") -> tuple[pd.DataFrame, dict] | None:
    """(label x augmentation mean/std/n, one stored protocol) over the ok runs with an invariance.json."""
    rows, protocol = [], None
    ok = rep.df[rep.df["status"] == "ok"]
    for _, r in ok.iterrows():
        doc = read_invariance(r.get("directory"))
        if doc is None:
            continue
        protocol = protocol or doc.get("protocol")
        for aug, v in doc["values"].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                rows.append({"label": r["label"], "method": r["method"], "seed": r["seed"], "augmentation": aug,
                             "cosine": float(v)})
    if not rows:
        return None
    long = pd.DataFrame(rows)
    order = {lab: i for i, lab in enumerate(rep.order)}
    augs = [a for a in (*AUGMENTATIONS, FULL) if a in set(long["augmentation"])]
    agg = (long.groupby(["label", "method", "augmentation"], sort=False)["cosine"]
           .agg(mean="mean", std=lambda x: x.std(ddof=1) if len(x) > 1 else 0.0, n="count").reset_index())
    agg["_row"] = agg["label"].map(lambda lab: order.get(lab, len(order)))
    agg["_aug"] = agg["augmentation"].map(augs.index)
    agg = agg.sort_values(["_row", "_aug"], kind="stable").drop(columns=["_row", "_aug"]).reset_index(drop=True)
    return agg, protocol or {}


def aug_title(name: str) -> str:
    return "full pipeline" if name == FULL else TITLES.get(name, name)
