"""Every config type of a run, and checked `--set key=value` overrides.

Every knob is a field of a frozen dataclass with its recipe default: the suite's training
budget (TrainConfig), augmentation (AugConfig) and evaluation protocol (EvalConfig), a method's
optimizer recipe (OptimConfig; the method's own Config lives with the method). A Suite bundles
them; `bench.suites.resolve` turns (suite, RunSpec, --set overrides) into ONE frozen
ResolvedRun, which every consumer uses and whose hash is the run id. Nothing here imports the
methods: they import this module. Overrides are parsed against the field's declared
type: an unknown key or a value of the wrong type is a UserError (exit code 2), never a silent
string.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from bench.errors import UserError
from bench.eval import probe

ALL_METHODS = ("vae", "aasae", "aae", "simclr", "byol", "vicreg", "mae")
ALL_BASELINES = ("pixels", "random-init", "supervised")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 200
    batch_size: int = 256
    warmup_epochs: int = 10        # linear warmup, then the method's schedule (cosine/constant)
    train_subset: int = 0          # pretrain on a fixed class-balanced subset of this size (0 = all)
    amp: bool = True               # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True     # CUDA only
    compile: bool = False          # torch.compile the method (CUDA)
    grad_clip: float = 0.0         # max grad norm (0 = off)
    sync_bn: bool = False          # SyncBatchNorm under torchrun


@dataclass(frozen=True)
class AugConfig:
    """The suite's ONE augmentation pipeline (bench/engine/augment.py); defaults: the CIFAR recipe."""
    crop_scale_min: float = 0.08   # RandomResizedCrop scale range (min, 1.0)
    hflip_p: float = 0.5           # horizontal flip probability
    jitter_p: float = 0.8          # probability of colour jitter
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4        # ignored for 1-channel data (no colour)
    hue: float = 0.1               # ignored for 1-channel data
    grayscale_p: float = 0.2       # ignored for 1-channel data (already gray)
    blur_p: float = 0.0            # no blur at 32px (SimCLR CIFAR recipe)
    solarize_p: float = 0.0

    def describe(self) -> str:
        return (f"RandomResizedCrop(scale={self.crop_scale_min}-1), HFlip(p={self.hflip_p}), "
                f"ColorJitter({self.brightness},{self.contrast},{self.saturation},{self.hue}, p={self.jitter_p}), "
                f"Grayscale(p={self.grayscale_p}), Blur(p={self.blur_p}), Solarize(p={self.solarize_p})")


@dataclass(frozen=True)
class EvalConfig:
    train_subset: int = 0          # kNN bank / probe train set: fixed class-balanced subset (0 = all)
    test_subset: int = 0           # 0 = the full test split
    knn_k: int = 200               # InstDisc / lightly protocol
    knn_t: float = 0.1
    knn_k_small: int = 20          # second reported setting
    knn_t_small: float = 0.07
    probe_val_fraction: float = 0.2  # held-out part of TRAIN used to choose the L2 strength
    # L2 strength on the MEAN cross-entropy of standardized features: log10 range and points
    # of the grid (bench.eval.probe.l2_grid, where the default and its reasons are defined)
    probe_grid_min: float = probe.GRID_MIN
    probe_grid_max: float = probe.GRID_MAX
    probe_grid_points: int = probe.GRID_POINTS
    label_fractions: tuple[float, ...] = (0.01, 0.1)
    transfer: tuple[str, ...] = ()   # target datasets, resized to the suite's image size
    transfer_train_subset: int = 0
    transfer_test_subset: int = 0
    feature_batch: int = 1024
    curve_every: int = 1           # epochs between learning-curve points (kNN top-1; 0 = off)
    curve_test_subset: int = 1000  # learning-curve queries: fixed class-balanced test subset (0 = all)

    def probe_l2_grid(self) -> tuple[float, ...]:
        return probe.l2_grid(self.probe_grid_min, self.probe_grid_max, self.probe_grid_points)


@dataclass(frozen=True)
class OptimConfig:
    """A method's optimizer recipe (a class attribute of every method)."""
    name: str = "sgd"            # sgd | adam | adamw | lars (bench/engine/lars.py)
    lr: float = 0.06             # base learning rate at `lr_batch_size`
    lr_batch_size: int = 256     # linear scaling rule: lr = base lr * batch_size / lr_batch_size
    weight_decay: float = 5e-4   # not applied to biases and norm parameters
    momentum: float = 0.9        # sgd / lars
    beta1: float = 0.9           # adam / adamw
    beta2: float = 0.999         # adam / adamw
    schedule: str = "cosine"     # cosine | constant, after the suite's linear warmup
    lars_trust_coefficient: float = 0.001  # lars: eta (official VICReg and lightly 0.001; solo-learn 0.02)
    lars_clip_lr: bool = False   # lars: cap each parameter's lr at the global lr (solo-learn's clip_lr)
    token_weight_decay: bool = False  # decay a ViT's cls token / pos-embed and MAE's mask token too
                                 # (False: exempt, timm's no_weight_decay; True: facebookresearch/mae main_pretrain)


@dataclass(frozen=True)
class Published:
    """A number the literature reports for a suite's setting: data with its source, never ours.
    Shown beside the suite's own results (bench/report/), with how its protocol differs."""
    method: str                    # the method row it sits beside
    metric: str                    # the metric it compares with (a result.json metric: knn_top1, linear_top1)
    value: float                   # top-1 %
    source: str                    # where it is published (document, table, commit or arXiv id)
    differences: str               # its protocol against the suite's: epochs, backbone, best epoch vs final, k, probe


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    dataset: str
    backbone: str
    image_size: int
    train: TrainConfig
    aug: AugConfig
    eval: EvalConfig
    methods: tuple[str, ...] = ALL_METHODS
    baselines: tuple[str, ...] = ALL_BASELINES
    target: str = "cpu"            # where the suite is meant to run: cpu | gpu
    tolerance: float = 1.0         # default drift tolerance (accuracy points) for `bench check`
    # bring-your-own data (bench/suite_file.py): an unlabeled dataset to pretrain on instead of
    # `dataset`'s train split (which stays the labeled evaluation data), and the JSON definition
    # of a dataset declared in a suite file (format, absolute path, split), so that a stored run
    # can re-register it; both empty for the built-in suites
    pretrain_dataset: str = ""
    data_source: str = ""
    # published numbers of the setting this suite reproduces (issue #17). Annotations about the
    # literature, not part of the setup: no run id depends on them (a Suite is never hashed), and two
    # suites with the same setup compare equal whatever they cite (a suite file carries none)
    published: tuple[Published, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class RunSpec:
    """One training+evaluation run of a suite, before its config is resolved."""
    suite: str
    method: str
    seed: int
    aug_mode: str = "shared"       # shared | native (each method's own recipe, an ablation)


SCHEMA_VERSION = 1  # of result.json and of the hashed run config: a change invalidates old runs
SECTIONS = ("train", "aug", "eval", "method_config", "optim")  # a ResolvedRun's config dataclasses


@dataclass(frozen=True)
class ResolvedRun:
    """Everything that determines a run's result, resolved from its suite, spec and overrides.

    Stored as result.json's `config` (`to_json`) and read back with `from_json`; its hash
    (`spec_hash`, over the same JSON) names the run directory, so a changed config never
    reuses an old result.
    """
    suite: str
    method: str
    seed: int
    aug_mode: str
    dataset: str
    backbone: str
    image_size: int
    views: tuple[str, ...]
    paradigm: str
    train: TrainConfig
    aug: AugConfig
    eval: EvalConfig
    method_config: Any             # the method's own Config dataclass (a dict for a method not registered here)
    optim: OptimConfig
    world_size: int = 1            # torchrun processes: train.batch_size is per process
    pretrain_dataset: str = ""     # Suite.pretrain_dataset
    data_source: str = ""          # Suite.data_source (canonical JSON)

    def to_json(self) -> dict[str, Any]:
        d = {"suite": self.suite, "method": self.method, "seed": self.seed, "aug_mode": self.aug_mode,
             "dataset": self.dataset, "backbone": self.backbone, "image_size": self.image_size,
             "views": list(self.views), "paradigm": self.paradigm,
             **{name: self.section(name) for name in SECTIONS}}
        if self.world_size > 1:  # absent for one process: run ids of single-process runs stay as they were
            d["world_size"] = self.world_size
        if self.pretrain_dataset:  # absent unless used: the built-in suites' run ids stay as they were
            d["pretrain_dataset"] = self.pretrain_dataset
        if self.data_source:
            d["data_source"] = json.loads(self.data_source)
        return d

    def section(self, name: str) -> dict[str, Any]:
        """One of SECTIONS as a plain dict. A field declared with `added_field(default)` is left
        out while it holds that default, so adding it changed no earlier run's id."""
        v = getattr(self, name)
        if not dataclasses.is_dataclass(v):
            return dict(v)
        d = dataclasses.asdict(v)
        for f in dataclasses.fields(v):
            if f.metadata.get(ADDED_FIELD) and d.get(f.name) == f.default:
                del d[f.name]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any], method_config: type | None = None) -> "ResolvedRun":
        """The inverse of `to_json` (a stored result's `config`), the method's config read as
        `method_config` (its Config dataclass). Without one (a method this process does not know:
        a plugin not loaded, a renamed method) it stays a dict, so its results can still be
        reported; `to_json` gives back exactly what was stored either way."""
        return cls(suite=d["suite"], method=d["method"], seed=int(d["seed"]), aug_mode=d["aug_mode"],
                   dataset=d["dataset"], backbone=d["backbone"], image_size=int(d["image_size"]),
                   views=tuple(d["views"]), paradigm=d["paradigm"],
                   train=from_dict(TrainConfig, d["train"]), aug=from_dict(AugConfig, d["aug"]),
                   eval=from_dict(EvalConfig, d["eval"]),
                   method_config=(from_dict(method_config, d["method_config"]) if method_config
                                  else dict(d["method_config"])),
                   optim=from_dict(OptimConfig, d["optim"]), world_size=int(d.get("world_size", 1)),
                   pretrain_dataset=str(d.get("pretrain_dataset", "")),
                   data_source=json.dumps(d["data_source"], sort_keys=True) if d.get("data_source") else "")

    @property
    def spec_hash(self) -> str:
        blob = json.dumps({"schema_version": SCHEMA_VERSION, **self.to_json()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    @property
    def run_id(self) -> str:
        """The run's directory name: readable prefix + hash."""
        return f"{self.method}-s{self.seed}-{self.spec_hash[:10]}"

    def same_as(self, other: "ResolvedRun") -> bool:
        """Equal as stored (JSON), the comparison `bench check` makes."""
        return json.dumps(self.to_json(), sort_keys=True, default=str) == \
            json.dumps(other.to_json(), sort_keys=True, default=str)


ADDED_FIELD = "ssl-bench-added-field"


def added_field(default: Any) -> Any:
    """A config field added after runs were published: stored (and hashed into the run id) only
    when it differs from `default`, so runs made before it existed keep their ids."""
    return field(default=default, metadata={ADDED_FIELD: True})


def from_dict(cls: type, d: dict[str, Any]) -> Any:
    """A config dataclass from its JSON dict (lists back to the tuples the fields declare)."""
    types = field_types(cls)
    unknown = sorted(set(d) - set(types))
    if unknown:
        raise UserError(f"stored config for {cls.__name__} has unknown keys {', '.join(unknown)}; it was written by "
                        "another version of ssl-bench")
    return cls(**{k: tuple(v) if isinstance(v, list) and typing.get_origin(types[k]) is tuple else v
                  for k, v in d.items()})


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(text: str, typ: Any, key: str) -> Any:
    """Convert `text` to the declared type `typ` (int, float, bool, str, tuple, Optional)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in {"none", "null"}:
            return None
        return parse_value(text, args[0], key)
    if origin is tuple:
        args = typing.get_args(typ)
        inner = args[0] if args else str
        parts = [p for p in text.split(",") if p.strip()]
        return tuple(parse_value(p.strip(), inner, key) for p in parts)
    try:
        if typ is bool:
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(text)
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
        if typ is str:
            return text
    except ValueError:
        pass
    else:
        raise UserError(f"--set {key}: unsupported field type {typ!r}")
    name = getattr(typ, "__name__", str(typ))
    raise UserError(f"--set {key}={text}: expected a value of type {name}")


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def apply(cfg: Any, overrides: dict[str, str], scope: str) -> Any:
    """Return a copy of dataclass `cfg` with `overrides` (field -> text) applied and checked."""
    types = field_types(type(cfg))
    changes = {}
    for field, text in overrides.items():
        if field not in types:
            known = ", ".join(types)
            raise UserError(f"--set {scope}.{field}: unknown key; {scope} has: {known}")
        changes[field] = parse_value(text, types[field], f"{scope}.{field}")
    return dataclasses.replace(cfg, **changes)


def parse_sets(items: list[str]) -> dict[str, dict[str, str]]:
    """Split ['simclr.temperature=0.2', ...] into {'simclr': {'temperature': '0.2'}}.

    The scope is everything before the last dot ('byol.optim.lr' -> scope 'byol.optim').
    """
    out: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        scope, dot, field = key.strip().rpartition(".")
        if not sep or not dot or not scope or not field:
            raise UserError(f"--set {item!r}: expected SCOPE.KEY=VALUE, e.g. simclr.temperature=0.2")
        out.setdefault(scope, {})[field] = value.strip()
    return out


