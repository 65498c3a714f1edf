"""The report as text: Markdown (leaderboard.md), CSV (leaderboard.csv) and the terminal table.

Markdown cells are escaped with `md_escape` (pipes, backslashes, and `<`/`>` as entities, so a
method name cannot inject HTML into a rendered leaderboard.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from bench.results import store

from .frame import Report, cost_frame, fmt, fmt_num, protocol_rows, variant_suffix


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


def board_csv(rep: Report) -> pd.DataFrame:
    """leaderboard.csv: one row per leaderboard row, mean/std/n/rank/best of every metric."""
    keep = ["suite", "label", "method", "paradigm", "variant", "n", "runs", "failed", "seeds", "train_s", "views_per_s"]
    cols = keep + [f"{c}_{s}" for c in rep.cols for s in ("mean", "std", "n", "rank", "best")]
    return rep.board[[c for c in cols if c in rep.board.columns]]


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
    """One line of at most n characters (an ellipsis marks a cut)."""
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"
