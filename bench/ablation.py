"""Augmentation ablation (`bench run --ablate aug`) and the invariance profile (issue #17).

One shared augmentation pipeline makes the suite an instrument for asking which augmentation a
paradigm depends on. Each trained method is retrained with ONE augmentation removed at a time
(crop, flip, colour jitter, grayscale, blur, solarize: those its pipeline uses, i.e. with a
probability > 0 that apply to the data's channel count). The ablated runs are ordinary runs with
an `aug.*` override: cached, resumable, their ids made from their config, stored beside the
suite's normal (full-pipeline) runs. The report recognises them from their configs alone
(`detect`): a run whose config equals a full-pipeline run's except for one augmentation switched off.

The invariance profile: on each full-pipeline run's trained encoder, for each augmentation
applied ALONE (probability 1, everything else off), the mean cosine similarity between the
features of a test image and of its augmented view, over a fixed test subset
(`<run_dir>/invariance.json`).
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from bench.config import AugConfig, RunSpec, Suite
from bench.errors import UserError

KINDS = ("aug",)  # what --ablate accepts
# every augmentation of bench/engine/augment.py, in pipeline order, and the AugConfig fields that switch it off
AUGMENTATIONS = ("crop", "flip", "jitter", "grayscale", "blur", "solarize")
OFF: dict[str, dict[str, float]] = {
    "crop": {"crop_scale_min": 1.0},   # RandomResizedCrop at scale (1, 1): the whole image (kornia, square inputs)
    "flip": {"hflip_p": 0.0},
    "jitter": {"jitter_p": 0.0},
    "grayscale": {"grayscale_p": 0.0},
    "blur": {"blur_p": 0.0},
    "solarize": {"solarize_p": 0.0},
}
TITLES = {"crop": "crop", "flip": "flip", "jitter": "colour jitter", "grayscale": "grayscale", "blur": "blur",
          "solarize": "solarize"}
INVARIANCE = "invariance.json"
INVARIANCE_IMAGES = 1000   # fixed class-balanced test subset (seed 0), as the learning curve's queries
INVARIANCE_SEED = 0        # the views' draws
FULL = "all"               # the invariance profile's last entry: the run's own full pipeline


# ----------------------------------------------------------------------------- which augmentations

def used(cfg: AugConfig, channels: int) -> list[str]:
    """The augmentations `cfg` applies to data with `channels` channels, in pipeline order."""
    on = {
        "crop": cfg.crop_scale_min < 1.0,
        "flip": cfg.hflip_p > 0,
        # saturation and hue mean nothing on one channel (bench/engine/augment.py drops them there)
        "jitter": cfg.jitter_p > 0 and (cfg.brightness > 0 or cfg.contrast > 0
                                        or (channels == 3 and (cfg.saturation > 0 or cfg.hue > 0))),
        "grayscale": cfg.grayscale_p > 0 and channels == 3,
        "blur": cfg.blur_p > 0,
        "solarize": cfg.solarize_p > 0,
    }
    return [a for a in AUGMENTATIONS if on[a]]


def without(cfg: AugConfig, name: str) -> AugConfig:
    """`cfg` with augmentation `name` removed (everything else unchanged)."""
    return replace(cfg, **OFF[name])


def alone(cfg: AugConfig, name: str) -> AugConfig:
    """Only augmentation `name` of `cfg`, applied to every image (crop: at cfg's scale range);
    the invariance profile's pipeline."""
    none = replace(cfg, **{k: v for off in OFF.values() for k, v in off.items()})
    if name == "crop":
        return replace(none, crop_scale_min=cfg.crop_scale_min)
    field = next(iter(OFF[name]))
    return replace(none, **{field: 1.0})


def override(sets: dict[str, dict[str, str]], name: str) -> dict[str, dict[str, str]]:
    """The user's --set overrides plus the one that removes `name` (it wins over an aug.* of the user's)."""
    out = {scope: dict(items) for scope, items in sets.items()}
    out.setdefault("aug", {}).update({k: repr(float(v)) for k, v in OFF[name].items()})
    return out


def describe_override(name: str) -> str:
    return ", ".join(f"aug.{k}={float(v):g}" for k, v in OFF[name].items())


# ----------------------------------------------------------------------------- the runs

@dataclass(frozen=True)
class Plan:
    """The ablated runs of a suite: per removed augmentation, the specs that use it."""
    steps: tuple[tuple[str, tuple[RunSpec, ...]], ...]

    @property
    def specs(self) -> list[RunSpec]:
        return list(dict.fromkeys(s for _, specs in self.steps for s in specs))


def plan(suite: Suite, specs: Sequence[RunSpec], sets: dict[str, dict[str, str]], kind: str,
         sharded: bool = False) -> Plan:
    """What `--ablate KIND` adds to `specs`; UserError (before any training) when nothing can be ablated."""
    import datasets as ds
    import methods
    from bench.suites import resolve
    if kind not in KINDS:
        raise UserError(f"--ablate {kind}: choose one of: {', '.join(KINDS)}")
    if sharded:
        raise UserError("--ablate cannot be combined with --shard; run the ablation in one process (or torchrun)")
    channels = ds.info(suite.dataset).channels
    trained = [s for s in specs if methods.get(s.method).trains]
    if not trained:
        raise UserError("--ablate aug: none of the runs trains (pixels and random-init never see an augmentation); "
                        "choose trained methods with --methods")
    steps = []
    for name in AUGMENTATIONS:
        chosen = tuple(s for s in trained if name in used(resolve(suite, s, sets).aug, channels))
        if chosen:
            steps.append((name, chosen))
    if not steps:
        raise UserError(f"--ablate aug: suite {suite.name}'s pipeline applies no augmentation to remove "
                        f"({resolve(suite, trained[0], sets).aug.describe()})")
    return Plan(tuple(steps))


def run(suite: Suite, the_plan: Plan, opts: Any) -> list:
    """Train every ablated run (after the suite's normal runs), then the invariance profile of
    the full-pipeline runs; returns the ablated runs' records."""
    from bench.engine import runner
    results = []
    for i, (name, specs) in enumerate(the_plan.steps, 1):
        _say(opts, f"ablation [{i}/{len(the_plan.steps)}]: without {TITLES[name]} ({describe_override(name)}): "
                   f"{', '.join(dict.fromkeys(s.method for s in specs))} x {len({s.seed for s in specs})} seed(s)")
        results += runner.run_suite(suite, list(specs), replace(opts, sets=override(opts.sets, name)))
    if opts.rank == 0:
        profile_runs(suite, the_plan.specs, opts)
    return results


# ----------------------------------------------------------------------------- invariance profile

def profile_runs(suite: Suite, specs: Iterable[RunSpec], opts: Any) -> list[Path]:
    """Write invariance.json into every finished full-pipeline run of `specs` that has none
    (nothing is overwritten); returns the files written."""
    import datasets as ds
    from bench.engine.data import fixed_subset
    from bench.engine.execute import pick_device
    from bench.results import store
    from bench.suites import resolve, resolve_scope
    from methods.base import DataInfo
    todo = []
    for spec in specs:
        run_cfg = resolve(suite, spec, opts.sets, world_size=opts.world_size)
        run_dir = Path(opts.out) / "runs" / run_cfg.run_id
        record = store.read_result(run_dir)
        if record is not None and record.ok and not (run_dir / INVARIANCE).exists():
            todo.append((record, run_dir))
    if not todo:
        return []
    device = pick_device(opts.device)
    size = suite.image_size
    test = ds.resize(ds.load(suite.dataset, "test", opts.data_dir, opts.download), size)
    # the evaluation's test split, then a fixed class-balanced subset of it
    test = fixed_subset(fixed_subset(test, resolve_scope(suite, "eval", opts.sets.get("eval", {})).test_subset),
                        INVARIANCE_IMAGES)
    # mean/std as the runs normalized with: the dataset's (ds.load gives every split the train statistics)
    info = DataInfo(test.channels, size, test.num_classes, test.mean, test.std)
    written = []
    for i, (record, run_dir) in enumerate(todo, 1):
        _say(opts, f"invariance profile [{i}/{len(todo)}]: {record.run_id} on {len(test)} test images")
        encode = _trained_encoder(record, run_dir, info, device)
        values = invariance_profile(encode, test.images, record.config.aug, info, device)
        doc = {"values": values, "protocol": protocol(len(test), record.config.aug, info.channels)}
        store.write_json(run_dir / INVARIANCE, doc)
        written.append(run_dir / INVARIANCE)
    return written


def protocol(n: int, cfg: AugConfig, channels: int) -> dict[str, Any]:
    return {"images": n, "subset": f"class-balanced, fixed (seed 0), <= {INVARIANCE_IMAGES} of the eval test split",
            "views": "one view per image; each augmentation ALONE with probability 1 (crop: its scale range), "
                     f"everything else off; '{FULL}' = the run's own pipeline", "seed": INVARIANCE_SEED,
            "similarity": "mean cosine similarity between encode(clean) and encode(view); eval mode, float32",
            "pipelines": {a: alone(cfg, a).describe() for a in used(cfg, channels)} | {FULL: cfg.describe()}}


def _trained_encoder(record: Any, run_dir: Path, info: Any, device: Any):
    from bench.engine.execute import build_method
    from bench.engine.train import CHECKPOINT, load_checkpoint
    method = build_method(record.config, info, device)
    if not (run_dir / CHECKPOINT).is_file():
        raise UserError(f"no {CHECKPOINT} in '{run_dir}': the invariance profile needs the trained encoder")
    method.load_state_dict(load_checkpoint(run_dir / CHECKPOINT, record.spec_hash)["model"])
    method.eval()
    return method.encode


def invariance_profile(encode, images, cfg: AugConfig, info: Any, device: Any,
                       names: Sequence[str] | None = None, batch: int = 256) -> dict[str, float]:
    """Mean cosine similarity between encode(clean image) and encode(its view) for each
    augmentation of `cfg` applied alone (`names`, default: those `cfg` uses) and for the full
    pipeline (FULL). uint8 `images` (N,C,H,W); float32, no autocast, no_grad."""
    import torch
    import torch.nn.functional as F
    from bench.engine.augment import Augment, normalize
    names = list(used(cfg, info.channels) if names is None else names)
    x = images.to(device)

    @torch.no_grad()
    def features(batches: Iterable[torch.Tensor]) -> torch.Tensor:
        with torch.autocast(device.type, enabled=False):
            return torch.cat([encode(b).float() for b in batches])

    clean = features(normalize(c, info.mean, info.std) for c in x.split(batch))
    out = {}
    for name in [*names, FULL]:
        aug = Augment(cfg if name == FULL else alone(cfg, name), info.size, info.channels, info.mean, info.std).to(device)
        # kornia draws from the global RNG: a fixed seed inside a fork leaves the caller's state as it was
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(INVARIANCE_SEED)
            views = features(aug(c) for c in x.split(batch))
        out[name] = float(F.cosine_similarity(clean, views, dim=1).mean())
    return out


def read_invariance(run_dir: Path | None) -> dict[str, Any] | None:
    """A run's invariance.json, or None (none written, or unreadable)."""
    if run_dir is None or not (Path(run_dir) / INVARIANCE).is_file():
        return None
    try:
        doc = json.loads((Path(run_dir) / INVARIANCE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) and isinstance(doc.get("values"), dict) else None


# ----------------------------------------------------------------------------- recognising ablated runs

def detect(configs: Sequence[dict[str, Any]]) -> dict[int, tuple[int, str]]:
    """Which stored runs are ablations: index -> (index of a full-pipeline run of the same row,
    removed augmentation). `configs` are the runs' stored configs (ResolvedRun.to_json()).

    Runs whose configs agree on everything but the seed and `aug` form a group. In a group, a
    pipeline is full when it is not another pipeline of the group with one augmentation
    removed; a run is an ablation when its pipeline is a full one with exactly one removed.
    Everything else (a double removal, a run with no full pipeline beside it) stays an ordinary row.
    """
    def key(cfg: dict[str, Any], *drop: str) -> str:
        return json.dumps({k: v for k, v in cfg.items() if k not in drop}, sort_keys=True, default=str)

    groups: dict[str, dict[str, list[int]]] = {}
    for i, cfg in enumerate(configs):
        if not isinstance(cfg.get("aug"), dict):
            continue
        groups.setdefault(key(cfg, "seed", "aug"), {}).setdefault(json.dumps(cfg["aug"], sort_keys=True), []).append(i)
    out: dict[int, tuple[int, str]] = {}
    for augs in groups.values():
        removal_of: dict[str, list[tuple[str, str]]] = {}  # pipeline -> [(pipeline it removes from, name)]
        for a in augs:
            base = json.loads(a)
            for name in AUGMENTATIONS:
                b = json.dumps({**base, **OFF[name]}, sort_keys=True)
                if b != a and b in augs:
                    removal_of.setdefault(b, []).append((a, name))
        full = [a for a in augs if a not in removal_of]
        for b, parents in removal_of.items():
            parent = next(((a, n) for a, n in parents if a in full), None)
            if parent is None:
                continue
            a, name = parent
            for i in augs[b]:
                seed = configs[i].get("seed")
                same_seed = [j for j in augs[a] if configs[j].get("seed") == seed]
                out[i] = ((same_seed or augs[a])[0], name)
    return out


def _say(opts: Any, msg: str) -> None:
    if getattr(opts, "rank", 0) == 0:
        print(msg, file=sys.stderr, flush=True)
