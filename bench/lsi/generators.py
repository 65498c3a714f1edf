"""The generators LSI decodes with, trained by the harness and cached.

Three generators (`GENERATORS`), all the suite's backbone as encoder and the autoencoders'
residual decoder, all with the suite's `lsi.latent_dim`:

- `aae-uniform`: methods/aae.py as it is (tanh-squashed code, prior U(-1, 1)^d; Liu et al.);
- `aae-gaussian`: the same AAE with `prior="gaussian"` (code not squashed, prior N(0, I));
- `vae`: methods/vae.py with KL weight `lsi.vae_kl_coeff` (0.1); LSI interpolates the posterior means.

A generator is trained once, before any classifier, on the suite's train split only and
without its labels, by the harness itself (`bench.engine.execute.build_method` +
`bench.engine.train.train`, seed 0, the suite's `generator_train` budget, the method's own
optimizer recipe). Its checkpoint lives in `<out>/generators/<kind>-<key>/`, where the key is a
hash of its full resolved config (`ResolvedRun.spec_hash`) and of the train images it saw: every
row, seed and re-run reuses it, and any change of config or data trains a new one. The
training cost (seconds of the timed training loop) is recorded in `generator.json` beside it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

import methods
from bench.config import EvalConfig, ResolvedRun
from bench.engine.augment import Augment
from bench.engine.execute import build_method, device_name
from bench.engine.train import CHECKPOINT, TrainContext, TrainFailed, TrainOutcome, load_checkpoint, train
from bench.lsi.data import LSIData
from bench.lsi.suites import LSISuite
from bench.results import store
from methods.base import Method

# kind -> (method, config overrides beside latent_dim)
GENERATORS: dict[str, tuple[str, dict[str, Any]]] = {
    "aae-uniform": ("aae", {"prior": "uniform"}),
    "aae-gaussian": ("aae", {"prior": "gaussian"}),
    "vae": ("vae", {}),    # + kl_coeff = the suite's lsi.vae_kl_coeff
}
RECORD = "generator.json"


def generator_run(suite: LSISuite, kind: str) -> ResolvedRun:
    """The full resolved config a generator is built and trained from (its hash keys the cache)."""
    name, extra = GENERATORS[kind]
    if name == "vae":
        extra = {**extra, "kl_coeff": suite.lsi.vae_kl_coeff}
    cls = methods.get(name)
    cfg = replace(cls.Config(), latent_dim=suite.lsi.latent_dim, **extra)
    optim = cls.optim
    if suite.generator_lr:  # the suite's short budget: a larger, unscaled Adam step
        optim = replace(optim, lr=suite.generator_lr, lr_batch_size=suite.generator_train.batch_size)
    return ResolvedRun(suite=suite.name, method=name, seed=0, aug_mode="shared", dataset=suite.dataset,
                       backbone=suite.backbone, image_size=suite.image_size, views=tuple(cls.views),
                       paradigm=cls.paradigm, train=replace(suite.generator_train, train_subset=suite.train_subset),
                       aug=suite.aug, eval=EvalConfig(), method_config=cfg, optim=optim)


def cache_key(run: ResolvedRun, train_digest: str) -> str:
    return hashlib.sha256(f"{run.spec_hash}:{train_digest}".encode()).hexdigest()


@dataclass
class Codec:
    """A trained generator as LSI uses it: normalized images <-> codes (eval mode, no gradients)."""
    kind: str
    method: Method
    prior: str                          # uniform | gaussian: the prior its codes are matched to
    lo: torch.Tensor                    # valid range of a normalized pixel, per channel (1,C,1,1)
    hi: torch.Tensor

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "vae":  # the posterior mean: the VAE's deterministic code
            mu, _ = self.method.head(self.method.backbone(x))
            return mu
        return self.method.code(x)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded images, clamped to the range a real normalized pixel can take."""
        return torch.maximum(torch.minimum(self.method.decoder(z).float(), self.hi), self.lo)

    def discriminator(self) -> torch.nn.Module | None:
        """The AAE's own discriminator (logit: code looks like a prior sample); None for the VAE."""
        return getattr(self.method, "discriminator", None)


@dataclass
class Trained:
    """A generator ready to use, and what training it cost."""
    kind: str
    key: str
    directory: Path
    codec: Codec | None                 # None when its training did not finish ok
    record: dict[str, Any]              # generator.json

    @property
    def ok(self) -> bool:
        return self.codec is not None


def prepare(suite: LSISuite, kind: str, data: LSIData, out: Path, device: torch.device) -> Trained:
    """The trained generator `kind`: loaded from the cache, or trained now and cached."""
    run = generator_run(suite, kind)
    digest = data.train_digest()
    key = cache_key(run, digest)
    gdir = out / "generators" / f"{kind}-{key[:10]}"
    record = _read(gdir)
    method = build_method(run, data.info, device)
    if record is not None and record.get("status") == "ok" and record.get("key") == key:
        state = load_checkpoint(gdir / CHECKPOINT, key)
        method.load_state_dict(state["model"])
        record = {**record, "cached": True}
        _say(f"generator {kind}: cached ({gdir}), trained in {record['train_s']:.1f}s")
    else:
        if record is not None:  # a failed attempt: keep its record, never overwrite it silently
            store.keep_aside(gdir / RECORD)
        _say(f"generator {kind}: training {run.method} ({_describe(run)}) on {len(data.train)} train images, "
             f"no labels, {run.train.epochs} epochs, on {device_name(device)}")
        aug = Augment(run.aug, data.info.size, data.info.channels, data.info.mean, data.info.std).to(device)
        gdir.mkdir(parents=True, exist_ok=True)
        ctx = TrainContext(run_dir=gdir, device=device, seed=run.seed, spec_hash=key)
        # no labels reach the generator: it is trained on the (unlabeled) train images only
        unlabeled = torch.full_like(data.train_labels, -1)
        try:
            outcome = train(method, data.train_images, unlabeled, aug, run.train, run.optim, ctx)
        except TrainFailed as e:  # a crash is recorded like a divergence: its rows fail, the suite goes on
            cause = e.__cause__ or e
            outcome = TrainOutcome(status="failed", step=e.step,
                                   reason=f"{type(cause).__name__}: {cause}".splitlines()[0][:500])
        record = {"kind": kind, "key": key, "status": outcome.status, "reason": outcome.reason,
                  "config": run.to_json(), "spec_hash": run.spec_hash, "train_images": len(data.train),
                  "train_digest": digest, "train_s": outcome.train_s, "steps": outcome.step,
                  "epochs": outcome.epochs_done, "lr": outcome.lr, "device": device_name(device),
                  "final_losses": _last_losses(gdir), **store.environment()}
        store.write_json(gdir / RECORD, record)
        record = {**record, "cached": False}
        _say(f"generator {kind}: {outcome.status} in {outcome.train_s:.1f}s ({outcome.step} steps)"
             + (f": {outcome.reason}" if outcome.reason else ""))
    if record["status"] != "ok":
        return Trained(kind, key, gdir, None, record)
    method.eval()
    for p in method.parameters():
        p.requires_grad_(False)
    mean = torch.tensor(data.info.mean, device=device).view(1, -1, 1, 1)
    std = torch.tensor(data.info.std, device=device).view(1, -1, 1, 1)
    prior = getattr(run.method_config, "prior", "gaussian")  # the VAE's prior is N(0, I)
    return Trained(kind, key, gdir, Codec(kind, method, prior, (0 - mean) / std, (1 - mean) / std), record)


def _describe(run: ResolvedRun) -> str:
    cfg = dataclasses.asdict(run.method_config)
    keys = [k for k in ("latent_dim", "prior", "kl_coeff") if k in cfg]
    return ", ".join(f"{k}={cfg[k]}" for k in keys)


def _last_losses(gdir: Path) -> dict[str, float]:
    """The last logged row of the training loss terms (train_log.csv), for the report."""
    import csv
    path = gdir / "train_log.csv"
    if not path.exists():
        return {}
    rows = list(csv.DictReader(path.open()))
    if not rows:
        return {}
    out = {}
    for k, v in rows[-1].items():
        if k in ("step", "epoch", "lr", "views_per_s"):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k] = f
    return out


def _read(gdir: Path) -> dict[str, Any] | None:
    import json
    path = gdir / RECORD
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
