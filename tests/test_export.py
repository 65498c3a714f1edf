"""`bench export RUN_DIR --out backbone.pt`: the trained backbone of a real (tiny) run as a plain
timm state_dict whose features equal the harness's `encode` after loading the run's checkpoint;
the printed load lines work; MAE on a ViT exports its trained encoder; refusals are one line.

Tiny budget: the quick suite's digits, one epoch on 64 images, a 100-image kNN bank and 50
queries, no transfer or learning curve, trained in-process on the CPU (not registered in
SUITES: the stored run carries its config, and export needs no suite).
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import timm
import torch

from bench import backbones
from bench.cli import main
from bench.cli.export import BACKBONE_PREFIX, backbone_state
from bench.config import RunSpec
from bench.engine.augment import normalize
from bench.engine.data import SuiteData
from bench.engine.execute import build_method
from bench.engine.runner import Options, run_suite
from bench.engine.train import CHECKPOINT, load_checkpoint
from bench.results import store
from bench.suites import SUITES

CPU = torch.device("cpu")


def tiny_suite(backbone: str, image_size: int):
    quick = SUITES.get("quick")
    return replace(quick, name="export-test", backbone=backbone, image_size=image_size,
                   train=replace(quick.train, epochs=1, batch_size=32, warmup_epochs=0, train_subset=64),
                   eval=replace(quick.eval, train_subset=100, test_subset=50, transfer=(), curve_every=0,
                                knn_k=10, knn_k_small=5, label_fractions=()))


def train_run(out: Path, backbone: str, method: str, image_size: int = 8):
    """(run directory, record) of one finished tiny run of `method` on `backbone`."""
    suite = tiny_suite(backbone, image_size)
    (record,) = run_suite(suite, [RunSpec(suite.name, method, 0)], Options(out=out, device="cpu", download=False))
    assert record.ok, record.reason
    return out / "runs" / record.run_id, record


def trained_method(run_dir: Path, record):
    """The harness's method of the run with its final checkpoint loaded, in eval mode; and its images."""
    run = record.config
    data = SuiteData(tiny_suite(run.backbone, run.image_size), None, False, CPU)
    method = build_method(run, data.info, CPU)
    method.load_state_dict(load_checkpoint(run_dir / CHECKPOINT, record.spec_hash)["model"])
    x = normalize(data.main.test.images[:16], data.info.mean, data.info.std)  # as the evaluation feeds encode
    return method.eval(), x


def export(capsys, run_dir: Path, out: Path, *extra: str) -> tuple[list[str], dict]:
    """(the printed load lines, backbone.json) of a successful export."""
    capsys.readouterr()  # what training printed
    assert main(["export", str(run_dir), "--out", str(out), *extra]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(f"wrote {out} ")
    return printed[1:], json.loads(out.with_suffix(".json").read_text())


def run_lines(lines: list[str]) -> torch.nn.Module:
    """The net the printed lines build and load (eval mode)."""
    scope: dict = {}
    exec("\n".join(lines), scope)  # noqa: S102: the command's own output
    return scope["net"].eval()


@pytest.fixture(scope="module")
def simclr_timm(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("simclr-timm"), "timm:resnet10t", "simclr")


def test_timm_backbone_exports_under_timm_keys_and_same_features(simclr_timm, tmp_path, capsys):
    run_dir, record = simclr_timm
    out = tmp_path / "backbone.pt"
    lines, meta = export(capsys, run_dir, out)
    assert lines == ["import timm, torch",
                     "net = timm.create_model('resnet10t', pretrained=False, num_classes=0, in_chans=1)",
                     f"net.load_state_dict(torch.load({str(out)!r}))"]
    assert meta == {**meta, "timm_model": "resnet10t", "in_chans": 1, "image_size": 8, "stem": None,
                    "backbone": "timm:resnet10t", "run_id": record.run_id, "suite": "export-test",
                    "method": "simclr", "load": lines}
    state = torch.load(out)  # a plain state_dict of tensors (weights_only loading)
    assert not any(k.startswith("backbone.") for k in state)
    net = timm.create_model("resnet10t", num_classes=0, in_chans=1)
    net.load_state_dict(state)  # strict
    method, x = trained_method(run_dir, record)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), method.encode(x))
        torch.testing.assert_close(run_lines(lines)(x), method.encode(x))
        # trained, not the initialisation: the exported weights differ from a fresh seed-0 build
        torch.manual_seed(0)
        fresh = backbones.get("timm:resnet10t").build(1, 8).net.state_dict()
        assert not torch.equal(fresh["conv1.0.weight"], state["conv1.0.weight"])


def test_resnet_tiny_prints_the_harness_builder(tmp_path, capsys):
    run_dir, record = train_run(tmp_path / "runs", "resnet-tiny", "byol")
    out = tmp_path / "tiny.pt"
    lines, meta = export(capsys, run_dir, out)
    assert lines == ["import torch, bench.backbones",
                     "net = bench.backbones.get('resnet-tiny').build(1, 8).net",
                     f"net.load_state_dict(torch.load({str(out)!r}))"]
    assert (meta["timm_model"], meta["stem"], meta["in_chans"], meta["backbone"]) == (None, "s2", 1, "resnet-tiny")
    method, x = trained_method(run_dir, record)
    with torch.no_grad():  # the online backbone, not BYOL's momentum copy
        torch.testing.assert_close(run_lines(lines)(x), method.encode(x))


def test_small_stem_prints_the_stem_replacement(tmp_path, capsys):
    run_dir, record = train_run(tmp_path / "runs", "timm:resnet10t@s1", "vicreg")
    lines, meta = export(capsys, run_dir, tmp_path / "s1.pt")
    assert meta["stem"] == "s1" and meta["timm_model"] == "resnet10t"
    assert lines[2] == ("net.conv1, net.maxpool = torch.nn.Conv2d(1, 64, 3, stride=1, padding=1, bias=False), "
                        "torch.nn.Identity()  # the @s1 stem")
    method, x = trained_method(run_dir, record)
    with torch.no_grad():
        torch.testing.assert_close(run_lines(lines)(x), method.encode(x))


def test_mae_on_a_timm_vit_exports_the_trained_encoder(tmp_path, capsys):
    run_dir, record = train_run(tmp_path / "runs", "timm:vit_tiny_patch16_224", "mae", image_size=32)
    model_state = load_checkpoint(run_dir / CHECKPOINT, record.spec_hash)["model"]
    # lightly's MaskedVisionTransformerTIMM trains the backbone's own tensors (encoder.vit.* = backbone.net.*)
    vit_keys = [k for k in model_state if k.startswith("encoder.vit.")]
    assert vit_keys and all(torch.equal(model_state[k], model_state[BACKBONE_PREFIX + k[len("encoder.vit."):]])
                            for k in vit_keys)
    out = tmp_path / "vit.pt"
    lines, meta = export(capsys, run_dir, out)
    assert lines[1] == ("net = timm.create_model('vit_tiny_patch16_224', pretrained=False, num_classes=0, "
                        "in_chans=1, img_size=32)")
    assert (meta["kind"], meta["patch_size"], meta["image_size"]) == ("vit", 16, 32)
    net = timm.create_model("vit_tiny_patch16_224", num_classes=0, in_chans=1, img_size=32)
    net.load_state_dict(torch.load(out))
    method, x = trained_method(run_dir, record)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), method.encode(x))
        torch.manual_seed(0)
        fresh = backbones.get("timm:vit_tiny_patch16_224").build(1, 32).net.state_dict()
        assert not torch.equal(fresh["blocks.0.attn.qkv.weight"], torch.load(out)["blocks.0.attn.qkv.weight"])


def test_backbone_keys_of_every_method():
    """Every method keeps its trained backbone under backbone.net (heads, decoders, the AAE's
    discriminator, BYOL's momentum copy are elsewhere): the exported keys are exactly the net's."""
    import methods
    from methods.base import DataInfo
    info = DataInfo(1, 8, 10, (0.5,), (0.25,))
    for name in [*methods.METHODS.names(), "supervised", "random-init"]:
        cls = methods.get(name)
        net_keys = set(backbones.get("resnet-tiny-s1").build(1, 8).net.state_dict())
        method = cls(cls.Config(), backbones.get("resnet-tiny-s1").build(1, 8), info)
        assert set(backbone_state(method.state_dict(), name)) == net_keys, name


def one_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_refusals_are_one_line_and_write_nothing(simclr_timm, tmp_path, capsys):
    run_dir, _ = simclr_timm
    out = tmp_path / "b.pt"
    assert "no result.json in" in one_error(capsys, ["export", str(tmp_path), "--out", str(out)])

    out.write_bytes(b"keep")  # an existing --out is kept unless --force
    assert "exists; choose another --out or pass --force" in one_error(
        capsys, ["export", str(run_dir), "--out", str(out)])
    assert out.read_bytes() == b"keep" and not out.with_suffix(".json").exists()
    export(capsys, run_dir, out, "--force")
    assert torch.load(out)

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / CHECKPOINT).unlink()
    fresh = tmp_path / "fresh.pt"
    assert f"no {CHECKPOINT} in" in one_error(capsys, ["export", str(copy), "--out", str(fresh)])
    record = store.read_result(run_dir)
    record.status, record.reason = "diverged", "non-finite loss (nan) at step 3 (epoch 0)"
    store.write_result(copy, record)
    assert "has status 'diverged'" in one_error(capsys, ["export", str(copy), "--out", str(fresh)])
    assert not fresh.exists() and not fresh.with_suffix(".json").exists()
