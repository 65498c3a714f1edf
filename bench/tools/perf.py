"""`python -m bench perf`: the harness's speed, measured against its bounds, in one process.

(a) bare bound   forward + backward + optimizer step of the method model on pre-made float views
                 (already augmented, already on the device): nothing else runs;
(b) harness      the REAL training loop, `bench.engine.train.train` (epochs=1 on a subset of exactly
                 --steps batches, a temporary run dir), on uint8 data resident on the device with
                 the suite's batched augmentation; wall clock of the whole call, checkpoint included;
(c) plain loop   (--vs-lightly) what a lightly user writes: `SimCLRTransform` on PIL images in a
                 torch DataLoader (2 workers, persistent), same model, loss and optimizer.
Then the evaluation kernels on real features (a random-init encoder of the suite's eval data):
the linear probe with its L2 search against scikit-learn's lbfgs doing the same search, and the
kNN classifier against a bare `test @ bank.T; topk`.

Every throughput is the median of --repeats repeats, interleaved (a, b, c, a, b, c, ...) so that
load drifting on a shared machine hits all of them alike; the load average is printed with them.
`--epoch-time` / `--all-methods` extrapolate each method's epoch time at the suite's full training
set size (e.g. 50k CIFAR-10 images) from timed harness steps, and the suite's whole schedule.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.errors import UserError

TARGETS = {  # issue #6, for SimCLR on the fmnist-ci backbone on 2 CPU cores
    "harness_vs_bare": 0.9,      # harness views/s >= 0.9 x bare bound
    "harness_vs_plain": 1.35,    # harness views/s >= 1.35 x plain lightly loop
    "probe_speedup": 10.0,       # linear probe (with search) >= 10x faster than sklearn lbfgs
    "probe_acc_points": 0.5,     # ... at accuracy within 0.5 points
    "knn_vs_bare": 1.2,          # kNN <= 1.2 x bare matmul + topk
}
FULL_TRAIN_SIZES = {"cifar10": 50_000, "cifar100": 50_000, "fashion-mnist": 60_000, "stl10": 105_000,
                    "svhn": 73_257, "digits": 1_797}


# --------------------------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Setup:
    suite: Any
    device: torch.device
    images: torch.Tensor          # uint8 (N,C,H,W) on the device (the harness's fast path)
    labels: torch.Tensor
    info: Any                     # methods.base.DataInfo
    eval_train: tuple[torch.Tensor, torch.Tensor] | None
    eval_test: tuple[torch.Tensor, torch.Tensor] | None
    full_train_size: int
    data_note: str


def _suite(args: argparse.Namespace):
    from bench import backbones
    from bench.suites import SUITES
    suite = SUITES.get(args.suite)
    if args.backbone:
        backbones.get(args.backbone)  # unknown name -> UserError
        suite = dataclasses.replace(suite, backbone=args.backbone)
    if args.batch_size:
        suite = dataclasses.replace(suite, train=dataclasses.replace(suite.train, batch_size=args.batch_size))
    return suite


def load_setup(args: argparse.Namespace, suite, device: torch.device, need: int) -> Setup:
    """uint8 training images on the device (>= `need` of them) + eval data, real or synthetic."""
    import datasets as ds
    from methods.base import DataInfo
    dinfo = ds.info(suite.dataset)
    size = suite.image_size
    full = FULL_TRAIN_SIZES.get(suite.dataset, 50_000)
    if args.synthetic:
        g = torch.Generator().manual_seed(0)
        n = max(need, 8192)  # enough that the plain loop's DataLoader epochs are not tiny
        images = torch.randint(0, 256, (n, dinfo.channels, size, size), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, dinfo.num_classes, (n,), generator=g)
        n_eval = args.eval_n or 10_000
        ev_tr = (torch.randint(0, 256, (n_eval, dinfo.channels, size, size), dtype=torch.uint8, generator=g),
                 torch.randint(0, dinfo.num_classes, (n_eval,), generator=g))
        ev_te = (torch.randint(0, 256, (n_eval, dinfo.channels, size, size), dtype=torch.uint8, generator=g),
                 torch.randint(0, dinfo.num_classes, (n_eval,), generator=g))
        info = DataInfo(dinfo.channels, size, dinfo.num_classes, (0.5,) * dinfo.channels, (0.25,) * dinfo.channels)
        note = f"synthetic uint8 {dinfo.channels}x{size}x{size} (random; accuracies meaningless)"
        return Setup(suite, device, images.to(device), labels.to(device), info, ev_tr, ev_te, full, note)
    from bench.engine.data import SuiteData
    suite_no_transfer = dataclasses.replace(suite, eval=dataclasses.replace(suite.eval, transfer=()))
    data = SuiteData(suite_no_transfer, args.data_dir, False, device)
    images, labels = data.images, data.labels
    if images.shape[0] < need:  # tile: the timing does not depend on which images repeat
        reps = math.ceil(need / images.shape[0])
        images, labels = images.repeat(reps, 1, 1, 1), labels.repeat(reps)
    ev_tr = (data.main.train.images, data.main.train.labels)
    ev_te = (data.main.test.images, data.main.test.labels)
    if args.eval_n:
        ev_tr = (ev_tr[0][: args.eval_n], ev_tr[1][: args.eval_n])
        ev_te = (ev_te[0][: args.eval_n], ev_te[1][: args.eval_n])
    note = f"{suite.dataset} ({data.pretrain.images.shape[0]} pretraining images)"
    return Setup(suite, device, images, labels, data.info, ev_tr, ev_te, full, note)


def build(suite, method: str, info, device: torch.device, seed: int = 0):
    """The method model, its resolved config, train/optim configs and the suite's augmentation,
    built exactly as `bench run` builds them."""
    from bench.config import RunSpec
    from bench.suites import resolve
    from bench.engine.execute import build_method
    run = resolve(suite, RunSpec(suite.name, method, seed), {})
    return build_method(run, info, device), run, run.train, run.optim, run.aug


def make_aug(aug_cfg, info, device, impl: str):
    from bench.engine.augment import Augment
    return Augment(aug_cfg, info.size, info.channels, info.mean, info.std, impl=impl).to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "load average n/a"


def _proc_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by other processes (DataLoader workers), Linux only."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------------------------
# (a) bare bound
# --------------------------------------------------------------------------------------------
class Bare:
    """fwd + bwd + optimizer step on pre-made views: the bound any loop can at best reach."""

    def __init__(self, s: Setup, method: str, batch: int, aug_impl: str, pool: int = 4) -> None:
        from bench.engine.train import build_optimizer, make_views, prepare, scaled_lr, to_memory_format
        self.model, _, self.train_cfg, optim, aug_cfg = build(s.suite, method, s.info, s.device)
        channels_last = prepare(self.model, self.train_cfg, s.device)  # as the harness does
        self.opt = build_optimizer(self.model, optim, scaled_lr(optim, batch))
        self.device = s.device
        self.amp = self.train_cfg.amp and s.device.type == "cuda"
        aug = make_aug(aug_cfg, s.info, s.device, aug_impl)
        torch.manual_seed(0)
        self.batches = []
        for i in range(pool):  # real augmented views, made before the clock starts
            xb = s.images[i * batch:(i + 1) * batch]
            yb = s.labels[i * batch:(i + 1) * batch]
            views = [v.contiguous() for v in make_views(self.model, xb, aug)]
            self.batches.append((to_memory_format(views, channels_last), yb))
        self.views_per_step = batch * len(self.model.views)
        self.model.train()
        self.step = 0

    def run(self, steps: int) -> float:
        """views/s over `steps` steps."""
        _sync(self.device)
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(steps):
            views, yb = self.batches[i % len(self.batches)]
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                loss, _ = self.model.training_step(views, yb)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.model.after_optimizer_step(views, yb)  # e.g. the AAE's regularization phase
            self.model.on_step_end(self.step, 10 ** 6)
            self.step += 1
        _sync(self.device)
        self.cpu_ms_per_view = 1e3 * (time.process_time() - c0) / (steps * self.views_per_step)
        return steps * self.views_per_step / (time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------
# (b) the real harness loop
# --------------------------------------------------------------------------------------------
class Harness:
    """`bench.engine.train.train` for exactly `steps` steps: epochs=1 on steps x batch images."""

    def __init__(self, s: Setup, method: str, batch: int, aug_impl: str) -> None:
        self.s = s
        self.model, _, train_cfg, self.optim, aug_cfg = build(s.suite, method, s.info, s.device)
        self.cfg = dataclasses.replace(train_cfg, epochs=1, warmup_epochs=0, batch_size=batch)
        self.aug = make_aug(aug_cfg, s.info, s.device, aug_impl)
        self.batch = batch
        self.views_per_step = batch * len(self.model.views)
        self.last_internal = float("nan")  # the loop's own views/s (sum of per-step times)
        self.calls = 0

    def run(self, steps: int, wrap_profile: bool = False) -> float:
        from bench.engine.train import TrainContext, train
        n = steps * self.batch
        images, labels = self.s.images[:n], self.s.labels[:n]
        with tempfile.TemporaryDirectory() as tmp:
            run_dir = Path(tmp) / f"perf-{self.calls}"
            run_dir.mkdir()
            self.calls += 1
            err = io.StringIO()  # the loop's progress bar / epoch line: not part of the report
            _sync(self.s.device)
            c0, t0 = time.process_time(), time.perf_counter()
            with contextlib.redirect_stderr(err):
                out = train(self.model, images, labels, self.aug, self.cfg, self.optim,
                            TrainContext(run_dir=run_dir, device=self.s.device, seed=self.calls, spec_hash="perf"))
            _sync(self.s.device)
            dt = time.perf_counter() - t0
            cpu = time.process_time() - c0
        if out.status != "ok":
            raise RuntimeError(f"harness run {out.status}: {out.reason}")
        self.last_internal = out.views_per_s
        self.cpu_ms_per_view = 1e3 * cpu / max(1, out.step * self.views_per_step)
        return out.step * self.views_per_step / dt


# --------------------------------------------------------------------------------------------
# (c) the plain lightly loop
# --------------------------------------------------------------------------------------------
def lightly_transform(aug_cfg, info, views: tuple[str, ...]):
    """lightly's SimCLRTransform set up like the suite's AugConfig, one per declared view.

    cj_strength=0.5 with cj_bright = brightness / 0.5 etc. gives torchvision ColorJitter the
    suite's exact ranges (for the CIFAR recipe: lightly's defaults 0.8/0.8/0.8/0.2 x 0.5).
    1-channel data: PIL "L" images; torchvision's ColorJitter leaves hue untouched on "L" but
    would still spend time on a no-op saturation blend, and RandomGrayscale on "L" is a no-op,
    so, as the harness does, saturation/hue are 0 (torchvision then skips them) and grayscale
    p = 0 for 1-channel data. No blur at this size (gaussian_blur=aug_cfg.blur_p, 0 here).
    """
    import torchvision.transforms as T
    from lightly.transforms import SimCLRTransform
    from lightly.transforms.multi_view_transform import MultiViewTransform
    from methods.base import AUGMENTED
    gray = info.channels == 1
    norm = {"mean": list(info.mean), "std": list(info.std)}
    simclr = SimCLRTransform(
        input_size=info.size, cj_prob=aug_cfg.jitter_p, cj_strength=0.5,
        cj_bright=aug_cfg.brightness / 0.5, cj_contrast=aug_cfg.contrast / 0.5,
        cj_sat=0.0 if gray else aug_cfg.saturation / 0.5, cj_hue=0.0 if gray else aug_cfg.hue / 0.5,
        min_scale=aug_cfg.crop_scale_min, random_gray_scale=0.0 if gray else aug_cfg.grayscale_p,
        gaussian_blur=aug_cfg.blur_p, hf_prob=aug_cfg.hflip_p, normalize=norm)
    view_t = simclr.transforms[0]
    clean_t = T.Compose([T.ToTensor(), T.Normalize(norm["mean"], norm["std"])])
    return MultiViewTransform([view_t if v == AUGMENTED else clean_t for v in views])


class PILImages(torch.utils.data.Dataset):
    """uint8 (N,C,H,W) array -> (PIL image -> transform, label), as torchvision's datasets do."""

    def __init__(self, images, labels, transform) -> None:
        self.images = images.cpu().numpy()
        self.labels = labels.cpu().numpy()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image
        a = self.images[i]
        img = Image.fromarray(a[0], mode="L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0), mode="RGB")
        return self.transform(img), int(self.labels[i])


class Plain:
    """The loop a lightly user writes: DataLoader(PIL + SimCLRTransform, 2 workers) -> model."""

    def __init__(self, s: Setup, method: str, batch: int, workers: int) -> None:
        from bench.engine.train import build_optimizer, prepare, scaled_lr
        self.model, _, train_cfg, optim, aug_cfg = build(s.suite, method, s.info, s.device)
        self.channels_last = prepare(self.model, train_cfg, s.device)  # same model as (a), (b)
        self.opt = build_optimizer(self.model, optim, scaled_lr(optim, batch))
        self.device = s.device
        self.amp = train_cfg.amp and s.device.type == "cuda"
        ds = PILImages(s.images, s.labels, lightly_transform(aug_cfg, s.info, self.model.views))
        self.loader = torch.utils.data.DataLoader(
            ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
            persistent_workers=workers > 0, pin_memory=s.device.type == "cuda")
        self.drain = max(1, workers * 2)  # default prefetch_factor 2: the queue's head start
        self.views_per_step = batch * len(self.model.views)
        self.it = self._forever()
        self.model.train()

    def _forever(self):
        while True:
            yield from self.loader

    def _step(self) -> None:
        from bench.engine.train import to_memory_format
        views, yb = next(self.it)
        views = to_memory_format([v.to(self.device, non_blocking=True) for v in views], self.channels_last)
        yb = yb.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss, _ = self.model.training_step(views, yb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.model.after_optimizer_step(views, yb)

    def run(self, steps: int) -> float:
        for _ in range(self.drain):  # consume the batches prefetched while other loops ran
            self._step()
        pids = self._worker_pids()
        _sync(self.device)
        c0, w0, t0 = time.process_time(), _proc_cpu(pids), time.perf_counter()
        for _ in range(steps):
            self._step()
        _sync(self.device)
        dt = time.perf_counter() - t0
        views = steps * self.views_per_step
        self.cpu_ms_per_view = 1e3 * (time.process_time() - c0) / views
        self.worker_cpu_ms_per_view = 1e3 * (_proc_cpu(pids) - w0) / views
        return views / dt

    def _worker_pids(self) -> list[int]:
        it = getattr(self.loader, "_iterator", None)  # persistent workers live on the loader's iterator
        return [w.pid for w in getattr(it, "_workers", [])]


# --------------------------------------------------------------------------------------------
# augmentation alone
# --------------------------------------------------------------------------------------------
def time_augment(s: Setup, aug_cfg, batch: int, impl: str, repeats: int, calls: int = 10) -> float:
    aug = make_aug(aug_cfg, s.info, s.device, impl)
    xb = s.images[:batch]
    aug(xb)
    rates = []
    for _ in range(repeats):
        _sync(s.device)
        t0 = time.perf_counter()
        for _ in range(calls):
            aug(xb)
        _sync(s.device)
        rates.append(calls * batch / (time.perf_counter() - t0))
    return _median(rates)


# --------------------------------------------------------------------------------------------
# evaluation kernels
# --------------------------------------------------------------------------------------------
def eval_features(s: Setup, method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Features of a random-init encoder (the method's backbone, seed 0) of the suite's eval data."""
    from bench.eval.evaluate import extract_features
    model, *_ = build(s.suite, method, s.info, s.device)
    model.eval()
    ftr = extract_features(model.encode, s.eval_train[0], s.info.mean, s.info.std, s.device, s.suite.eval.feature_batch)
    fte = extract_features(model.encode, s.eval_test[0], s.info.mean, s.info.std, s.device, s.suite.eval.feature_batch)
    return ftr, s.eval_train[1].to(s.device), fte, s.eval_test[1].to(s.device)


def sklearn_search(ftr, ytr, fte, yte, grid, val_fraction: float, seed: int, max_iter: int, tol: float,
                   warm_start: bool = False) -> dict[str, Any]:
    """scikit-learn LogisticRegression(lbfgs) doing bench.eval.probe's search: same held-out split
    (bench.eval.probe.stratified_split), same standardization, l2 -> C = 1 / (l2 * n_fit), ties to the
    larger l2, refit on all of train with C = 1 / (l2 * n_train), score test once."""
    import warnings
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from bench.eval.probe import stratified_split
    x = ftr.detach().float().cpu().numpy()
    y = ytr.detach().cpu().numpy()
    xt = fte.detach().float().cpu().numpy()
    yt = yte.detach().cpu().numpy()
    fit_idx, val_idx = (i.cpu().numpy() for i in stratified_split(ytr.cpu(), val_fraction, seed))

    def standardize(a, ref):
        mean, std = ref.mean(0), ref.std(0)
        std = np.where(std > 1e-8, std, 1.0)
        return (a - mean) / std

    xf, xv = standardize(x[fit_idx], x[fit_idx]), standardize(x[val_idx], x[fit_idx])
    scores = {}
    clf = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for l2 in sorted({float(v) for v in grid}, reverse=True):
            c = 1.0 / (l2 * len(fit_idx))
            if clf is None or not warm_start:
                clf = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, tol=tol, warm_start=warm_start)
            else:
                clf.set_params(C=c)
            clf.fit(xf, y[fit_idx])
            scores[l2] = 100.0 * float((clf.predict(xv) == y[val_idx]).mean())
        best = max(scores, key=lambda v: (scores[v], v))
        final = LogisticRegression(C=1.0 / (best * len(x)), solver="lbfgs", max_iter=max_iter, tol=tol)
        final.fit(standardize(x, x), y)
    top1 = 100.0 * float((final.predict(standardize(xt, x)) == yt).mean())
    return {"top1": top1, "l2": best, "C": 1.0 / (best * len(x))}


def time_probe(ftr, ytr, fte, yte, num_classes, cfg, repeats: int, sk_repeats: int, device,
               sk_warm: bool = False) -> dict[str, Any]:
    from bench.eval.probe import DEFAULT_TOL, linear_probe
    grid = cfg.probe_l2_grid()
    ours_t, ours_cpu, res = [], [], None
    for _ in range(repeats):
        _sync(device)
        c0, t0 = time.process_time(), time.perf_counter()
        res = linear_probe(ftr, ytr, fte, yte, num_classes, grid=grid, val_fraction=cfg.probe_val_fraction, seed=0)
        _sync(device)
        ours_t.append(time.perf_counter() - t0)
        ours_cpu.append(time.process_time() - c0)
    out: dict[str, Any] = {"grid_points": len(grid), "n_train": len(ftr), "n_test": len(fte), "dim": ftr.shape[1],
                           "ours_s": ours_t, "ours_cpu_s": ours_cpu, "ours_top1": res.top1, "ours_l2": res.l2}
    for warm in (False, True) if sk_warm else (False,):
        key = "sklearn_warm" if warm else "sklearn"
        times, cpus, sk = [], [], None
        for _ in range(sk_repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            sk = sklearn_search(ftr, ytr, fte, yte, grid, cfg.probe_val_fraction, 0, 200, DEFAULT_TOL, warm_start=warm)
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        if sk is not None:
            out[f"{key}_s"], out[f"{key}_cpu_s"], out[f"{key}_top1"], out[f"{key}_l2"] = times, cpus, sk["top1"], sk["l2"]
    return out


def time_knn(ftr, ytr, fte, yte, num_classes, cfg, repeats: int, device) -> dict[str, Any]:
    from bench.eval.knn import knn_top1
    k = min(cfg.knn_k, ftr.shape[0])
    ours, bare, acc = [], [], float("nan")
    for _ in range(max(repeats, 5)):
        _sync(device)
        t0 = time.perf_counter()
        acc = knn_top1(ftr, ytr, fte, yte, num_classes, k=k, temperature=cfg.knn_t)
        _sync(device)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sim = fte @ ftr.T
        sim.topk(k, dim=1)
        _sync(device)
        bare.append(time.perf_counter() - t0)
        del sim
    return {"k": k, "ours_s": ours, "bare_s": bare, "top1": acc}


# --------------------------------------------------------------------------------------------
# profile
# --------------------------------------------------------------------------------------------
def profile_harness(h: Harness, steps: int) -> str:
    """Where a harness step's time goes: torch.profiler over a real train() call, with the
    loop's augmentation and forward/loss wrapped in named regions."""
    import bench.engine.train as bt
    from torch.profiler import ProfilerActivity, profile, record_function
    # The loop's two phases are swapped for labelled copies for the profile only (restored
    # below): instrumenting the loop itself would put profiler calls into every real step.
    orig_views, orig_step = bt.make_views, bt._step

    def views(*a, **k):
        with record_function("perf::augment (make_views)"):
            return orig_views(*a, **k)

    def step(*a, **k):
        with record_function("perf::forward+loss (_step)"):
            return orig_step(*a, **k)

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if h.s.device.type == "cuda" else [])
    bt.make_views, bt._step = views, step
    try:
        with profile(activities=acts) as prof:
            h.run(steps)
    finally:
        bt.make_views, bt._step = orig_views, orig_step
    cats: dict[str, float] = {}
    for e in prof.events():
        if e.cpu_parent is not None or e.device_type != torch.autograd.DeviceType.CPU:
            continue
        name = e.name
        if name.startswith("perf::"):
            cat = name[6:]
        elif name.startswith("autograd::engine") or "Backward" in name:
            cat = "backward"
        elif name.startswith("Optimizer.") or name.startswith("Optimizer"):
            cat = "optimizer step (incl. zero_grad)"
        else:
            cat = "other: " + name
        cats[cat] = cats.get(cat, 0.0) + e.cpu_time_total / 1e3
    total = sum(cats.values())
    lines = [f"profile of {steps} harness steps (top-level CPU regions, ms; total {total:.0f} ms):"]
    other = sum(v for k, v in cats.items() if k.startswith("other: "))
    main = {k: v for k, v in cats.items() if not k.startswith("other: ")}
    main["other (index_select, .to, .item, logging, ...)"] = other
    for k, v in sorted(main.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {v:9.1f} ms  {100 * v / max(total, 1e-9):5.1f}%  {k}")
    tops = sorted(((k[7:], v) for k, v in cats.items() if k.startswith("other: ")), key=lambda kv: -kv[1])[:6]
    if tops:
        lines.append("  largest 'other' regions: " + ", ".join(f"{k} {v:.1f} ms" for k, v in tops))
    sort = "self_cuda_time_total" if h.s.device.type == "cuda" else "self_cpu_time_total"
    lines.append(prof.key_averages().table(sort_by=sort, row_limit=15))
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# epoch time
# --------------------------------------------------------------------------------------------
def epoch_times(s: Setup, names: list[str], batch: int, steps: int, warmup: int, repeats: int,
                aug_impl: str) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        try:
            h = Harness(s, name, batch, aug_impl)
            if warmup:
                h.run(max(1, warmup))
            rates = [h.run(steps) for _ in range(repeats)]
        except Exception as e:  # one method failing must not hide the others' numbers
            rows.append({"method": name, "error": f"{type(e).__name__}: {e}".splitlines()[0][:200]})
            continue
        vps = _median(rates)
        steps_per_epoch = s.full_train_size // batch
        step_s = batch * len(h.model.views) / vps
        epoch_s = steps_per_epoch * step_s
        rows.append({"method": name, "views": len(h.model.views), "views_per_s": vps, "rates": rates,
                     "step_s": step_s, "steps_per_epoch": steps_per_epoch, "epoch_s": epoch_s,
                     "schedule_s": epoch_s * s.suite.train.epochs})
        del h
        if s.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------
def _fmt_rates(rates: list[float]) -> str:
    return "[" + " ".join(f"{r:.0f}" for r in rates) + "]"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(args: argparse.Namespace) -> int:
    import methods
    from bench.engine.execute import device_name, pick_device
    if args.threads:
        torch.set_num_threads(args.threads)
        try:  # the same limit for numpy/scipy BLAS (the sklearn comparison) and other OpenMP pools
            from threadpoolctl import threadpool_limits
            threadpool_limits(args.threads)
        except ImportError:
            pass
    methods.get(args.method)  # unknown -> UserError before any work
    if args.warmup < 0 or args.workers < 0 or args.eval_n < 0 or args.sklearn_repeats < 0:
        raise UserError("--warmup, --workers, --eval-n and --sklearn-repeats must be >= 0")
    suite = _suite(args)
    device = pick_device(args.device)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)  # as `bench run` does on the CPU
    cls = methods.get(args.method)
    if not cls.trains:
        raise UserError(f"--method {args.method}: a baseline that does not train has no training loop to time")
    batch = suite.train.batch_size
    need = max(args.steps, args.warmup, 4) * batch
    s = load_setup(args, suite, device, need)
    report: dict[str, Any] = {"method": args.method, "suite": suite.name, "backbone": suite.backbone,
                              "image_size": suite.image_size, "channels": s.info.channels, "batch_size": batch,
                              "steps": args.steps, "repeats": args.repeats, "device": device_name(device),
                              "aug_impl": args.aug_impl, "data": s.data_note, "load_before": _load(),
                              "torch": torch.__version__, "cpu_count": os.cpu_count()}
    who = "every registered method" if args.all_methods else args.method
    print(f"perf: {who} on {suite.name} ({suite.backbone}, {suite.image_size}px, {s.info.channels} ch, "
          f"{s.data_note}), batch {batch}, {args.steps} timed steps x {args.repeats} repeats, "
          f"device {device_name(device)}, augmentation {args.aug_impl}")
    print(f"      machine: {os.cpu_count()} CPUs, torch {torch.__version__}; {_load()}", flush=True)

    rows: dict[str, list[float]] = {"bare": [], "harness": [], "plain": []}
    internal: list[float] = []
    cpu: dict[str, list[float]] = {"bare": [], "harness": [], "plain": [], "workers": []}
    timed_loops = (not args.all_methods or args.vs_lightly) and not args.no_loops
    if timed_loops:
        bare = Bare(s, args.method, batch, args.aug_impl)
        harness = Harness(s, args.method, batch, args.aug_impl)
        plain = Plain(s, args.method, batch, args.workers) if args.vs_lightly else None
        if args.warmup:
            bare.run(args.warmup)
            harness.run(args.warmup)
            if plain is not None:
                plain.run(args.warmup)
        for _ in range(args.repeats):
            rows["bare"].append(bare.run(args.steps))
            cpu["bare"].append(bare.cpu_ms_per_view)
            rows["harness"].append(harness.run(args.steps))
            cpu["harness"].append(harness.cpu_ms_per_view)
            internal.append(harness.last_internal)
            if plain is not None:
                rows["plain"].append(plain.run(args.steps))
                cpu["plain"].append(plain.cpu_ms_per_view)
                cpu["workers"].append(plain.worker_cpu_ms_per_view)
        a, b = _median(rows["bare"]), _median(rows["harness"])
        # paired ratios: a, b and c of one repeat ran back to back, so slow load drift cancels
        pair_ba = _median([hb / ba for hb, ba in zip(rows["harness"], rows["bare"])])
        print(f"(a) bare bound     fwd+bwd+step on pre-made views      {a:9.1f} views/s  {_fmt_rates(rows['bare'])}"
              f"  cpu {_median(cpu['bare']):.2f} ms/view")
        print(f"(b) harness        bench.engine.train.train, uint8 on {device.type:4s}     {b:9.1f} views/s  "
              f"{_fmt_rates(rows['harness'])}  cpu {_median(cpu['harness']):.2f} ms/view  = {b / a:.3f} x bare  "
              f"(loop's own step timer: {_median(internal):.1f} views/s; median of paired ratios {pair_ba:.3f})")
        report.update(bare_views_per_s=a, harness_views_per_s=b, harness_internal_views_per_s=_median(internal),
                      bare_rates=rows["bare"], harness_rates=rows["harness"], harness_vs_bare=b / a,
                      harness_vs_bare_paired=pair_ba,
                      bare_cpu_ms_per_view=_median(cpu["bare"]), harness_cpu_ms_per_view=_median(cpu["harness"]))
        if plain is not None:
            c = _median(rows["plain"])
            pair_bc = _median([hb / pc for hb, pc in zip(rows["harness"], rows["plain"])])
            print(f"(c) plain lightly  SimCLRTransform+DataLoader({args.workers} workers) {c:9.1f} views/s  "
                  f"{_fmt_rates(rows['plain'])}  cpu {_median(cpu['plain']):.2f} ms/view + workers "
                  f"{_median(cpu['workers']):.2f} ms/view  harness = {b / c:.2f} x plain "
                  f"(median of paired ratios {pair_bc:.2f})")
            report.update(plain_views_per_s=c, plain_rates=rows["plain"], harness_vs_plain=b / c,
                          harness_vs_plain_paired=pair_bc,
                          plain_cpu_ms_per_view=_median(cpu["plain"]),
                          plain_worker_cpu_ms_per_view=_median(cpu["workers"]))
        aug_cfg = build(s.suite, args.method, s.info, device)[4]
        fused = time_augment(s, aug_cfg, batch, "fused", args.repeats)
        kornia = time_augment(s, aug_cfg, batch, "kornia", args.repeats)
        print(f"    augmentation alone (one view of a batch of {batch}): fused {fused:.0f} views/s, "
              f"kornia modules {kornia:.0f} views/s")
        report.update(aug_fused_views_per_s=fused, aug_kornia_views_per_s=kornia)
        if args.profile:
            print(profile_harness(harness, max(2, min(args.steps, 5))))
        del bare, harness, plain

    if not args.no_eval and not args.all_methods:
        ftr, ytr, fte, yte = eval_features(s, args.method)
        k = s.info.num_classes
        pr = time_probe(ftr, ytr, fte, yte, k, suite.eval, args.repeats, args.sklearn_repeats, device,
                        sk_warm=args.sklearn_warm)
        ours = _median(pr["ours_s"])
        line = (f"linear probe  {pr['n_train']} train / {pr['n_test']} test x {pr['dim']}-d random-init features, "
                f"{pr['grid_points']}-point L2 search + refit:  bench.eval.probe {ours:.2f} s, {_median(pr['ours_cpu_s']):.2f} "
                f"CPU-s (top-1 {pr['ours_top1']:.2f})")
        report.update(probe=pr)
        if "sklearn_s" in pr:
            sk = _median(pr["sklearn_s"])
            cpu_speedup = _median(pr["sklearn_cpu_s"]) / _median(pr["ours_cpu_s"])
            line += (f"\n              sklearn LogisticRegression(lbfgs), same search {sk:.2f} s, "
                     f"{_median(pr['sklearn_cpu_s']):.2f} CPU-s (top-1 {pr['sklearn_top1']:.2f})  speedup {sk / ours:.1f}x "
                     f"(CPU time {cpu_speedup:.1f}x)  |dacc| {abs(pr['sklearn_top1'] - pr['ours_top1']):.2f} points")
            report.update(probe_speedup=sk / ours, probe_speedup_cpu=cpu_speedup,
                          probe_acc_diff=abs(pr["sklearn_top1"] - pr["ours_top1"]))
        if "sklearn_warm_s" in pr:
            skw = _median(pr["sklearn_warm_s"])
            line += (f"\n              sklearn warm-started along the grid, strongest first {skw:.2f} s, "
                     f"{_median(pr['sklearn_warm_cpu_s']):.2f} CPU-s (top-1 {pr['sklearn_warm_top1']:.2f})  "
                     f"speedup {skw / ours:.1f}x")
            report["probe_speedup_warm"] = skw / ours
        print(line, flush=True)
        kn = time_knn(ftr, ytr, fte, yte, k, suite.eval, args.repeats, device)
        ko, kb = min(kn["ours_s"]), min(kn["bare_s"])
        print(f"kNN           k={kn['k']}, {len(ftr)} bank x {len(fte)} queries:  bench.eval.knn.knn_top1 {ko * 1e3:.1f} ms "
              f"(top-1 {kn['top1']:.2f})  bare matmul+topk {kb * 1e3:.1f} ms  ratio {ko / kb:.2f} (minimum of "
              f"{len(kn['ours_s'])}; medians {_median(kn['ours_s']) * 1e3:.1f} / {_median(kn['bare_s']) * 1e3:.1f} ms)")
        report.update(knn=kn, knn_ratio=ko / kb)

    if args.epoch_time or args.all_methods:
        names = methods.METHODS.names() if args.all_methods else [args.method]
        et = epoch_times(s, names, batch, args.steps, args.warmup, args.repeats, args.aug_impl)
        print(f"epoch time at {s.full_train_size} images of {suite.dataset} shape, batch {batch} "
              f"({s.full_train_size // batch} steps/epoch), {suite.train.epochs}-epoch schedule, "
              f"extrapolated from {args.steps} timed harness steps (median of {args.repeats}):")
        total = 0.0
        for r in et:
            if "error" in r:
                print(f"  {r['method']:8s} failed: {r['error']}")
                continue
            total += r["schedule_s"]
            print(f"  {r['method']:8s} {r['views']} views  {r['views_per_s']:9.1f} views/s  {r['step_s'] * 1e3:8.1f} ms/step  "
                  f"epoch {r['epoch_s']:8.1f} s  {suite.train.epochs} epochs {r['schedule_s'] / 3600:7.2f} h")
        print(f"  all {sum('error' not in r for r in et)} methods, {suite.train.epochs} epochs each, one seed: "
              f"{total / 3600:.2f} h")
        report.update(epoch_times=et, schedule_total_s=total)

    report["load_after"] = _load()
    print(f"targets (issue #6; defined for simclr on fmnist-ci, 2 CPU cores):  [{_load()}]")
    verdicts = []
    if "harness_vs_bare" in report:
        verdicts.append(("harness >= 0.9 x bare bound", report["harness_vs_bare"] >= TARGETS["harness_vs_bare"],
                         f"{report['harness_vs_bare']:.3f}"))
    if "harness_vs_plain" in report:
        verdicts.append(("harness >= 1.35 x plain lightly loop",
                         report["harness_vs_plain"] >= TARGETS["harness_vs_plain"], f"{report['harness_vs_plain']:.2f}x"))
    if "probe_speedup" in report:
        ok = report["probe_speedup"] >= TARGETS["probe_speedup"] and report["probe_acc_diff"] <= TARGETS["probe_acc_points"]
        verdicts.append(("linear probe >= 10x sklearn, accuracy within 0.5", ok,
                         f"{report['probe_speedup']:.1f}x, {report['probe_acc_diff']:.2f} points"))
    if "knn_ratio" in report:
        verdicts.append(("kNN <= 1.2 x bare matmul+topk", report["knn_ratio"] <= TARGETS["knn_vs_bare"],
                         f"{report['knn_ratio']:.2f}"))
    for name, ok, value in verdicts:
        print(f"  {_verdict(ok)}  {name:50s} {value}")
    if not verdicts:
        print("  (none measured in this run)")
    report["verdicts"] = {name: ok for name, ok, _ in verdicts}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0
