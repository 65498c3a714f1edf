"""Runs an LSI suite: the generators first (trained once on the train split, cached), their hole
measures and interpolation pictures, then every row x label fraction x seed classifier, each
stored as `<out>/classifiers/<run_id>/result.json`; complete runs are skipped and interrupted
ones resume from their checkpoint (the harness's training loop). Then the leaderboard.

Layout of a results directory:

    <out>/lsi.json                           suite, generators (cost, cache key), hole measures
    <out>/generators/<kind>-<key>/           checkpoint.pt, train_log.csv, generator.json, holes.json
    <out>/classifiers/<run_id>/result.json   one classifier run (row, label fraction, seed)
    <out>/interp-<kind>.png                  decoded interpolations between two classes
    <out>/leaderboard.html, .md, .csv

The directory names `generators/` and `classifiers/` keep LSI results apart from SSL runs
(`runs/`), so `bench report` and `bench check` of an SSL suite never read them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bench import backbones
from bench.config import OptimConfig
from bench.engine.augment import Augment
from bench.engine.execute import device_name, pick_device
from bench.engine.train import TrainContext, TrainFailed, train
from bench.errors import UserError
from bench.lsi import holes
from bench.lsi.classifier import Classifier, RowConfig, row_config, top1
from bench.eval.evaluate import label_subset
from bench.lsi.data import LSIData, fraction_name
from bench.lsi.generators import Trained, prepare
from bench.lsi.suites import ROW_GENERATOR, LSISuite
from bench.results import store

FORMAT = "ssl-bench-lsi-run"
SCHEMA_VERSION = 1                 # of an LSI run's result.json and of its hashed config
SUMMARY = "lsi.json"
CLASSIFIERS = "classifiers"
RESULT = "result.json"


@dataclass
class LSIOptions:
    """What the user chose on the command line, beyond the suite."""
    out: Path
    seeds: int = 3                 # seeds 0..N-1 of every row x label fraction
    epochs: int | None = None      # override the classifier's epochs (the generators keep theirs)
    data_dir: str | None = None
    device: str = "auto"
    download: bool = True


def classifier_epochs(suite: LSISuite, opts: LSIOptions) -> int:
    return opts.epochs or suite.train.epochs


def classifier_optim(suite: LSISuite) -> OptimConfig:
    """The classifiers' optimizer: the supervised baseline's recipe, or the suite's own lr at its batch size."""
    if suite.classifier_lr:
        return replace(Classifier.optim, lr=suite.classifier_lr, lr_batch_size=suite.train.batch_size)
    return Classifier.optim


def run_config(suite: LSISuite, rc: RowConfig, fraction: float, seed: int, epochs: int) -> dict[str, Any]:
    """Everything that determines one classifier run's result (its hash names the run)."""
    return {"schema_version": SCHEMA_VERSION, "suite": suite.name, "dataset": suite.dataset,
            "backbone": suite.backbone, "image_size": suite.image_size, "train_subset": suite.train_subset,
            "train": dataclasses.asdict(replace(suite.train, epochs=epochs)), "aug": dataclasses.asdict(suite.aug),
            "optim": dataclasses.asdict(classifier_optim(suite)), "row": dataclasses.asdict(rc), "fraction": fraction,
            "min_per_class": suite.lsi.min_per_class, "seed": seed}


def run_key(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()


def run_id(cfg: dict[str, Any]) -> str:
    return f"{cfg['row']['row']}-{fraction_name(cfg['fraction'])}-s{cfg['seed']}-{run_key(cfg)[:10]}"


def read_run(run_dir: Path) -> dict[str, Any] | None:
    """A classifier run's record, None if there is none; UserError if it is not one."""
    path = run_dir / RESULT
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path} cannot be read ({type(e).__name__}); move it aside to re-run that run") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("schema_version") != SCHEMA_VERSION:
        raise UserError(f"{path} is not an LSI run of this ssl-bench version (format {FORMAT} "
                        f"v{SCHEMA_VERSION}); use a new --out directory")
    return data


def load_runs(out: Path) -> list[dict[str, Any]]:
    """Every classifier record below `out`, sorted by run id."""
    out = Path(out)
    if not out.is_dir():
        raise UserError(f"results directory '{out}' does not exist")
    runs = [r for p in sorted(out.glob(f"{CLASSIFIERS}/*/{RESULT}")) if (r := read_run(p.parent)) is not None]
    if not runs:
        raise UserError(f"no LSI runs in '{out}' (looked for {out}/{CLASSIFIERS}/*/{RESULT}); "
                        "run `python -m bench run --suite lsi-...` first")
    return runs


def current_runs(out: Path) -> list[dict[str, Any]]:
    """The runs of the last `bench run` into `out` (its plan is in lsi.json): a re-run with another
    budget leaves the older runs on disk, untouched, but they are not reported or published."""
    runs = load_runs(out)
    plan = read_summary(out).get("runs")
    if plan is None:
        return runs
    keep = [r for r in runs if r["run_id"] in set(plan)]
    if not keep:
        raise UserError(f"none of the runs that {Path(out) / SUMMARY} lists is in '{out}'; re-run the suite")
    return keep


def read_summary(out: Path) -> dict[str, Any]:
    path = Path(out) / SUMMARY
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"'{out}' has no {SUMMARY}; it is not an LSI results directory") from None
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path} cannot be read ({type(e).__name__}); re-run the suite into a new --out") from None


def _check_out(out: Path, suite: LSISuite) -> None:
    """The results directory must be writable and hold no other suite's LSI results."""
    summary = out / SUMMARY
    if summary.exists():
        try:
            other = json.loads(summary.read_text()).get("suite")
        except (OSError, json.JSONDecodeError):
            other = None
        if other != suite.name:
            raise UserError(f"--out '{out}' holds the results of LSI suite {other!r}, not {suite.name!r}; "
                            "choose another directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(f"output directory '{out}' is not writable ({e.strerror}); choose another with --out") from None


def run_lsi_suite(suite: LSISuite, opts: LSIOptions) -> list[dict[str, Any]]:
    """Generators, hole measures, pictures, then every classifier run; returns their records."""
    device = pick_device(opts.device)
    backbones.get(suite.backbone)  # an unknown name fails before any work
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    t0 = time.perf_counter()
    data = LSIData(suite, opts.data_dir, opts.download, device)  # a missing dataset stops here
    out = Path(opts.out)
    _check_out(out, suite)
    _say(f"{suite.name}: {len(data.train)} train / {len(data.test)} test images, {suite.image_size}px, "
         f"{suite.backbone}, on {device_name(device)}")

    generators: dict[str, Trained] = {}
    for kind in suite.generators:
        generators[kind] = prepare(suite, kind, data, out, device)
    summary = {"format": "ssl-bench-lsi-summary", "suite": suite.name, "generators": {}, "holes": {}, "grids": {}}
    for kind, g in generators.items():
        summary["generators"][kind] = _generator_summary(g)
        if not g.ok:
            continue
        summary["holes"][kind] = _holes(suite, g, data, device)
        png = holes.interpolation_grid(g.codec, data.train.images, data.train.labels, data.info.mean, data.info.std,
                                       suite.lsi.grid_classes, suite.lsi.grid_pairs, suite.lsi.grid_steps, device,
                                       out / f"interp-{kind}.png", scale=max(1, 32 // suite.image_size))
        summary["grids"][kind] = png.name
    summary["class_names"] = list(data.train.classes)
    summary["prepare_s"] = time.perf_counter() - t0

    epochs = classifier_epochs(suite, opts)
    plan = [(f, row, seed) for f in suite.lsi.label_fractions for row in suite.rows for seed in range(opts.seeds)]
    configs = []
    for fraction, row, seed in plan:
        gen = generators.get(ROW_GENERATOR[row] or "")
        rc = row_config(row, suite.lsi.ratio, suite.lsi.lam, suite.lsi.mixup_alpha, gen.key if gen else "")
        configs.append((gen, rc, run_config(suite, rc, fraction, seed, epochs)))
    summary["runs"] = [run_id(cfg) for _, _, cfg in configs]
    summary["seeds"], summary["epochs"] = opts.seeds, epochs
    store.write_json(out / SUMMARY, summary)
    records = []
    for k, (gen, rc, cfg) in enumerate(configs, 1):
        rid = run_id(cfg)
        run_dir = out / CLASSIFIERS / rid
        tag = f"[{k}/{len(plan)}] {rid}"
        existing = read_run(run_dir)
        if existing is not None and existing["status"] == "ok" and existing.get("key") == run_key(cfg):
            _say(f"{tag}: complete, skipped")
            records.append(existing)
            continue
        if existing is not None:  # keep the failed attempt's record; never overwrite silently
            store.keep_aside(run_dir / RESULT)
        if gen is not None and not gen.ok:
            record = _header(cfg, rid) | {"status": "failed", "reason": f"generator {gen.kind} did not train: "
                                                                           f"{gen.record.get('reason')}"}
        else:
            record = _classify(suite, cfg, rc, run_dir, data, gen, device)
        record.update(store.environment())
        store.write_json(run_dir / RESULT, record)
        _say(f"{tag}: " + (f"ok  test top-1 {record['metrics']['top1']:.2f}  ({record['timings']['train_s']:.1f}s "
                           f"train, {record['labels']['n_labels']} labels)" if record["status"] == "ok"
                           else f"{record['status'].upper()}: {record['reason']}"))
        records.append(record)
    return records


def _header(cfg: dict[str, Any], rid: str) -> dict[str, Any]:
    return {"format": FORMAT, "schema_version": SCHEMA_VERSION, "run_id": rid, "key": run_key(cfg),
            "suite": cfg["suite"], "row": cfg["row"]["row"], "fraction": cfg["fraction"], "seed": cfg["seed"],
            "config": cfg, "status": "ok", "reason": None, "metrics": {}}


def _classify(suite: LSISuite, cfg: dict[str, Any], rc: RowConfig, run_dir: Path, data: LSIData,
              gen: Trained | None, device: torch.device) -> dict[str, Any]:
    """Train one row's classifier at one label fraction and seed, then score it on the test split."""
    record = _header(cfg, run_dir.name)
    seed, fraction = cfg["seed"], cfg["fraction"]
    try:
        torch.manual_seed(seed)  # the seed fixes the initialisation (as bench.engine.execute.build_method)
        backbone = backbones.get(suite.backbone).build(data.info.channels, data.info.size)
        model = Classifier(rc, backbone, data.info, gen.codec if gen is not None else None).to(device)
        idx = label_subset(data.train.labels, fraction, seed, min_per_class=suite.lsi.min_per_class)
        counts = torch.bincount(data.train.labels[idx], minlength=data.info.num_classes)
        # the same budget at every fraction: the labelled subset is tiled to the train split's size,
        # so every run takes the same steps of the same batch size (each epoch a fresh order)
        tiled = idx[torch.arange(len(data.train)) % len(idx)].to(device)
        images, labels = data.train_images[tiled], data.train_labels[tiled]
        aug = Augment(suite.aug, data.info.size, data.info.channels, data.info.mean, data.info.std).to(device)
        train_cfg = replace(suite.train, epochs=cfg["train"]["epochs"])
        run_dir.mkdir(parents=True, exist_ok=True)
        ctx = TrainContext(run_dir=run_dir, device=device, seed=seed, spec_hash=record["key"])
        outcome = train(model, images, labels, aug, train_cfg, classifier_optim(suite), ctx)
        record["train"] = dataclasses.asdict(outcome)
        record["labels"] = {"n_labels": len(idx), "per_class_min": int(counts.min()),
                            "per_class_max": int(counts.max()), "images_per_epoch": len(tiled)}
        record["status"], record["reason"] = outcome.status, outcome.reason
        if outcome.status != "ok":
            return record
        t1 = time.perf_counter()
        acc = top1(model, data.test.images, data.test.labels, data.info.mean, data.info.std, device)
        record["metrics"] = {"top1": acc}
        record["n_test"] = len(data.test)
        record["timings"] = {"train_s": outcome.train_s, "eval_s": time.perf_counter() - t1,
                             "device": device_name(device)}
        if gen is not None:
            record["generator"] = {"kind": gen.kind, "key": gen.key, "train_s": gen.record.get("train_s")}
        return record
    except UserError:
        raise
    except Exception as e:  # one bad run must not take the suite down: record and go on
        cause = e.__cause__ if isinstance(e, TrainFailed) and e.__cause__ is not None else e
        record.update({"status": "failed", "reason": f"{type(cause).__name__}: {cause}".splitlines()[0][:500],
                       "traceback": traceback.format_exc()[-4000:]})
        return record


def _holes(suite: LSISuite, g: Trained, data: LSIData, device: torch.device) -> dict[str, Any]:
    """The generator's hole measures, cached beside its checkpoint (they depend on it alone)."""
    path = g.directory / "holes.json"
    if path.exists():
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == g.key and cached.get("pairs_requested") == suite.lsi.hole_pairs:
                return cached["measures"]
        except (OSError, json.JSONDecodeError, AttributeError):
            pass
    t = time.perf_counter()
    m = holes.measure(g.codec, data.train.images, data.train.labels, data.info.mean, data.info.std,
                      suite.lsi.hole_pairs, device)
    m["measure_s"] = time.perf_counter() - t
    store.write_json(path, {"key": g.key, "pairs_requested": suite.lsi.hole_pairs, "measures": m})
    return m


def _generator_summary(g: Trained) -> dict[str, Any]:
    r = g.record
    return {"kind": g.kind, "key": g.key, "directory": g.directory.name, "status": r.get("status"),
            "reason": r.get("reason"), "cached": bool(r.get("cached")), "train_s": r.get("train_s"),
            "steps": r.get("steps"), "epochs": r.get("epochs"), "train_images": r.get("train_images"),
            "device": r.get("device"), "final_losses": r.get("final_losses", {}),
            "method": r.get("config", {}).get("method"), "method_config": r.get("config", {}).get("method_config")}


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
