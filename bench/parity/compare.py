"""`bench parity`: train one method through the harness and through its independent reference
loop (bench/parity/reference.py) on the same data, backbone, budget and recipe, evaluate both
encoders with the same kNN code, and tabulate (docs/parity.md).

The evaluation is the suite's kNN (k, T) with the un-augmented eval-train subset as the bank,
scored on the test split; `validation=N` scores on N held-out TRAIN images instead (never seen
by the bank), which is what a recipe default may be chosen on.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

import datasets as ds
from bench import suites
from bench.config import RunSpec, Suite
from bench.engine.data import SuiteData
from bench.engine.execute import build_augment, build_method, device_name
from bench.engine.train import TrainContext, epoch_order, make_views, train
from bench.errors import UserError
from bench.eval.evaluate import extract_features
from bench.eval.knn import knn_top1
from bench.parity import REFERENCE_VIEWS, reference
from methods.autoencoder import LatentDecoder, ResidualUpsampler, UpBlock
from methods.base import Method

TABLE_START, TABLE_END = "<!-- parity-table:start -->", "<!-- parity-table:end -->"


@dataclasses.dataclass(frozen=True)
class Query:
    """Which images the kNN is scored on: the test split, or held-out train images."""
    images: torch.Tensor
    labels: torch.Tensor
    name: str


def queries(suite: Suite, data: SuiteData, data_dir: str | None, download: bool, validation: int) -> Query:
    if not validation:
        return Query(data.main.test.images, data.main.test.labels, f"{suite.dataset} test split")
    full = ds.resize(ds.load(suite.dataset, "train", data_dir, download), suite.image_size)
    bank = set(ds.balanced_subset(full.labels, len(data.main.train) // full.num_classes, seed=0).tolist()) \
        if len(data.main.train) < len(full) else set(range(len(full)))
    rest = torch.tensor(sorted(set(range(len(full))) - bank))
    if len(rest) < validation:
        raise UserError(f"--validation {validation}: only {len(rest)} train images lie outside the kNN bank")
    pick = rest[ds.balanced_subset(full.labels[rest], validation // full.num_classes, seed=1)]
    return Query(full.images[pick], full.labels[pick], f"{len(pick)} held-out {suite.dataset} TRAIN images")


def knn(encoder: Any, data: SuiteData, q: Query, k: int, t: float, device: torch.device) -> float:
    mean, std = data.info.mean, data.info.std
    bank = extract_features(encoder, data.main.train.images, mean, std, device)
    feats = extract_features(encoder, q.images, mean, std, device)
    return knn_top1(bank, data.main.train.labels.to(device), feats, q.labels.to(device), data.info.num_classes, k=k, temperature=t)


def vit_reference_name(name: str) -> str | None:
    """The ViT MAE reference's name (lightly's MAE example layout) for the harness's state entry
    `name`; None where it has no counterpart."""
    if name.startswith("encoder."):
        return None  # the harness's masked encoder shares the backbone's tensors
    for old, new in (("backbone.net.", "backbone.vit."), ("decoder_embed.", "decoder.decoder_embed."),
                     ("decoder.pos_embed", "decoder.decoder_pos_embed"), ("decoder.blocks.", "decoder.decoder_blocks."),
                     ("decoder.norm.", "decoder.decoder_norm."), ("decoder_pred.", "decoder.decoder_pred.")):
        if name.startswith(old):
            return new + name[len(old):]
    return name


def load_harness_weights(state: dict[str, Any], ref: torch.nn.Module) -> None:
    """Load the harness's (initial) `state` into the reference model: by name for the ViT MAE,
    else in registration order (same architecture = same shapes, in the same order). ValueError
    where the two architectures do not match tensor for tensor."""
    h = {k: v for k, v in state.items() if torch.is_tensor(v)}
    r = {k: v for k, v in ref.state_dict().items() if torch.is_tensor(v) and k != "log_scale"}
    if isinstance(ref, reference.MAE):
        pairs = [(k, vit_reference_name(k)) for k in h if vit_reference_name(k) is not None]
        pairs.append(("encoder.mask_token", "backbone.mask_token"))
    elif len(h) != len(r):
        raise ValueError(f"{len(h)} harness tensors vs {len(r)} reference tensors")
    else:
        pairs = list(zip(h, r))
    target = {}
    for hk, rk in pairs:
        if rk not in r:
            raise ValueError(f"harness tensor {hk}: the reference has no {rk}")
        if h[hk].shape != r[rk].shape:
            raise ValueError(f"{hk} {tuple(h[hk].shape)} vs {rk} {tuple(r[rk].shape)}")
        target[rk] = h[hk]
    missing = set(r) - set(target)
    if missing:
        raise ValueError(f"reference tensors with no harness counterpart: {sorted(missing)}")
    ref.load_state_dict(target, strict=False)


def reference_inputs(reference_views: str, harness: Method, aug: Any, initial: dict[str, Any], seed: int,
                     n: int) -> dict[str, Any]:
    """`reference.train`'s diagnostic arguments for a `--reference-views` choice: the harness's
    views (harness, matched); also its batch order and per-epoch seeding of `n` images and its
    `initial` weights (matched)."""
    if reference_views == "pil":
        return {}
    given = {"make_views": lambda xb: make_views(harness, xb, aug)}
    if reference_views == "harness":
        return given
    return {**given, "order": lambda epoch: epoch_order(seed, epoch, n),
            "initialize": lambda model: load_harness_weights(initial, model)}


def decoder_numbers(method: Method) -> dict[str, int]:
    """The decoder sizes the harness resolved for this method (the recipe's auto sizes)."""
    up = next((m for m in method.modules() if isinstance(m, ResidualUpsampler)), None)
    if up is None:
        return {}
    blocks = [b for b in up.stages if isinstance(b, UpBlock)]
    numbers = {"width": up.stem.out_channels, "blocks": len(blocks) // 4, "head_width": up.head[0].out_channels}
    if isinstance(getattr(method, "decoder", None), LatentDecoder):
        return numbers
    return {**numbers, "in_channels": up.stem.in_channels, "in_size": _feature_size(method), "cell": method.patch}


def _feature_size(method: Method) -> int:
    with torch.no_grad():
        was = method.backbone.training
        x = torch.zeros(1, method.data.channels, method.data.size, method.data.size)
        size = method.backbone.eval().net.forward_features(x).shape[-1]
        method.backbone.train(was)
    return size


def recipe_of(run: Any, info: Any, method: Method) -> reference.Recipe:
    return reference.Recipe(
        method=run.method, backbone=run.backbone, in_chans=info.channels, size=info.size, mean=info.mean,
        std=info.std, method_config=run.method_config, optim=run.optim, aug=run.aug, epochs=run.train.epochs,
        batch_size=run.train.batch_size, warmup_epochs=run.train.warmup_epochs, decoder=decoder_numbers(method),
        seed=run.seed, grad_clip=run.train.grad_clip)


def one_seed(suite: Suite, method: str, seed: int, sets: dict, data: SuiteData, q: Query,
             device: torch.device, workers: int, harness_only: bool = False,
             reference_views: str = "pil") -> dict[str, Any]:
    """Harness and reference for one seed: both kNN accuracies and both training times, and the
    kNN of the untrained encoder (what "the method learns" is measured against)."""
    run = suites.resolve(suite, RunSpec(suite.name, method, seed), sets)
    harness = build_method(run, data.info, device)
    recipe = recipe_of(run, data.info, harness)
    try:
        reference.check(recipe)
    except ValueError as e:
        raise UserError(f"parity: {e}") from None
    harness.eval()
    init_acc = knn(harness.encode, data, q, run.eval.knn_k, run.eval.knn_t, device)
    harness.train()
    # the initial weights, which only --reference-views matched hands to the reference loop
    initial = copy.deepcopy(harness.state_dict()) if reference_views == "matched" else {}
    aug = build_augment(run, data.info, device)
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        ctx = TrainContext(run_dir=Path(tmp), device=device, seed=seed, spec_hash=run.spec_hash)
        t0 = time.perf_counter()
        outcome = train(harness, data.images, data.labels, aug, run.train, run.optim, ctx)
        harness_s = time.perf_counter() - t0
    if outcome.status != "ok":
        raise UserError(f"parity: the harness run {outcome.status}: {outcome.reason}")
    harness.eval()
    h_acc = knn(harness.encode, data, q, run.eval.knn_k, run.eval.knn_t, device)

    row = {"seed": seed, "init_knn": init_acc, "harness_knn": h_acc, "harness_train_s": harness_s,
           "variant": harness.variant, "steps": outcome.step}
    if harness_only:
        return {**row, "reference_knn": float("nan"), "difference": float("nan"), "reference_train_s": float("nan")}
    bar = tqdm(total=outcome.step, desc=f"reference {method} s{seed}", unit="step", leave=False, file=sys.stderr)
    def progress(step: int, total: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
    try:
        encoder, reference_s = reference.train(
            recipe, data.pretrain.images, data.pretrain.labels, workers, progress,
            **reference_inputs(reference_views, harness, aug, initial, seed, len(data.pretrain)))
    except FloatingPointError as e:
        raise UserError(f"parity: the reference loop diverged: {e}") from None
    except ValueError as e:  # e.g. --reference-views matched: architectures that do not match
        raise UserError(f"parity: the reference loop ({reference_views} views): {e}") from None
    finally:
        bar.close()
    r_acc = knn(encoder, data, q, run.eval.knn_k, run.eval.knn_t, device)
    return {**row, "reference_knn": r_acc, "difference": h_acc - r_acc, "reference_train_s": reference_s}


def parity(suite: Suite, method: str, seeds: range, sets: dict, data_dir: str | None, download: bool,
           validation: int, workers: int, command: str, harness_only: bool = False,
           reference_views: str = "pil") -> dict[str, Any]:
    """Every seed of one method; the record `bench parity` stores and tabulates."""
    device = torch.device("cpu")
    given, sets = sets, copy.deepcopy(sets)  # the record stores every override as given
    # --set train.* / aug.* / eval.* change the suite itself, so the data subsets follow them too
    suite = dataclasses.replace(suite, **{scope: suites.resolve_scope(suite, scope, sets.pop(scope))
                                          for scope in ("train", "aug", "eval") if scope in sets})
    data = SuiteData(suite, data_dir, download, device)
    q = queries(suite, data, data_dir, download, validation)
    run0 = suites.resolve(suite, RunSpec(suite.name, method, 0), sets)
    rows = []
    for seed in seeds:
        rows.append(one_seed(suite, method, seed, sets, data, q, device, workers, harness_only, reference_views))
        r = rows[-1]
        print(f"  {method} seed {seed}: init {r['init_knn']:.2f}  harness {r['harness_knn']:.2f}  reference "
              f"{r['reference_knn']:.2f}  difference {r['difference']:+.2f}  (train {r['harness_train_s']:.0f}s / "
              f"{r['reference_train_s']:.0f}s)", file=sys.stderr, flush=True)
    from bench.results.store import environment
    return {"method": method, "variant": rows[0]["variant"], "suite": suite.name, "backbone": suite.backbone,
            "dataset": suite.dataset, "images": len(data.pretrain), "epochs": run0.train.epochs,
            "batch_size": run0.train.batch_size, "steps": rows[0]["steps"], "scored_on": q.name,
            "harness_only": harness_only, "reference_views": reference_views, "metric": f"kNN k={run0.eval.knn_k} T={run0.eval.knn_t}, bank: {len(data.main.train)} un-augmented "
                      f"train images", "sets": given, "seeds": rows, "command": command,
            "device": device_name(device), "environment": environment()}


def summary(record: dict[str, Any]) -> dict[str, float]:
    """Means (and the harness/reference seed spread) of one record's seeds."""
    rows = record["seeds"]
    def mean(k: str) -> float:
        return statistics.fmean(r[k] for r in rows)
    def sd(k: str) -> float:
        return statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0
    return {"init": mean("init_knn"), "harness": mean("harness_knn"), "harness_sd": sd("harness_knn"),
            "reference": mean("reference_knn"),
            "reference_sd": sd("reference_knn"), "difference": mean("difference"),
            "harness_s": mean("harness_train_s"), "reference_s": mean("reference_train_s")}


def seeds_of(record: dict[str, Any]) -> str:
    """How many seeds a record holds, and which where they are not 0..N-1."""
    seeds = [r["seed"] for r in record["seeds"]]
    return str(len(seeds)) if seeds == list(range(len(seeds))) else f"{len(seeds)} ({', '.join(map(str, seeds))})"


def table(records: list[dict[str, Any]]) -> str:
    """The parity table in Markdown, one row per stored record."""
    lines = ["| method | variant | budget | scored on | untrained kNN | harness kNN | reference kNN | difference | "
             "seeds | train s (harness / reference) | command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rec in records:
        if rec.get("harness_only"):
            continue
        s = summary(rec)
        budget = (f"{rec['dataset']} {rec['images']} images, `{rec['backbone']}`, {rec['epochs']} epochs "
                  f"x batch {rec['batch_size']} ({rec['steps']} steps)")
        variant = rec["variant"] + REFERENCE_VIEWS[rec.get("reference_views", "pil")][1]
        lines.append(f"| {rec['method']} | {variant} | {budget} | {rec['scored_on']} | {s['init']:.2f} | "
                     f"{s['harness']:.2f} ± {s['harness_sd']:.2f} | {s['reference']:.2f} ± {s['reference_sd']:.2f} | "
                     f"{s['difference']:+.2f} | {seeds_of(rec)} | {s['harness_s']:.0f} / {s['reference_s']:.0f} | "
                     f"`{rec['command']}` |")
    return "\n".join(lines)


def load_records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def write_doc(doc: Path, records: list[dict[str, Any]]) -> None:
    """Replace the table between the markers of `doc` (the hand-written text around it stays)."""
    text = doc.read_text() if doc.exists() else f"# Parity\n\n{TABLE_START}\n{TABLE_END}\n"
    if TABLE_START not in text or TABLE_END not in text:
        raise UserError(f"{doc}: no {TABLE_START} ... {TABLE_END} markers to write the table between")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    doc.write_text(f"{head}{TABLE_START}\n{table(records)}\n{TABLE_END}{tail}")
