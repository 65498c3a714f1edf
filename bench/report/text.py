"""The report as text: Markdown (leaderboard.md), CSV (leaderboard.csv) and the terminal table.

Markdown cells are escaped with `md_escape` (pipes, backslashes, and `<`/`>` as entities, so a
method name cannot inject HTML into a rendered leaderboard.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench.results import store

from bench.eval import intervals as iv

from . import ablation as abl
from .frame import Report, cost_frame, fmt, fmt_num, pretty, protocol_rows, variant_suffix
from .published import published, row_entries
from .uncertainty import fmt_ci, missing_tests


def md_escape(v: Any) -> str:
    """One Markdown table cell: whitespace collapsed, pipes and backslashes escaped, no raw HTML."""
    s = " ".join(str("" if v is None else v).split())
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def md_table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; the row cells are already escaped (some carry **bold**)."""
    lines = ["| " + " | ".join(md_escape(h) for h in head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(rep: Report) -> str:
    """leaderboard.md: the leaderboard, failures, cost, protocols and methods."""
    out = [f"# {md_escape(rep.title())}", ""]
    for suite in rep.suites:
        res = [r for r in rep.results if r.config.suite == suite]
        c = res[0].config
        augs = sorted({r.augmentation for r in res if r.augmentation})
        out.append(f"Suite **{md_escape(suite)}**: {md_escape(c.dataset)} at {md_escape(c.image_size)}px, "
                   f"backbone `{md_escape(c.backbone)}`; augmentation: "
                   + "; ".join(f"`{md_escape(a)}`" for a in augs) + ".")
    out += ["", "Top-1 accuracy (%), mean ± std over n seeds; **bold** = best non-baseline; baselines are not ranked. "
            "Beside each column, its 95% interval; ≈ = not significantly different from the column's top row "
            f"(α = {iv.ALPHA}, Holm-corrected within the column; such rows share rank 1). {md_escape(iv.describe())}.", ""]
    entries, sources = published(rep)
    head = ["method", "paradigm", "n"] + [h for c in rep.cols for h in (rep.names[c], "95% CI")]
    head += ["published (not ours)"] if sources else []
    rows = []
    for _, r in rep.board.iterrows():
        cells = [md_escape(r["label"] + variant_suffix(r["method"], r["variant"]))
                 + (f" — {int(r['failed'])} failed" if r["failed"] else ""),
                 md_escape(r["paradigm"]), str(int(r["n"]))]
        for col in rep.cols:
            t = md_escape(fmt(r[col + "_mean"], r[col + "_std"], int(r[col + "_n"])))
            cells.append(f"**{t}**" if r[col + "_best"] else t)
            ci = fmt_ci(r[col + "_ci_lo"], r[col + "_ci_hi"]) or "–"
            cells.append(ci + (" ≈" if r[col + "_tied"] is True else ""))
        if sources:
            cells.append(md_escape("; ".join(e.text for e in row_entries(entries, str(r["suite"]), str(r["method"])))))
        rows.append(cells)
    out += [md_table(head, rows), ""]
    missing = missing_tests(rep.board, rep.cols)
    if missing:
        out += ["No interval or tie test for one seed where a run stored no per-image predictions (made before "
                "intervals existed): " + md_escape(", ".join(missing)) + ".", ""]
    if sources:
        out += ["Published numbers (not ours; never ranked), and how each protocol differs from this suite's:", ""]
        out += [f"{s.number}. {md_escape(s.source)}. Protocol differences: {md_escape(s.differences)}." for s in sources]
        out.append("")
    out += _ablation_markdown(rep)
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
                        [[md_escape(r["label"]), str(r["n"]), fmt_num(r["train_s"]), fmt_num(r["views_per_s"], 0),
                          fmt_num(r["peak_memory_mb"], 0) + (f" ({md_escape(r['peak_memory_kind'])})" if r["peak_memory_kind"] else ""),
                          fmt_num(r["eval_s"]), md_escape(r["device"])] for _, r in cost.iterrows()]))
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


def _ablation_markdown(rep: Report) -> list[str]:
    """The augmentation-ablation and invariance tables (nothing when no ablation runs are stored)."""
    table = abl.ablation_table(rep)
    inv = abl.invariance_table(rep)
    if table is None and inv is None:
        return []
    out = ["## Augmentation ablation", ""]
    if table is not None:
        out += ["Each method retrained with one augmentation removed, against its full-pipeline row, on the seeds "
                "both have; Δ = removed − full (points); * = significant (α = 0.05, Holm within each metric).", ""]
        names = [rep.names.get(m, m) for m in abl.METRICS]
        head = ["method", "removed", "seeds"] + [f"{n} {k}" for n in names for k in ("full", "removed", "Δ", "p")]
        rows = []
        for _, w in abl.ablation_wide(table).iterrows():
            n0 = w.get(abl.METRICS[0] + "_n")
            cells = [md_escape(w["label"]), md_escape(w["removed_title"]), str(int(n0)) if pd.notna(n0) else "0"]
            for m in abl.METRICS:
                has = pd.notna(w.get(m + "_n")) and float(w[m + "_n"]) > 0
                star = "*" if has and bool(w.get(m + "_significant")) else ""
                cells += ([f"{w[m + '_full']:.2f}", f"{w[m + '_ablated']:.2f}", f"{w[m + '_delta']:+.2f}{star}",
                           f"{w[m + '_p']:.3g}" if pd.notna(w.get(m + "_p")) else "–"] if has else ["–"] * 4)
            rows.append(cells)
        out += [md_table(head, rows), ""]
    if inv is not None:
        agg, protocol = inv
        augs = list(dict.fromkeys(agg["augmentation"]))
        out += ["### Invariance profile", "",
                "Mean cosine similarity between the features of a test image and of its view, each augmentation "
                "applied alone (mean ± std over seeds). " + md_escape(pretty({k: v for k, v in protocol.items()
                                                                              if k != "pipelines"})) + ".", ""]
        rows = []
        for label, g in agg.groupby("label", sort=False):
            by = g.set_index("augmentation")
            rows.append([md_escape(label)] + [md_escape(fmt(by.at[a, "mean"], by.at[a, "std"], int(by.at[a, "n"])))
                                              if a in by.index else "–" for a in augs])
        out += [md_table(["method"] + [abl.aug_title(a) for a in augs], rows), ""]
    return out


UNCERTAINTY = ("ci_lo", "ci_hi", "ci_method", "tied", "p", "test", "sig_rank")


def board_csv(rep: Report) -> pd.DataFrame:
    """leaderboard.csv: one row per leaderboard row, mean/std/n/rank/best of every metric, its 95%
    interval (ci_lo, ci_hi, ci_method), the tie test against the column's best (tied, p = Holm-
    adjusted, test, sig_rank) and, for suites that carry them, the published value and source number."""
    keep = ["suite", "label", "method", "paradigm", "variant", "n", "runs", "failed", "seeds", "train_s", "views_per_s"]
    cols = keep + [f"{c}_{s}" for c in rep.cols for s in ("mean", "std", "n", "rank", "best") + UNCERTAINTY]
    board = rep.board[[c for c in cols if c in rep.board.columns]].copy()
    entries, sources = published(rep)
    for e in entries:
        for col, v in ((f"{e.metric}_published", e.value), (f"{e.metric}_published_source",
                                                             sources[e.number - 1].source)):
            if col not in board:
                board[col] = pd.Series([None] * len(board), index=board.index, dtype=object)
            board.loc[(board["suite"] == e.suite) & (board["method"] == e.method), col] = v
    return board


def ablation_csv(rep: Report) -> pd.DataFrame | None:
    """ablation.csv: the ablation table (one row per full row, removed augmentation and metric)."""
    return abl.ablation_table(rep)


def invariance_csv(rep: Report) -> pd.DataFrame | None:
    """invariance.csv: the invariance profile (one row per full row and augmentation applied alone)."""
    inv = abl.invariance_table(rep)
    return None if inv is None else inv[0]


def terminal_table(out_dir: Path) -> str:
    """A compact plain-text leaderboard: kNN, kNN k=20, linear; failures listed below."""
    rep = Report(store.load_results(Path(out_dir)), Path(out_dir))
    cols = [c for c in ("knn_top1", "knn20_top1", "linear_top1") if c in rep.cols]
    head = ["method", "paradigm", "n"] + [rep.names[c] for c in cols]
    rows = []
    for _, r in rep.board.iterrows():
        label = _clip(str(r["label"]), 28) + (" *" if any(r[c + "_best"] for c in cols) else "")
        rows.append([label, _clip(str(r["paradigm"]), 15), f"{int(r['n'])}/{int(r['runs'])}"]
                    + [fmt(r[c + "_mean"], r[c + "_std"], int(r[c + "_n"])) + (" ≈" if r[c + "_tied"] is True else "")
                       for c in cols])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    lines += ["  ".join(v.ljust(w) if i < 2 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))) for row in rows]
    if len(rep.suites) > 1:
        lines.insert(0, "suites: " + ", ".join(rep.suites))
    if cols:
        lines.append("(top-1 %, mean ± std over seeds; * = best non-baseline in some column;")
        lines.append(" ≈ = not significantly different from the column's best; 95% intervals: leaderboard.html/.md/.csv)")
    f = rep.failed
    if not f.empty:
        lines.append(f"{len(f)} run(s) failed or diverged:")
        for _, r in f.iterrows():
            lines.append(f"  {_clip(str(r['label']), 28)} seed {r['seed']}: {str(r['status']).upper()} "
                         f"{_clip(str(r['reason'] or 'no reason recorded'), 100)}")
    return "\n".join(lines)


def _clip(s: str, n: int) -> str:
    """One line of at most n characters (an ellipsis marks a cut)."""
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"
