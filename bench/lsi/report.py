"""The LSI leaderboard: rows x label fractions, test top-1 mean ± std over seeds, the
generators' training cost, the hole measures and the interpolation pictures.

`write_report(out)` reads `<out>/classifiers/*/result.json` and `<out>/lsi.json` and writes
`leaderboard.html` (ONE self-contained file: the harness's stylesheet inlined, pictures as
base64 data URIs, a Content-Security-Policy that forbids network requests; every string that
came from a config or a user is escaped by jinja2's autoescape), `leaderboard.md` and
`leaderboard.csv` beside it.
"""
from __future__ import annotations

import base64
import datetime as _dt
import math
import os
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd
from markupsafe import Markup

from bench.config import AugConfig
from bench.lsi.data import fraction_name
from bench.lsi.runner import current_runs, read_summary
from bench.lsi.suites import ROW_TITLES, ROWS

TEMPLATES = Path(__file__).resolve().parent / "templates"
HARNESS_CSS = Path(__file__).resolve().parents[1] / "report" / "templates" / "leaderboard.css"

# hole measures in the order the tables show them: key, heading, format
HOLE_COLUMNS = [
    ("prior", "prior", "{}"),
    ("prior_inside", "midpoints in prior support", "{:.3f}"),
    ("logp_end", "log p(z)/d, codes", "{:.3f}"),
    ("logp_mid", "log p(z)/d, midpoints", "{:.3f}"),
    ("radius_end", "‖z‖/√d, codes", "{:.3f}"),
    ("radius_mid", "‖z‖/√d, midpoints", "{:.3f}"),
    ("disc_enc", "D(codes)", "{:.3f}"),
    ("disc_mid", "D(interpolated)", "{:.3f}"),
    ("critic_acc", "critic acc. (%)", "{:.1f}"),
    ("nn_rec", "NN dist., reconstructions", "{:.3f}"),
    ("nn_mid", "NN dist., midpoints", "{:.3f}"),
    ("nn_ratio", "NN ratio mid/rec", "{:.3f}"),
]


def runs_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per classifier run."""
    rows = []
    for r in runs:
        rows.append({"row": r["row"], "fraction": float(r["fraction"]), "seed": int(r["seed"]),
                     "status": r["status"], "reason": r.get("reason"), "run_id": r["run_id"],
                     "top1": r.get("metrics", {}).get("top1", math.nan),
                     "n_labels": (r.get("labels") or {}).get("n_labels"),
                     "per_class_min": (r.get("labels") or {}).get("per_class_min"),
                     "train_s": (r.get("timings") or {}).get("train_s", math.nan),
                     "device": (r.get("timings") or {}).get("device")})
    return pd.DataFrame(rows)


def board(df: pd.DataFrame) -> pd.DataFrame:
    """mean, sample std and n of test top-1 over the ok seeds, per (row, fraction)."""
    ok = df[df["status"] == "ok"]
    g = ok.groupby(["row", "fraction"])["top1"]
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()}).reset_index()
    labels = ok.groupby(["row", "fraction"])["n_labels"].first().reset_index()
    return out.merge(labels, on=["row", "fraction"], how="left")


def fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or not math.isfinite(mean):
        return "–"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 and math.isfinite(std) else f"{mean:.2f}"


def _order(rows: list[str]) -> list[str]:
    return sorted(rows, key=lambda r: (ROWS.index(r) if r in ROWS else len(ROWS), r))


class LSIReport:
    """Everything the page and the Markdown show, as plain values."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.runs = current_runs(self.out)
        self.summary = read_summary(self.out)
        self.df = runs_frame(self.runs)
        self.board = board(self.df)
        self.rows = _order(sorted(set(self.df["row"])))
        self.fractions = sorted(set(self.df["fraction"]), reverse=True)
        self.suite = self.summary.get("suite", "?")
        self.cfg = self.runs[0]["config"]

    def cell(self, row: str, fraction: float) -> dict[str, Any]:
        b = self.board[(self.board["row"] == row) & (self.board["fraction"] == fraction)]
        if b.empty:
            return {"text": "–", "best": False, "delta": ""}
        mean, std, n = float(b["mean"].iloc[0]), float(b["std"].iloc[0]), int(b["n"].iloc[0])
        col = self.board[self.board["fraction"] == fraction]
        best = bool(mean >= col["mean"].max() - 1e-9)
        std_row = self.board[(self.board["row"] == "standard") & (self.board["fraction"] == fraction)]
        delta = ""
        if row not in ("standard", "none") and not std_row.empty:
            delta = f"{mean - float(std_row['mean'].iloc[0]):+.2f}"
        return {"text": fmt(mean, std, n), "best": best, "delta": delta, "n": n}

    def labels_of(self, fraction: float) -> str:
        b = self.df[(self.df["fraction"] == fraction) & (self.df["status"] == "ok")]
        if b.empty:
            return "?"
        n = sorted(set(int(x) for x in b["n_labels"].dropna()))
        pmin = sorted(set(int(x) for x in b["per_class_min"].dropna()))
        return f"{'/'.join(map(str, n))} labels (≥ {min(pmin) if pmin else '?'} per class)"

    def leaderboard(self) -> list[dict[str, Any]]:
        return [{"row": r, "title": ROW_TITLES.get(r, r), "cells": [self.cell(r, f) for f in self.fractions]}
                for r in self.rows]

    def failed(self) -> list[dict[str, Any]]:
        bad = self.df[self.df["status"] != "ok"]
        return [{"run_id": x.run_id, "row": x.row, "fraction": x.fraction, "seed": x.seed, "status": x.status,
                 "reason": x.reason} for x in bad.itertuples()]

    def generators(self) -> list[dict[str, Any]]:
        out = []
        for kind, g in self.summary.get("generators", {}).items():
            losses = ", ".join(f"{k} {v:.3g}" for k, v in (g.get("final_losses") or {}).items())
            cfg = g.get("method_config") or {}
            out.append({"kind": kind, "method": g.get("method"), "status": g.get("status"),
                        "train_s": "–" if g.get("train_s") is None else f"{g['train_s']:.1f}",
                        "steps": g.get("steps"), "epochs": g.get("epochs"), "images": g.get("train_images"),
                        "latent": cfg.get("latent_dim") if "kl_coeff" not in cfg else
                        f"{cfg.get('latent_dim')} (KL weight {cfg['kl_coeff']:g})", "cached": "yes" if g.get("cached") else "no (trained now)",
                        "losses": losses, "key": (g.get("key") or "")[:10], "device": g.get("device"),
                        "reason": g.get("reason")})
        return out

    def holes(self) -> list[dict[str, Any]]:
        out = []
        for kind, m in self.summary.get("holes", {}).items():
            cells = [spec.format(m[k]) if k in m and m[k] is not None else "–" for k, _, spec in HOLE_COLUMNS]
            out.append({"kind": kind, "cells": cells})
        return out

    def grids(self) -> list[dict[str, Any]]:
        out = []
        names = self.summary.get("class_names") or []
        for kind, name in self.summary.get("grids", {}).items():
            path = self.out / name
            png = base64.b64encode(path.read_bytes()).decode("ascii") if path.exists() else None
            out.append({"kind": kind, "file": name, "png": png})
        a, b = self.grid_classes()
        self.grid_names = (names[a] if a < len(names) else str(a), names[b] if b < len(names) else str(b))
        return out

    def grid_classes(self) -> tuple[int, int]:
        from bench.lsi.suites import LSI_SUITES
        if self.suite in LSI_SUITES:
            return LSI_SUITES.get(self.suite).lsi.grid_classes
        return (0, 1)

    def protocol(self) -> list[tuple[str, str]]:
        c = self.cfg
        t = c["train"]
        aug = AugConfig(**c["aug"]).describe()
        lsi_rows = [r for r in self.runs if r["config"]["row"]["mixing"] == "lsi"]
        lsi = lsi_rows[0]["config"]["row"] if lsi_rows else {}
        mix = [r for r in self.runs if r["config"]["row"]["mixing"] == "mixup"]
        alpha = mix[0]["config"]["row"]["mixup_alpha"] if mix else None
        o = c["optim"]
        first = self.runs[0]
        steps = (first.get("train") or {}).get("step")
        gens = self.summary.get("generators", {})
        g0 = next(iter(gens.values()), {})
        n_test = next((r.get("n_test") for r in self.runs if r.get("n_test")), "?")
        pairs = next((m.get("pairs") for m in self.summary.get("holes", {}).values() if m.get("pairs")), "?")
        return [
            ("Data", f"{c['dataset']} at {c['image_size']}px; train split = "
                     + (f"a fixed class-balanced {c['train_subset']}-image subset (seed 0)" if c["train_subset"]
                        else "the whole train split") + f"; test = the full test split ({n_test} images), used "
                     "once per classifier for the final top-1 and never otherwise"),
            ("Classifier", f"{c['backbone']} + linear head; {o['name'].upper()} lr {o['lr']} @ {o['lr_batch_size']} "
                           f"(scaled to the batch), momentum {o['momentum']}, wd {o['weight_decay']} on weights, "
                           f"{t['warmup_epochs']} warmup epoch(s) then {o['schedule']}; {t['epochs']} epochs of batch "
                           f"{t['batch_size']} ({steps} steps) at every label fraction (the labelled subset is tiled to "
                           "the train split's size); final checkpoint, eval mode, un-augmented test images"),
            ("Label fractions", "; ".join(f"{fraction_name(f)}: {self.labels_of(f)}" for f in self.fractions)
                                + " — class-balanced (datasets.balanced_subset), seeded by the run seed"),
            ("Standard augmentation", aug + " — applied to every real image, also before any mixing"),
            ("Pixel mixup", f"Zhang et al. 2018: one λ ~ Beta({alpha}, {alpha}) per batch, random pairs from a shuffle "
                            "of the batch, the mixed batch replaces the real one; soft labels" if alpha is not None
                            else "not run"),
            ("LSI", (f"each batch = B real + {lsi.get('ratio')}·B generated; inter-class pairs from a shuffled "
                     "permutation of the batch (same-class partners re-drawn among the batch's other classes); "
                     f"λ {'~ U(0, 1) per pair' if lsi.get('lam') == 'uniform' else '= 0.5'}; z = λ·z_i + (1−λ)·z_j "
                     "decoded; label λ·onehot(y_i) + (1−λ)·onehot(y_j); soft-target cross-entropy over all "
                     "images of the batch") if lsi else "not run"),
            ("Generators", (f"trained first, once, on the {g0.get('train_images')} train images without their labels "
                            f"(seed 0, {g0.get('epochs')} epochs), cached by the hash of their full config and the "
                            "train images; reused by every row, seed and re-run") if gens else "none"),
            ("Seeds", "seeds 0..N-1 per row and fraction: initialisation, data order, augmentation and mixing draws, "
                      "label subset; the generators are fixed (seed 0), so the std excludes generator variance"),
            ("Hole measures", f"on {pairs} fixed inter-class pairs of train images (see docs/protocols.md §6): prior "
                              "density and radius of codes vs midpoints, the AAE discriminator on codes vs "
                              "interpolated codes, a two-sample critic (logistic regression on [z, z²], 2-fold; "
                              "above 50% even without holes: interpolation shrinks the spread under any prior), and the distance of decoded midpoints / reconstructions to the "
                              "nearest other train image"),
        ]

    def environment(self) -> list[tuple[str, str]]:
        r = self.runs[0]
        devices = sorted({str(x) for x in self.df["device"].dropna()})
        commits = sorted({str(x.get("git_commit")) for x in self.runs})
        return [("Device", ", ".join(devices) or "–"), ("Git commit", ", ".join(commits)),
                ("Python", str(r.get("python"))),
                ("Packages", ", ".join(f"{k} {v}" for k, v in (r.get("packages") or {}).items())),
                ("Machine", str(r.get("machine"))),
                ("Results read from", f"{self.out} ({len(self.runs)} classifier runs)")]


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(rep: LSIReport) -> str:
    grids = rep.grids()
    n_ok = int((rep.df["status"] == "ok").sum())
    ctx = {"title": f"ssl-bench LSI leaderboard: {rep.suite}", "suite": rep.suite,
           "fractions": [fraction_name(f) for f in rep.fractions],
           "fraction_labels": [rep.labels_of(f) for f in rep.fractions],
           "leaderboard": rep.leaderboard(), "failed": rep.failed(), "generators": rep.generators(),
           "hole_head": [h for _, h, _ in HOLE_COLUMNS], "holes": rep.holes(), "grids": grids,
           "grid_names": rep.grid_names, "protocol": rep.protocol(), "environment": rep.environment(),
           "runs": len(rep.df), "ok": n_ok, "bad": len(rep.df) - n_ok,
           "when": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "css": Markup(HARNESS_CSS.read_text(encoding="utf-8"))}
    return _environment().get_template("lsi.html.j2").render(ctx)


def md_escape(v: Any) -> str:
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(md_escape, head)) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(map(md_escape, r)) + " |" for r in rows]
    return "\n".join(lines)


def render_markdown(rep: LSIReport) -> str:
    grids = rep.grids()
    parts = [f"# ssl-bench LSI leaderboard: {rep.suite}", "",
             "Test top-1 (%) of the suite's classifier trained with each augmentation, mean ± sample std over "
             "seeds (n in the HTML); Δ = difference of the mean to `standard` at the same label fraction.", ""]
    head = ["row"] + [f"{fraction_name(f)} ({rep.labels_of(f)})" for f in rep.fractions]
    rows = []
    for r in rep.leaderboard():
        cells = [f"**{c['text']}**" if c["best"] else c["text"] for c in r["cells"]]
        cells = [c + (f" (Δ {x['delta']})" if x["delta"] else "") for c, x in zip(cells, r["cells"])]
        rows.append([f"{r['row']}: {r['title']}"] + cells)
    parts += [md_table(head, rows), ""]
    if rep.failed():
        parts += ["## Failed runs", "", md_table(["run", "status", "reason"],
                                                [[f["run_id"], f["status"], str(f["reason"])] for f in rep.failed()]), ""]
    parts += ["## Generators (trained once on the train split, no labels; cached)", "",
              md_table(["generator", "method", "status", "train (s)", "steps", "epochs", "latent", "cached",
                        "last losses"],
                       [[g["kind"], str(g["method"]), str(g["status"]), g["train_s"], str(g["steps"]),
                         str(g["epochs"]), str(g["latent"]), g["cached"], g["losses"]] for g in rep.generators()]), ""]
    parts += ["## Holes along interpolation paths", "",
              md_table(["generator"] + [h for _, h, _ in HOLE_COLUMNS], [[h["kind"]] + h["cells"] for h in rep.holes()]),
              ""]
    parts += [f"## Decoded interpolations ({rep.grid_names[0]} → {rep.grid_names[1]})", ""]
    parts += [f"{g['kind']}: ![{g['kind']}]({g['file']})  " for g in grids] + [""]
    parts += ["## Protocol", ""] + [f"- **{k}**: {v}" for k, v in rep.protocol()] + [""]
    parts += ["## Environment", ""] + [f"- **{k}**: {v}" for k, v in rep.environment()] + [""]
    return "\n".join(parts)


def board_csv(rep: LSIReport) -> pd.DataFrame:
    b = rep.board.copy()
    b["label_fraction"] = b["fraction"].map(fraction_name)
    b["title"] = b["row"].map(lambda r: ROW_TITLES.get(r, r))
    b["row_order"] = b["row"].map(lambda r: ROWS.index(r) if r in ROWS else len(ROWS))
    b = b.sort_values(["fraction", "row_order"], ascending=[False, True])
    return b[["row", "title", "label_fraction", "fraction", "n_labels", "mean", "std", "n"]].rename(
        columns={"mean": "top1_mean", "std": "top1_std"})


def terminal_table(rep: LSIReport) -> str:
    head = ["row"] + [fraction_name(f) for f in rep.fractions]
    rows = [[r["row"]] + [c["text"] for c in r["cells"]] for r in rep.leaderboard()]
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(x, widths)))
             for x in [head] + rows]
    gens = [f"  {g['kind']}: {g['train_s']} s training ({g['cached']})" for g in rep.generators()]
    return "\n".join([f"{rep.suite}: test top-1 (%), mean ± std over seeds", *lines, "generators:", *gens])


def write_report(out: Path, dest: Path | None = None) -> Path:
    """leaderboard.html (+ .md, .csv) for the LSI results in `out`; returns the HTML path. With
    `dest` elsewhere the pictures are copied beside it, so the Markdown's links hold there too."""
    rep = LSIReport(Path(out))
    dest = Path(dest) if dest else rep.out / "leaderboard.html"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.parent.resolve() != rep.out.resolve():
        for name in rep.summary.get("grids", {}).values():
            if (rep.out / name).exists():
                _write_bytes(dest.parent / name, (rep.out / name).read_bytes())
    _write(dest.parent / "leaderboard.csv", board_csv(rep).to_csv(index=False))
    _write(dest.parent / "leaderboard.md", render_markdown(rep))
    _write(dest, render_html(rep))
    return dest


def _write(path: Path, text: str) -> None:
    _write_bytes(path, text.encode("utf-8"))


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
