"""Figures of the leaderboard report (seaborn on matplotlib's Agg backend), as PNG bytes.

Every function takes the per-run frame built by `bench.report.frame.runs_frame` (one row per run,
`label` = the leaderboard row a run belongs to) and returns PNG bytes, or None when there is
nothing to draw. The report embeds the bytes as base64 data URIs, so the HTML stays one file.
Labels that came from configs are passed through `plot_label` (matplotlib would otherwise
read a `$...$` in a method name as mathtext).
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # never a display; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

DPI = 100
_THEME_SET = False


def _theme() -> None:
    global _THEME_SET
    if not _THEME_SET:
        sns.set_theme(style="whitegrid", context="notebook", font_scale=0.9)
        _THEME_SET = True


def plot_label(text: object, width: int = 40) -> str:
    """A config string made safe for matplotlib text: no mathtext, bounded length."""
    s = " ".join(str(text).split())
    if len(s) > width:
        s = s[: width - 1] + "…"
    return s.replace("\\", "\\\\").replace("$", r"\$")


def to_png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"]


def accuracy_bars(df: pd.DataFrame, metrics: Sequence[str], names: dict[str, str],
                  order: Sequence[str]) -> bytes | None:
    """Mean top-1 per leaderboard row and evaluation, error bars = std over seeds, dots = seeds."""
    _theme()
    ok = _ok(df)
    cols = [m for m in metrics if m in ok.columns and ok[m].notna().any()]
    if ok.empty or not cols:
        return None
    long = ok.melt(id_vars=["label"], value_vars=cols, var_name="metric", value_name="top1").dropna()
    long["metric"] = long["metric"].map(lambda m: plot_label(names.get(m, m)))
    long["label"] = long["label"].map(plot_label)
    row_order = [plot_label(o) for o in order if plot_label(o) in set(long["label"])]
    hue_order = [plot_label(names.get(m, m)) for m in cols]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(row_order) * max(1, len(cols)) ** 0.5 + 1.5))
    sns.barplot(data=long, x="top1", y="label", hue="metric", order=row_order, hue_order=hue_order,
                errorbar="sd", capsize=0.1, err_kws={"linewidth": 1}, ax=ax)
    sns.stripplot(data=long, x="top1", y="label", hue="metric", order=row_order, hue_order=hue_order,
                  dodge=True, palette="dark:black", size=3, legend=False, ax=ax)
    ax.set(xlabel="top-1 accuracy (%)  —  bars: mean over seeds, whiskers: ± std, dots: seeds", ylabel="",
           xlim=(0, 100))
    ax.legend(title="evaluation", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return to_png(fig)


def accuracy_vs_time(df: pd.DataFrame, metric: str, metric_name: str, paradigm_of: dict[str, str]) -> bytes | None:
    """Mean accuracy against mean training time per leaderboard row (± std both ways)."""
    _theme()
    ok = _ok(df)
    if ok.empty or metric not in ok.columns or ok[metric].isna().all():
        return None
    g = ok.groupby("label", sort=False)
    agg = pd.DataFrame({"acc": g[metric].mean(), "acc_sd": g[metric].std(ddof=1),
                        "time": g["train_s"].mean(), "time_sd": g["train_s"].std(ddof=1)}).reset_index()
    agg = agg.dropna(subset=["acc", "time"])
    if agg.empty:
        return None
    agg["paradigm"] = agg["label"].map(lambda lab: plot_label(paradigm_of.get(lab, "?")))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.errorbar(agg["time"], agg["acc"], xerr=agg["time_sd"].fillna(0), yerr=agg["acc_sd"].fillna(0),
                fmt="none", ecolor="grey", elinewidth=1, capsize=2, zorder=1)
    sns.scatterplot(data=agg, x="time", y="acc", hue="paradigm", style="paradigm", s=70, ax=ax, zorder=2)
    for _, r in agg.iterrows():
        ax.annotate(plot_label(r["label"], 24), (r["time"], r["acc"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    ax.set(xlabel="training time (s, mean over seeds)", ylabel=f"{plot_label(metric_name)} top-1 (%)")
    ax.legend(fontsize="small", loc="best")
    return to_png(fig)


def read_train_log(run_dir: str | Path) -> pd.DataFrame | None:
    path = Path(run_dir) / "train_log.csv"
    if not path.is_file():
        return None
    try:
        log = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError):
        return None
    if not {"step", "loss"} <= set(log.columns) or log.empty:
        return None
    return log


def loss_curves(df: pd.DataFrame, order: Sequence[str]) -> bytes | None:
    """Training loss against step, one panel per leaderboard row, one line per seed
    (diverged runs included: their curve shows where it blew up)."""
    _theme()
    parts = []
    for _, r in df.iterrows():
        if not isinstance(r.get("directory"), Path):
            continue
        log = read_train_log(r["directory"])
        if log is None:
            continue
        loss = pd.to_numeric(log["loss"], errors="coerce").replace([np.inf, -np.inf], np.nan)
        parts.append(pd.DataFrame({"step": pd.to_numeric(log["step"], errors="coerce"), "loss": loss,
                                   "label": plot_label(r["label"], 30),
                                   "run": f"seed {r['seed']}" + ("" if r["status"] == "ok" else f" ({r['status']})")}))
    if not parts:
        return None
    long = pd.concat(parts, ignore_index=True).dropna(subset=["step"])
    labels = [plot_label(o, 30) for o in order if plot_label(o, 30) in set(long["label"])]
    labels += [lab for lab in dict.fromkeys(long["label"]) if lab not in labels]
    wrap = min(4, len(labels))
    g = sns.relplot(data=long, x="step", y="loss", hue="run", col="label", col_order=labels, col_wrap=wrap,
                    kind="line", estimator=None, height=2.4, aspect=1.3,
                    marker="o" if long.groupby("run")["step"].nunique().max() <= 30 else None, markersize=3,
                    facet_kws={"sharex": False, "sharey": False})
    g.set_titles("{col_name}")
    g.set_axis_labels("step", "training loss")
    return to_png(g.figure)


def curve_points(df: pd.DataFrame) -> pd.DataFrame:
    """The learning-curve points of the ok runs in long form: label, seed, epoch, knn_top1."""
    parts = []
    for _, r in _ok(df).iterrows():
        curve = r.get("curve")
        if not isinstance(curve, list) or not curve:
            continue
        parts.append(pd.DataFrame({"epoch": [p.get("epoch") for p in curve],
                                   "knn_top1": [p.get("knn_top1") for p in curve],
                                   "label": plot_label(r["label"], 30), "seed": r["seed"]}))
    if not parts:
        return pd.DataFrame(columns=["epoch", "knn_top1", "label", "seed"])
    long = pd.concat(parts, ignore_index=True)
    for c in ("epoch", "knn_top1"):
        long[c] = pd.to_numeric(long[c], errors="coerce")
    return long.dropna(subset=["epoch", "knn_top1"])


def learning_curves(df: pd.DataFrame, order: Sequence[str]) -> bytes | None:
    """kNN top-1 against epoch, one line per leaderboard row: the mean over its ok seeds, the band
    ± std (epoch 0 is the initialisation). Untrained baselines have no curve."""
    _theme()
    long = curve_points(df)
    if long.empty:
        return None
    labels = [plot_label(o, 30) for o in order if plot_label(o, 30) in set(long["label"])]
    labels += [lab for lab in dict.fromkeys(long["label"]) if lab not in labels]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sns.lineplot(data=long, x="epoch", y="knn_top1", hue="label", hue_order=labels, errorbar="sd",
                 marker="o" if long["epoch"].nunique() <= 30 else None, markersize=4, ax=ax)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="epoch (0 = initialisation)  —  lines: mean over seeds, bands: ± std",
           ylabel="kNN top-1 (%)")
    ax.legend(title="method", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return to_png(fig)


def diagnostics(df: pd.DataFrame, order: Sequence[str], paradigm_of: dict[str, str]) -> bytes | None:
    """Effective rank per row (± std) and the alignment/uniformity plane (one dot per run)."""
    _theme()
    ok = _ok(df)
    if ok.empty or "effective_rank" not in ok.columns or ok["effective_rank"].isna().all():
        return None
    d = ok.assign(label=ok["label"].map(plot_label),
                  paradigm=ok["label"].map(lambda lab: plot_label(paradigm_of.get(lab, "?"))))
    row_order = [plot_label(o) for o in order if plot_label(o) in set(d["label"])]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 0.3 * len(row_order) + 2.8),
                                 gridspec_kw={"width_ratios": [1, 1.2]})
    sns.barplot(data=d, x="effective_rank", y="label", order=row_order, errorbar="sd", capsize=0.1,
                color=sns.color_palette()[0], ax=a1)
    a1.set(xlabel="effective rank (RankMe) of test features", ylabel="")
    if {"alignment", "uniformity"} <= set(d.columns) and d[["alignment", "uniformity"]].notna().all(axis=1).any():
        sns.scatterplot(data=d, x="uniformity", y="alignment", hue="label", hue_order=row_order,
                        style="paradigm", s=60, ax=a2)
        a2.set(xlabel="uniformity (lower = more uniform)", ylabel="alignment (lower = more invariant)")
        a2.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    else:
        a2.set_axis_off()
    fig.tight_layout()
    return to_png(fig)


def ablation_heatmap(table: pd.DataFrame, names: dict[str, str]) -> bytes | None:
    """Method x removed augmentation: change in top-1 (points) against the full pipeline, one
    panel per metric (kNN, linear); * = significant (paired test, Holm within the panel)."""
    _theme()
    if table is None or table.empty or table["delta"].notna().sum() == 0:
        return None
    metrics = [m for m in dict.fromkeys(table["metric"]) if table.loc[table["metric"] == m, "delta"].notna().any()]
    rows = list(dict.fromkeys(table["label"]))
    cols = list(dict.fromkeys(table["removed_title"]))
    vmax = max(1.0, float(table["delta"].abs().max()))
    fig, axes = plt.subplots(1, len(metrics), figsize=(1.3 * len(cols) * len(metrics) + 3, 0.45 * len(rows) + 1.8),
                             squeeze=False)
    for ax, m in zip(axes[0], metrics):
        t = table[table["metric"] == m]
        grid = t.pivot_table(index="label", columns="removed_title", values="delta", aggfunc="first", sort=False)
        grid = grid.reindex(index=rows, columns=cols)
        sig = t.pivot_table(index="label", columns="removed_title", values="significant", aggfunc="first",
                            sort=False).reindex(index=rows, columns=cols)
        annot = np.array([[("" if np.isnan(v) else f"{v:+.1f}" + ("*" if bool(s) is True else ""))
                           for v, s in zip(vr, sr)] for vr, sr in zip(grid.to_numpy(float), sig.to_numpy(object))])
        with warnings.catch_warnings():  # seaborn's own use of a matplotlib API slated for deprecation
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            sns.heatmap(grid.rename(index=plot_label), ax=ax, cmap="vlag_r", center=0.0, vmin=-vmax, vmax=vmax,
                        annot=annot, fmt="", linewidths=0.5, cbar_kws={"label": "Δ top-1 (points)"})
        ax.set(title=f"{plot_label(names.get(m, m))}: removed − full", xlabel="augmentation removed", ylabel="")
    fig.tight_layout()
    return to_png(fig)


def invariance_profile(agg: pd.DataFrame, titles: dict[str, str]) -> bytes | None:
    """Mean cosine similarity between an image's features and its view's, per augmentation
    applied alone (and the full pipeline), one bar per method; whiskers = std over seeds."""
    _theme()
    if agg is None or agg.empty:
        return None
    d = agg.assign(label=agg["label"].map(plot_label), augmentation=agg["augmentation"].map(lambda a: titles.get(a, a)))
    order = list(dict.fromkeys(d["augmentation"]))
    labels = list(dict.fromkeys(d["label"]))
    fig, ax = plt.subplots(figsize=(1.4 * len(order) + 3, 4))
    width = 0.8 / max(1, len(labels))
    for i, lab in enumerate(labels):
        g = d[d["label"] == lab].set_index("augmentation").reindex(order)
        x = np.arange(len(order)) + (i - (len(labels) - 1) / 2) * width
        ax.bar(x, g["mean"], width, yerr=g["std"].fillna(0), capsize=2, label=lab)
    ax.set_xticks(np.arange(len(order)), order)
    ax.set(ylabel="cosine(features of image, of its view)", xlabel="augmentation applied alone",
           ylim=(min(0.0, float(d["mean"].min()) - 0.05), 1.02))
    ax.legend(title="method", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return to_png(fig)
