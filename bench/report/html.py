"""The leaderboard page: ONE self-contained HTML file, rendered with jinja2.

`templates/leaderboard.html.j2` is rendered with autoescape on. The stylesheet and script beside
it are read from the package directory and inlined, figures are base64 PNG data URIs, and the
page's Content-Security-Policy forbids any network request, so the file opens anywhere, offline.

The functions below only shape a `Report` into plain values (strings, numbers, lists, dicts):
the markup lives in the template, and every string that came from a config or a user reaches
the page through autoescape. The only fragments marked safe are the inlined CSS and JS files.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import jinja2
import pandas as pd
from markupsafe import Markup

from bench.eval import intervals as iv

from . import ablation as abl
from .frame import (BASELINE, PARADIGMS, RECON_PARADIGMS, Report, common_fields, cost_frame, fmt, fmt_g, fmt_num,
                    pretty, protocol_rows, short, summarize, variant_suffix)
from .published import published, row_entries
from .uncertainty import fmt_ci, missing_tests, tie_title

TEMPLATES = Path(__file__).resolve().parent / "templates"


def esc(v: Any) -> str:
    """HTML-escape anything (quotes too, so the result is safe in attribute values)."""
    return html.escape("" if v is None else str(v), quote=True)


def _finalize(v: Any) -> Any:
    """Escape every printed value as `esc` does, before autoescape sees it.

    Autoescape stays on (it skips the Markup returned here); escaping with html.escape first
    keeps the entities the page always had (`&quot;`, `&#x27;` rather than markupsafe's
    `&#34;`, `&#39;`), which tests and readers of the file match. None prints as nothing."""
    if hasattr(v, "__html__"):
        return v
    return Markup(esc(v))


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    # StrictUndefined: a misspelt name in the template fails the render instead of printing nothing
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, finalize=_finalize,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                              keep_trailing_newline=True)


def _asset(name: str, end_tag: str) -> Markup:
    """A stylesheet or script of the package, to inline verbatim (escaping would break it)."""
    text = (TEMPLATES / name).read_text(encoding="utf-8")
    if end_tag in text.lower():  # it would close its <style>/<script> element early
        raise ValueError(f"{name} must not contain {end_tag}")
    return Markup(text)


# ----------------------------------------------------------------------------- figures

@dataclass(frozen=True)
class Figure:
    """One image of the page: base64 PNG, or nothing to plot, or why plotting failed."""

    alt: str
    png: str | None = None
    error: str | None = None
    cls: str = "fig"


def _png(png: bytes | None, alt: str, cls: str = "fig") -> Figure:
    """PNG bytes as a data-URI figure; empty or None means nothing to plot."""
    return Figure(alt, base64.b64encode(png).decode("ascii") if png else None, cls=cls)


def _figure(alt: str, fn: Callable[..., bytes | None], *args: Any) -> Figure:
    """Run a figure function; an exception becomes a visible note instead of a missing report."""
    try:
        return _png(fn(*args), alt)
    except Exception as e:  # noqa: BLE001 - a broken plot must not hide the tables
        return Figure(alt, error=f"figure failed: {type(e).__name__}: {e}")


def _figures(rep: Report) -> dict[str, Figure | None]:
    """Every figure of the page, by name; transfer is None when no transfer column exists."""
    from . import figures  # matplotlib/seaborn load only when a page is rendered
    order = rep.order
    acc_metrics = [c for c in rep.cols if not c.startswith("transfer_")]
    primary = next((c for c in ("linear_top1", "knn_top1") if c in rep.cols), rep.cols[0] if rep.cols else None)
    time_alt = "accuracy against training time"
    # computed in the order the page used to, so matplotlib's state is the same for each
    out: dict[str, Figure | None] = {
        "accuracy": _figure("accuracy per method", figures.accuracy_bars, rep.df, acc_metrics, rep.names, order),
        "time": _figure(time_alt, figures.accuracy_vs_time, rep.df, primary, rep.names.get(primary, ""),
                        rep.paradigm_of) if primary else Figure(time_alt),
        "loss": _figure("training-loss curves", figures.loss_curves, rep.df, order),
        "diagnostics": _figure("diagnostics", figures.diagnostics, rep.df, order, rep.paradigm_of),
    }
    transfer = [c for c in rep.cols if c.startswith("transfer_")]
    out["transfer"] = _figure("transfer accuracy per method", figures.accuracy_bars, rep.df, transfer, rep.names,
                              order) if transfer else None
    out["curves"] = _figure("learning curves", figures.learning_curves, rep.df, order)
    table = abl.ablation_table(rep)
    out["ablation"] = (_figure("augmentation ablation heatmap", figures.ablation_heatmap, table, rep.names)
                       if table is not None else None)
    inv = abl.invariance_table(rep)
    out["invariance"] = (_figure("invariance profile", figures.invariance_profile, inv[0],
                                 {a: abl.aug_title(a) for a in set(inv[0]["augmentation"])})
                         if inv is not None else None)
    return out


# ----------------------------------------------------------------------------- sections

def _score(r: pd.Series, c: str) -> dict[str, Any]:
    """One leaderboard cell: mean ± std, n when it differs from the row's, best, the 95% interval,
    the tie mark (not significantly different from the column's best) and the rank (shared by
    the best and the rows tied with it)."""
    n = int(r.get(c + "_n") or 0)
    rank = r.get(c + "_sig_rank", r.get(c + "_rank"))
    method = r.get(c + "_ci_method")
    return {"text": fmt(r.get(c + "_mean"), r.get(c + "_std"), n), "n": n if n and n != int(r["n"]) else None,
            "best": bool(r.get(c + "_best")),
            "ci": fmt_ci(r.get(c + "_ci_lo"), r.get(c + "_ci_hi")),
            "ci_title": f"95% interval: {method}" if isinstance(method, str) and method else "",
            "tie": tie_title(r, c),
            "rank": int(rank) if isinstance(rank, float) and not math.isnan(rank) else None}


def leaderboard_rows(rep: Report) -> list[dict[str, Any]]:
    """The leaderboard's rows in display order: suite and paradigm headings, then method rows
    (each with its published numbers, when its suite carries some)."""
    entries, _ = published(rep)
    rows: list[dict[str, Any]] = []
    multi = len(rep.suites) > 1
    last_suite, last_group = None, None
    for _, r in rep.board.iterrows():
        if multi and r["suite"] != last_suite:
            rows.append({"kind": "suite", "suite": r["suite"]})
            last_group = None
        last_suite = r["suite"]
        if r["paradigm"] != last_group:
            rows.append({"kind": "group", "paradigm": r["paradigm"],
                         "title": PARADIGMS.get(r["paradigm"], f"Other paradigm: {r['paradigm']}")})
            last_group = r["paradigm"]
        cls = ["baseline" if r["paradigm"] == BASELINE else "method"] + (["failedrow"] if r["n"] == 0 else [])
        variant = r["variant"] if r.get("variant") and str(r["variant"]) != str(r["method"]) else None
        rows.append({"kind": "method", "cls": " ".join(cls), "method": r["method"], "suite": r["suite"],
                     "paradigm": r["paradigm"], "label": r["label"], "variant": variant, "failed": int(r["failed"]),
                     "n": int(r["n"]), "runs": int(r["runs"]) if r["runs"] != r["n"] else None,
                     "cells": [_score(r, c) for c in rep.cols],
                     "published": [e.text for e in row_entries(entries, str(r["suite"]), str(r["method"]))]})
    return rows


def published_sources(rep: Report) -> list[dict[str, Any]]:
    """The numbered sources of the published column, with the protocol differences they state."""
    _, sources = published(rep)
    return [{"number": s.number, "suite": s.suite, "source": s.source, "differences": s.differences} for s in sources]


def uncertainty_notes(rep: Report) -> list[str]:
    """Rows whose runs stored no per-image predictions (older results): no tie test for one seed."""
    return missing_tests(rep.board, rep.cols)


def ablation_section(rep: Report) -> dict[str, Any] | None:
    """The augmentation-ablation tables (None when no ablation runs are stored)."""
    table = abl.ablation_table(rep)
    inv = abl.invariance_table(rep)
    if table is None and inv is None:
        return None
    out: dict[str, Any] = {"rows": [], "invariance": None, "names": [rep.names.get(m, m) for m in abl.METRICS]}
    if table is not None:
        for _, w in abl.ablation_wide(table).iterrows():
            cells = []
            for m in abl.METRICS:
                n = w.get(m + "_n")
                has = bool(pd.notna(n)) and float(n) > 0
                p = w.get(m + "_p")
                cells.append({"full": f"{w[m + '_full']:.2f}" if has else "–",
                              "ablated": f"{w[m + '_ablated']:.2f}" if has else "–",
                              "delta": f"{w[m + '_delta']:+.2f}" if has else "–",
                              "significant": bool(w.get(m + "_significant")) if has else False,
                              "p": f"{float(p):.3g}" if pd.notna(p) else "–",
                              "test": w.get(m + "_test") or ""})
            n = w.get(abl.METRICS[0] + "_n")
            out["rows"].append({"method": w["method"], "label": w["label"], "removed": w["removed_title"],
                                "n": int(n) if pd.notna(n) else 0, "cells": cells})
    if inv is not None:
        agg, protocol = inv
        augs = list(dict.fromkeys(agg["augmentation"]))
        rows = []
        for label, g in agg.groupby("label", sort=False):
            by = g.set_index("augmentation")
            rows.append({"label": label, "method": g["method"].iloc[0],
                         "cells": [fmt(by.at[a, "mean"], by.at[a, "std"], int(by.at[a, "n"])) if a in by.index else "–"
                                   for a in augs]})
        out["invariance"] = {"head": [abl.aug_title(a) for a in augs], "rows": rows,
                             "protocol": pretty({k: v for k, v in protocol.items() if k != "pipelines"}),
                             "pipelines": [(abl.aug_title(a), d) for a, d in (protocol.get("pipelines") or {}).items()]}
    return out


def rankings(rep: Report) -> list[dict[str, Any]]:
    """One ranked table per (evaluation, suite), best first."""
    out = []
    for c in rep.cols:
        for suite in rep.suites:
            b = rep.board[(rep.board["suite"] == suite) & rep.board[c + "_mean"].notna()]
            if b.empty:
                continue
            b = b.sort_values(c + "_mean", ascending=False, kind="stable")
            shared = int((b[c + "_sig_rank"] == 1).sum())  # the best and the rows tied with it share rank 1
            rows = [{"rank": (str(int(r[c + "_sig_rank"])) + ("=" if r[c + "_sig_rank"] == 1 and shared > 1 else ""))
                     if not math.isnan(r[c + "_sig_rank"]) else "–",
                     "cls": "baseline" if r["paradigm"] == BASELINE else "method", "method": r["method"],
                     "label": r["label"], "value": fmt(r[c + "_mean"], r[c + "_std"], int(r[c + "_n"])),
                     "ci": fmt_ci(r[c + "_ci_lo"], r[c + "_ci_hi"]) or "–", "tie": tie_title(r, c),
                     "best": bool(r[c + "_best"]), "n": int(r[c + "_n"])} for _, r in b.iterrows()]
            out.append({"metric": c, "name": rep.names[c], "suite": suite, "rows": rows})
    return out


def failed_rows(rep: Report) -> list[dict[str, Any]]:
    """Failed and diverged runs: reason, where training stopped, traceback when stored."""
    by_id = {r.run_id: r for r in rep.all_results}
    rows = []
    for _, r in rep.failed.iterrows():
        where = ""
        if not (isinstance(r["step"], float) and math.isnan(r["step"])) and r["step"] is not None:
            where = f"epoch {fmt_num(r['epochs_done'], 0)}, step {fmt_num(r['step'], 0)}"
        rows.append({"method": r["method"], "label": r["label"], "seed": r["seed"], "status": r["status"],
                     "reason": r["reason"] or "no reason recorded", "where": where, "run_id": r["run_id"],
                     "traceback": by_id[r["run_id"]].traceback or None})
    return rows


def skipped_evaluations(rep: Report) -> list[dict[str, Any]]:
    """Transfer evaluations a run skipped, with why, counted over runs."""
    skipped = [(target, why) for r in rep.results for target, why in r.transfer_skipped.items()]
    return [{"target": t, "why": w, "n": n} for (t, w), n in Counter(skipped).items()]


def cost_rows(rep: Report) -> list[dict[str, Any]]:
    """The cost table's cells, formatted."""
    rows = []
    for _, r in cost_frame(rep).iterrows():
        rows.append({"method": r["method"], "label": r["label"], "n": r["n"],
                     "train": fmt_num(r["train_s"]) + (f" ± {fmt_num(r['train_s_std'])}" if r["n"] > 1 else ""),
                     "views_per_s": fmt_num(r["views_per_s"], 0), "memory": fmt_num(r["peak_memory_mb"], 0),
                     "memory_kind": r["peak_memory_kind"] or None, "eval": fmt_num(r["eval_s"]),
                     "total": fmt_num(r["total_s"]), "epochs": r["epochs"], "device": r["device"]})
    return rows


def curve_protocol(rep: Report) -> str | None:
    """How the learning-curve points were measured, as the runs with a curve stored it."""
    protocols = [r.curve_protocol for r in rep.results if r.ok and r.curve and r.curve_protocol]
    return summarize(protocols) if protocols else None


def diagnostics_protocol(rep: Report) -> str | None:
    """How the representation diagnostics were measured (the first run that stored it)."""
    diag = next((r.diagnostics["protocol"] for r in rep.results if isinstance(r.diagnostics.get("protocol"), dict)),
                None)
    return pretty(diag) if diag else None


def _kv(d: dict[str, Any]) -> str:
    """key=value, key=value (plain text; the template escapes it), or – when empty."""
    return ", ".join(f"{k}={short(v)}" for k, v in d.items()) or "–"


def setup_suites(rep: Report) -> list[dict[str, Any]]:
    """Per suite: dataset, backbone, augmentation pipelines, the train/eval settings all runs share."""
    out = []
    for suite in rep.suites:
        res = [r for r in rep.results if r.config.suite == suite]
        cfg0 = res[0].config
        augs = Counter(r.augmentation for r in res if r.augmentation)
        out.append({"suite": suite, "dataset": cfg0.dataset, "image_size": cfg0.image_size,
                    "backbone": cfg0.backbone, "augs": list(augs.items()), "count_augs": len(augs) > 1,
                    "train": _kv(common_fields(res, "train")), "eval": _kv(common_fields(res, "eval"))})
    return out


def setup_methods(rep: Report) -> list[dict[str, Any]]:
    """Per leaderboard row: paradigm, variant, views, epochs, batch, optimizer, method config, seeds."""
    rows = []
    for label in rep.order:
        g = [r for r, lab in zip(rep.results, rep.df["label"]) if lab == label]
        cfg = g[0].config
        seeds = sorted({r.seed for r in g}, key=str)
        optim = cfg.optim
        opt = (f"{optim.name} lr {fmt_g(optim.lr)} (@bs {optim.lr_batch_size}), "
               f"wd {fmt_g(optim.weight_decay)}, {optim.schedule}")
        if all(r.train.get("step") == 0 and r.ok for r in g):
            opt = "not trained (evaluated at initialisation)"
        rows.append({"method": cfg.method, "label": label, "paradigm": PARADIGMS.get(cfg.paradigm, cfg.paradigm),
                     "variant": g[0].variant, "views": " + ".join(map(str, cfg.views)) or "–",
                     "aug_mode": cfg.aug_mode, "epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
                     "optimizer": opt, "config": _kv(cfg.section("method_config")),
                     "seeds": ", ".join(map(str, seeds))})
    return rows


def diagnostics_rows(rep: Report) -> list[dict[str, Any]] | None:
    """Per leaderboard row: mean ± std of each diagnostic over the ok seeds; None when none stored."""
    ok = rep.df[rep.df["status"] == "ok"]
    if "effective_rank" not in ok:
        return None
    rows = []
    for label in rep.order:
        g = ok[ok["label"] == label]
        if g.empty:
            continue
        cells = []
        for k in ("effective_rank", "alignment", "uniformity", "invariance", "feature_std"):
            v = g[k].dropna() if k in g else pd.Series(dtype=float)
            cells.append(fmt(v.mean(), v.std(ddof=1), len(v)) if len(v) else "–")
        collapsed = int(g["collapsed"].fillna(False).astype(bool).sum()) if "collapsed" in g else 0
        rows.append({"method": g["method"].iloc[0], "label": label, "cells": cells, "collapsed": collapsed})
    return rows


def reconstructions(rep: Report) -> list[dict[str, Any]]:
    """Per autoencoding/masked row (or any row that stored one): the first seed's recon.png."""
    out = []
    for label in rep.order:
        g = rep.df[(rep.df["label"] == label) & (rep.df["status"] == "ok")].sort_values("seed")
        if g.empty or g["paradigm"].iloc[0] not in RECON_PARADIGMS and not _has_recon(g):
            continue
        for _, r in g.iterrows():
            p = r["directory"] / "recon.png" if isinstance(r["directory"], Path) else None
            if p is not None and p.is_file():
                out.append({"label": label, "method": r["method"], "seed": r["seed"],
                            "suffix": variant_suffix(r["method"], r["variant"]),
                            "figure": _png(p.read_bytes(), f"reconstructions of {label}", "recon")})
                break
        else:
            out.append({"label": label, "figure": None})
    return out


def _has_recon(g: pd.DataFrame) -> bool:
    """Whether any run of the row stored a recon.png (a non-reconstruction method may)."""
    return any(isinstance(d, Path) and (d / "recon.png").is_file() for d in g["directory"])


def environment_rows(rep: Report) -> list[tuple[str, str]]:
    """Git commit, Python, packages, machine and devices of the runs, each distinct value once."""
    def uniq(key: str) -> list[Any]:
        # a record without the value holds None (git commit, Python) or {} (packages, machine)
        values = [getattr(r, key) for r in rep.results]
        return [json.loads(c) for c in dict.fromkeys(json.dumps(v, sort_keys=True, default=str)
                                                     for v in values if v is not None and v != {})]
    devices = sorted({str(d) for d in rep.df["device"].dropna()})
    return [("Git commit", ", ".join(map(str, uniq("git_commit"))) or "–"),
            ("Python", ", ".join(map(str, uniq("python"))) or "–"),
            ("Packages", " | ".join(pretty(p) for p in uniq("packages")) or "–"),
            ("Machine", " | ".join(pretty(m) for m in uniq("machine")) or "–"),
            ("Devices", ", ".join(devices) or "–"),
            ("Results read from", f"{rep.source} ({len(rep.all_results)} result.json files)")]


# ----------------------------------------------------------------------------- page

def render_html(rep: Report) -> str:
    """The whole page as one string."""
    n_ok = int((rep.df["status"] == "ok").sum())
    context = {
        "title": rep.title(), "multi_suite": len(rep.suites) > 1, "names": [rep.names[c] for c in rep.cols],
        "runs": len(rep.df), "ok": n_ok, "bad": len(rep.df) - n_ok, "rows": len(rep.order),
        "when": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "leaderboard": leaderboard_rows(rep), "rankings": rankings(rep), "failed": failed_rows(rep),
        "published_sources": published_sources(rep), "uncertainty": iv.describe(),
        "no_predictions": uncertainty_notes(rep), "ablation": ablation_section(rep),
        "skipped": skipped_evaluations(rep), "cost": cost_rows(rep),
        # the chosen L2 of each method on its own line
        "protocols": [{**p, "l2": p["l2"].split("\n")} for p in protocol_rows(rep)],
        "diagnostics_protocol": diagnostics_protocol(rep), "curve_protocol": curve_protocol(rep),
        "suites": setup_suites(rep), "methods": setup_methods(rep),
        "diagnostics": diagnostics_rows(rep), "reconstructions": reconstructions(rep),
        "environment": environment_rows(rep), "figures": _figures(rep),
        "css": _asset("leaderboard.css", "</style"), "script": _asset("leaderboard.js", "</script"),
    }
    return _environment().get_template("leaderboard.html.j2").render(context)
