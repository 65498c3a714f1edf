"""torchrun: 2 CPU processes (gloo, SyncBatchNorm) train the same run as one process with the
same global batch, and a torchrun killed mid-run resumes from its checkpoint on every rank.

Why the comparison can be tight: each global batch holds the same images in the same order
(rank r takes rows [r*64, (r+1)*64) of it), every rank draws the augmentation parameters of the
whole global batch and keeps its rows, BatchNorm statistics are all-reduced over the global
batch (train.sync_bn=true), SimCLR gathers its negatives from every rank, and DDP averages the
gradients. In float64 one step of both agrees to ~1e-14 (test_ddp_step_equals_one_process_step);
in float32 what remains is summation order (all-reduce, per-rank partial sums, 1 vs 2 threads),
amplified by training. Stated tolerances after 4 float32 steps: the per-step loss within
rtol 1e-4 (observed ~5e-6); every weight tensor within 1% of its largest entry + 5e-4
(observed <= 0.3%: conv1, whose gradient is a large sum of cancelling terms). The accuracies are
not compared: they are the same evaluation code applied to those weights, and a bound loose
enough to survive flipped test images (200 images, 0.5 point each) tested nothing.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--device", "cpu", "--set", "train.train_subset=260", "--set", "eval.transfer=", "--set", "eval.label_fractions=",
        "--set", "eval.probe_grid_points=3", "--set", "eval.train_subset=300", "--set", "eval.test_subset=200"]
COMMON = ["run", "--suite", "quick", "--methods", "simclr", "--epochs", "2", "--no-download",
          "--set", "train.sync_bn=true", *FAST]

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


def _log(run_dir: Path) -> list[dict]:
    with open(run_dir / "train_log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _one_run(out: Path) -> Path:
    dirs = list((out / "runs").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def _descendants(pid: int) -> list[int]:
    """Child processes of `pid`, recursively (torchrun starts its workers in new sessions, so
    killing the agent's process group would leave them running)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _kill_tree(proc: subprocess.Popen) -> None:
    for pid in [proc.pid, *_descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def test_torchrun_two_processes_match_one_process_and_resume(tmp_path):
    # one thread per process (torchrun does the same for its workers): 2 shared cores
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    single_out, ddp_out = tmp_path / "single", tmp_path / "ddp"
    single = subprocess.Popen([sys.executable, "-m", "bench", *COMMON, "--set", "train.batch_size=128",
                               "--out", str(single_out)], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bench", *COMMON, "--set", "train.batch_size=64", "--out", str(ddp_out)]

    # kill the whole torchrun (agent + both workers) once the epoch-1 checkpoint exists
    victim = subprocess.Popen(ddp, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    ckpts = []
    while not ckpts and victim.poll() is None and time.monotonic() < deadline:
        ckpts = list(ddp_out.glob("runs/*/checkpoint.pt"))
        time.sleep(0.02)
    _kill_tree(victim)
    assert ckpts, "torchrun finished or timed out before the first checkpoint"
    killed_at = torch.load(ckpts[0], weights_only=True)["epoch"]

    resumed = subprocess.run(ddp, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "torchrun: 2 processes (gloo); global batch = 64 per process x 2 = 128; sync_bn=True" in resumed.stderr
    assert single.wait(timeout=300) == 0, single.stderr.read()[-3000:]

    d_dir, s_dir = _one_run(ddp_out), _one_run(single_out)
    d, s = (json.loads((p / "result.json").read_text()) for p in (d_dir, s_dir))
    assert d["status"] == s["status"] == "ok"
    assert d["train"]["resumed_from_epoch"] == killed_at
    assert d["train"]["global_batch_size"] == s["train"]["global_batch_size"] == 128
    assert d["train"]["lr"] == s["train"]["lr"]
    # only rank 0 wrote: one run directory, no leftovers of a second writer
    assert sorted(p.name for p in d_dir.iterdir() if not p.name.startswith(".lock")) == \
        ["checkpoint.pt", "predictions.npz", "result.json", "train_log.csv"]

    d_log, s_log = _log(d_dir), _log(s_dir)
    assert [int(r["step"]) for r in d_log] == [int(r["step"]) for r in s_log] == [1, 2, 3, 4]
    for a, b in zip(d_log, s_log):
        assert float(a["lr"]) == pytest.approx(float(b["lr"]), rel=1e-12)
        assert float(a["loss"]) == pytest.approx(float(b["loss"]), rel=1e-4)

    d_w = torch.load(d_dir / "checkpoint.pt", weights_only=True)["model"]
    s_w = torch.load(s_dir / "checkpoint.pt", weights_only=True)["model"]
    assert d_w.keys() == s_w.keys()  # SyncBatchNorm conversion keeps the state_dict keys
    for k in s_w:
        if s_w[k].is_floating_point():
            assert (d_w[k] - s_w[k]).abs().max() <= 1e-2 * s_w[k].abs().max() + 5e-4, k
        else:
            assert torch.equal(d_w[k], s_w[k]), k
    # No bound on the metrics: they are the same evaluation code applied to the weights compared
    # above, and on this run's 200 test images a 5-point bound held whatever the training did.
    assert d["metrics"].keys() == s["metrics"].keys()


def test_global_batch_augmentation_slices_match_one_process():
    """The per-rank augmentation equals the matching rows of one process's global-batch views."""
    from bench.engine import augment
    from bench.engine.augment import Augment, AugConfig
    from bench.engine.distributed import global_batch_augmentation

    impls = [{"impl": i} for i in getattr(augment, "IMPLS", ())] or [{}]
    for channels, kw in [(c, kw) for c in (1, 3) for kw in impls]:
        aug = Augment(AugConfig(crop_scale_min=0.3, blur_p=0.5, solarize_p=0.3), 16, channels,
                      (0.5,) * channels, (0.25,) * channels, **kw)
        x = torch.randint(0, 256, (12, channels, 16, 16), dtype=torch.uint8)
        torch.manual_seed(7)
        whole = [aug(x), aug(x)]
        for rank in range(3):
            torch.manual_seed(7)
            with global_batch_augmentation(aug, 3, rank):
                part = [aug(x[rank * 4:(rank + 1) * 4]) for _ in range(2)]
            for view in range(2):
                torch.testing.assert_close(part[view], whole[view][rank * 4:(rank + 1) * 4], rtol=0, atol=1e-6)
        assert "forward_parameters" not in vars(aug.rrc)  # patched only inside the block


# ---- one step in float64: DDP (2 ranks, GlobalBatchNorm, gathered NT-Xent) == one process -----
def _simclr64():
    import methods
    from bench.backbones import BACKBONES
    from methods.base import DataInfo
    torch.manual_seed(0)
    cls = methods.get("simclr")
    net = cls(cls.Config(), BACKBONES.get("resnet-tiny-s1").build(1, 8), DataInfo(1, 8, 10, (0.5,), (0.25,)))
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(16, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    return net.double(), views


@contextlib.contextmanager
def _process_group(rank: int, world: int, port: int):
    """A gloo process group of `world` CPU processes (one thread each), and the DDP wrapper the
    training loop uses (SyncBatchNorm on)."""
    import torch.distributed as dist
    from bench.suites import TrainConfig
    from bench.engine.train_ddp import ddp_wrapper
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield ddp_wrapper(TrainConfig(sync_bn=True), torch.device("cpu"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_step(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    with _process_group(rank, world, port) as wrap:
        net, views = _simclr64()
        model = wrap(net)
        b = views[0].shape[0] // world
        loss, _ = model([v[rank * b:(rank + 1) * b] for v in views], None)
        loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total)
        if rank == 0:
            torch.save({"loss": total / world, "grads": {n: p.grad for n, p in net.named_parameters()},
                        "buffers": dict(net.named_buffers())}, out)


def test_ddp_step_equals_one_process_step(tmp_path):
    import torch.multiprocessing as mp
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_ddp_step, args=(2, _free_port(), out), nprocs=2)
    got = torch.load(out, weights_only=True)

    net, views = _simclr64()
    loss, _ = net.training_step(views, None)
    loss.backward()
    assert abs(got["loss"].item() - loss.item()) < 1e-12
    for n, p in net.named_parameters():
        torch.testing.assert_close(got["grads"][n], p.grad, rtol=1e-9, atol=1e-12, msg=n)
    bn = [n for n, _ in net.named_buffers() if n.rsplit(".", 1)[-1] in ("running_mean", "running_var")]
    assert len(bn) > 10
    for n in bn:  # running statistics of the global batch
        torch.testing.assert_close(got["buffers"][n], net.get_buffer(n), rtol=1e-9, atol=1e-12, msg=n)


def _aae64():
    import methods
    from bench.backbones import BACKBONES
    from methods.base import DataInfo
    torch.manual_seed(0)
    cls = methods.get("aae")
    cfg = cls.Config(latent_dim=16, disc_hidden=32)
    net = cls(cfg, BACKBONES.get("resnet-tiny-s1").build(1, 8), DataInfo(1, 8, 10, (0.5,), (0.25,))).double()
    # the adversarial Adams were built on float32 parameters: rebuild them on the float64 ones
    net.disc_opt = torch.optim.Adam(net.discriminator.parameters(), lr=cfg.disc_lr, betas=(cfg.adv_beta1, 0.999))
    net.gen_opt = torch.optim.Adam(net.encoder_parameters(), lr=cfg.gen_lr, betas=(cfg.adv_beta1, 0.999))
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(16, 1, 8, 8, generator=g, dtype=torch.float64) for _ in range(2)]
    return net, batches


def _aae_steps(net, batches, model, rank: int, world: int) -> dict:
    """Two full AAE steps as the training loop makes them: the harness optimizer on the
    reconstruction (through `model`, DDP or not), then the method's regularization phase."""
    from bench.engine.train import build_optimizer
    optimizer = build_optimizer(net, net.optim, 1e-3)
    torch.manual_seed(2)  # the prior draws
    logs = []
    for x in batches:
        b = x.shape[0] // world
        views = [x[rank * b:(rank + 1) * b]]
        loss, _ = model(views, None) if model is not net else net.training_step(views, None)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        logs.append(net.after_optimizer_step(views, None))
    return {"weights": {n: p.detach().clone() for n, p in net.named_parameters()}, "logs": logs}


def _ddp_aae(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist
    with _process_group(rank, world, port) as wrap:
        net, batches = _aae64()
        got = _aae_steps(net, batches, wrap(net), rank, world)
        for log in got["logs"]:  # per-rank terms: average them, as the training loop logs them
            for v in log.values():
                dist.all_reduce(v)
                v.div_(world)
        if rank == 0:
            torch.save(got, out)


def test_ddp_aae_regularization_phase_equals_one_process(tmp_path):
    """The AAE's own optimizers under torchrun: two ranks (each half of the batch, SyncBatchNorm,
    gradients of both adversarial steps averaged by hand, prior samples sliced from the global
    batch's draws) give the weights one process gives on the whole batch (float64)."""
    import torch.multiprocessing as mp
    out = str(tmp_path / "ddp-aae.pt")
    mp.spawn(_ddp_aae, args=(2, _free_port(), out), nprocs=2)
    got = torch.load(out, weights_only=True)
    net, batches = _aae64()
    want = _aae_steps(net, batches, net, 0, 1)
    for (a, b) in zip(got["logs"], want["logs"]):
        for k in ("adv_d", "adv_g"):
            torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-12, msg=k)
    assert set(got["weights"]) == set(want["weights"])
    for n, w in want["weights"].items():
        torch.testing.assert_close(got["weights"][n].double(), w, rtol=1e-7, atol=1e-9, msg=n)
