"""Augmentation ablation (issue #17): removing an augmentation really removes it from the views
(the Augment is built from the ablated config and its output inspected), which augmentations a
suite ablates, how the report recognises ablated runs, the invariance profile, bad input, and
`bench run --ablate aug` end to end on a tiny budget (heatmap, invariance profile, tables)."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench import ablation, cli
from bench.config import AugConfig
from bench.engine.augment import Augment
from bench.suites import SUITES, RunSpec, resolve
from methods.base import DataInfo

CIFAR = SUITES.get("cifar10-all").aug
QUICK = SUITES.get("quick").aug
N = 256  # views per check


def views(cfg: AugConfig, image: torch.Tensor, channels: int, seed: int = 0) -> torch.Tensor:
    """N views of one uint8 image (C,H,W) in [0, 1] (the pipeline's output before normalization)."""
    aug = Augment(cfg, image.shape[-1], channels, (0.0,) * channels, (1.0,) * channels)
    torch.manual_seed(seed)
    return aug(image.unsqueeze(0).expand(N, -1, -1, -1).contiguous())


def gradient(size: int = 32) -> torch.Tensor:
    """A gray image that gets brighter from left to right."""
    row = torch.linspace(30, 225, size).round().to(torch.uint8)
    return row.expand(3, size, size).contiguous()


def test_which_augmentations_each_suite_ablates():
    assert ablation.used(QUICK, 1) == ["crop", "jitter"]                 # no flip on digits; gray: no grayscale
    assert ablation.used(CIFAR, 3) == ["crop", "flip", "jitter", "grayscale"]  # no blur, no solarize at 32px
    assert ablation.used(SUITES.get("fmnist-ci").aug, 1) == ["crop", "flip", "jitter"]
    assert ablation.used(replace(CIFAR, blur_p=0.5, solarize_p=0.1), 3) == list(ablation.AUGMENTATIONS)
    byol_native = resolve(SUITES.get("cifar10-all"), RunSpec("cifar10-all", "byol", 0, "native"), {}).aug
    assert "solarize" in ablation.used(byol_native, 3)
    # one channel: jitter with only saturation/hue does nothing, so it is not ablated
    assert ablation.used(replace(QUICK, brightness=0.0, contrast=0.0), 1) == ["crop"]


def test_without_flip_no_view_is_a_mirror():
    img = gradient()
    slope = lambda v: (v[:, :, :, -4:].mean((1, 2, 3)) - v[:, :, :, :4].mean((1, 2, 3)))
    full = slope(views(CIFAR, img, 3))
    ablated = slope(views(ablation.without(CIFAR, "flip"), img, 3))
    assert (full < -1e-3).float().mean() > 0.3                           # the full pipeline mirrors about half
    assert (ablated >= -1e-6).all()                                      # crops, jitter and gray keep left < right
    assert (slope(views(ablation.alone(CIFAR, "flip"), img, 3)) < 0).all()  # alone: every view is the mirror


def test_without_jitter_colours_are_those_of_crop_only_views():
    gray = torch.full((3, 32, 32), 128, dtype=torch.uint8)              # crops, flips and grayscale leave it as it is
    clean = torch.full((3,), 128 / 255.0)
    pixel = lambda v: v.mean((2, 3))                                     # per-view colour
    full = pixel(views(CIFAR, gray, 3))
    ablated = pixel(views(ablation.without(CIFAR, "jitter"), gray, 3))
    crop_only = pixel(views(ablation.alone(CIFAR, "crop"), gray, 3))
    assert ((full - clean).abs().max(1).values > 0.02).float().mean() > 0.5   # jitter moved most views' colour
    assert torch.allclose(ablated, crop_only, atol=1e-5) and torch.allclose(ablated, clean.expand_as(ablated), atol=1e-5)
    # 1 channel (quick): the same, brightness and contrast only
    g1 = torch.full((1, 8, 8), 128, dtype=torch.uint8)
    assert torch.allclose(pixel(views(ablation.without(QUICK, "jitter"), g1, 1)), torch.tensor(128 / 255.0), atol=1e-5)
    assert (pixel(views(QUICK, g1, 1)) - 128 / 255.0).abs().max() > 0.05


def test_without_grayscale_no_view_loses_its_colour():
    rng = np.random.default_rng(0)
    colourful = torch.from_numpy(rng.integers(0, 256, (3, 32, 32)).astype(np.uint8))
    is_gray = lambda v: ((v[:, 0] - v[:, 1]).abs().amax((1, 2)) < 1e-6) & ((v[:, 1] - v[:, 2]).abs().amax((1, 2)) < 1e-6)
    assert 0.1 < is_gray(views(CIFAR, colourful, 3)).float().mean() < 0.35   # grayscale p=0.2
    assert not is_gray(views(ablation.without(CIFAR, "grayscale"), colourful, 3)).any()


def test_without_crop_every_view_is_the_whole_image():
    rng = np.random.default_rng(1)
    img = torch.from_numpy(rng.integers(90, 166, (1, 8, 8)).astype(np.uint8))  # jitter never clamps this range
    def corr(v: torch.Tensor) -> torch.Tensor:
        x = v.flatten(1) - v.flatten(1).mean(1, keepdim=True)
        y = img.float().flatten() - img.float().mean()
        return (x @ y) / (x.norm(dim=1) * y.norm())
    assert (corr(views(ablation.without(QUICK, "crop"), img, 1)) > 0.9999).all()   # jitter alone is affine
    assert (corr(views(QUICK, img, 1)) < 0.99).float().mean() > 0.8                  # crops move the pixels


def test_without_blur_or_solarize_none_is_applied():
    both = AugConfig(crop_scale_min=1.0, hflip_p=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.5, solarize_p=0.5)
    bright = torch.full((3, 32, 32), 204, dtype=torch.uint8)            # 0.8: solarize turns it into 0.2
    assert ((views(both, bright, 3) - 0.2).abs() < 1e-4).all((1, 2, 3)).float().mean() > 0.3
    assert ((views(ablation.without(both, "solarize"), bright, 3) - 0.8).abs() < 1e-4).all()
    checker = ((torch.arange(32).view(-1, 1) + torch.arange(32)) % 2 * 255).to(torch.uint8).expand(3, 32, 32)
    no_solar = ablation.without(both, "solarize")
    std = lambda v: v.std((1, 2, 3))
    assert (std(views(no_solar, checker.contiguous(), 3)) < 0.45).float().mean() > 0.3   # blurred: less contrast
    assert (std(views(ablation.without(no_solar, "blur"), checker.contiguous(), 3)) > 0.49).all()


def test_override_and_detect():
    sets = ablation.override({"aug": {"hflip_p": "0.3"}, "train": {"epochs": "2"}}, "flip")
    assert sets == {"aug": {"hflip_p": "0.0"}, "train": {"epochs": "2"}}   # the removal wins; the rest is kept
    suite = SUITES.get("cifar10-all")
    cfg = lambda method, seed, aug_sets: resolve(suite, RunSpec(suite.name, method, seed), aug_sets).to_json()
    full = [cfg("simclr", s, {}) for s in (0, 1)]
    no_flip = [cfg("simclr", s, ablation.override({}, "flip")) for s in (0, 1)]
    twice = cfg("simclr", 0, ablation.override(ablation.override({}, "flip"), "jitter"))
    other = cfg("simclr", 0, {"simclr": {"temperature": "0.2"}})
    byol_no_crop = cfg("byol", 0, ablation.override({}, "crop"))           # no full byol run beside it
    found = ablation.detect([*full, *no_flip, twice, other, byol_no_crop])
    assert found == {2: (0, "flip"), 3: (1, "flip")}                        # paired with the same seed's full run


def test_invariance_profile_of_a_flip_invariant_encoder():
    info = DataInfo(3, 16, 10, (0.5,) * 3, (0.25,) * 3)
    images = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (64, 3, 16, 16)).astype(np.uint8))
    pooled = lambda x: x.mean((2, 3)) + 10.0        # global average pooling: a mirror changes nothing
    prof = ablation.invariance_profile(pooled, images, CIFAR, info, torch.device("cpu"))
    assert set(prof) == {"crop", "flip", "jitter", "grayscale", ablation.FULL}
    assert prof["flip"] == pytest.approx(1.0, abs=1e-6)
    flat = lambda x: x.flatten(1)
    prof2 = ablation.invariance_profile(flat, images, CIFAR, info, torch.device("cpu"))
    assert prof2["flip"] < 0.5 and prof2 == ablation.invariance_profile(flat, images, CIFAR, info, torch.device("cpu"))


@pytest.mark.parametrize("args, needle", [
    (["--ablate", "foo"], "--ablate foo: choose one of: aug"),
    (["--ablate", "aug", "--methods", "pixels,random-init"], "none of the runs trains"),
    (["--ablate", "aug", "--methods", "simclr", "--shard", "0/2"], "cannot be combined with --shard"),
])
def test_bad_ablate_is_one_error_line(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    assert cli.main(["run", "--suite", "quick", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0]
    assert not out.exists()


FAST = ["--device", "cpu", "--threads", "1", "--epochs", "1", "--set", "train.train_subset=260",
        "--set", "eval.transfer=", "--set", "eval.label_fractions=", "--set", "eval.probe_grid_points=3",
        "--set", "eval.train_subset=300", "--set", "eval.test_subset=200", "--set", "eval.curve_every=0"]


@pytest.fixture(scope="module")
def ablated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ablate")
    assert cli.main(["run", "--suite", "quick", "--methods", "simclr", "--ablate", "aug", "--out", str(out), *FAST]) == 0
    return out


def test_ablate_aug_writes_heatmap_invariance_profile_and_tables(ablated):
    runs = sorted(p.name for p in (ablated / "runs").iterdir())
    assert len(runs) == 3                                                 # full, without crop, without jitter
    html = (ablated / "leaderboard.html").read_text()
    board = html[html.index("id='leaderboard'"):].split("</table>")[0]
    assert re.findall(r"<tr[^>]*data-method='([^']*)'", board) == ["simclr"]   # ablated runs are not leaderboard rows
    section = html[html.index("<section id='ablation'>"):].split("</section>")[0]
    assert re.search(r"alt='augmentation ablation heatmap' src='data:image/png;base64,[A-Za-z0-9+/=]{200,}'", section)
    assert re.search(r"alt='invariance profile' src='data:image/png;base64,[A-Za-z0-9+/=]{200,}'", section)
    assert "data-removed='crop'" in section and "data-removed='colour jitter'" in section
    table = pd.read_csv(ablated / "ablation.csv")
    assert sorted(set(table["removed"])) == ["crop", "jitter"] and set(table["metric"]) == {"knn_top1", "linear_top1"}
    full = pd.read_csv(ablated / "leaderboard.csv").set_index("method")
    runs_csv = pd.read_csv(ablated / "runs.csv")
    assert len(runs_csv) == 3                                              # every run, ablated ones included
    for _, r in table.iterrows():                                          # Δ = removed - full, from the stored runs
        assert r["delta"] == pytest.approx(r["ablated"] - r["full"])
        assert r["full"] == pytest.approx(full.at["simclr", r["metric"] + "_mean"])
        assert r["ablated"] in set(runs_csv[r["metric"]])
    inv = pd.read_csv(ablated / "invariance.csv")
    assert list(inv["augmentation"]) == ["crop", "jitter", "all"] and inv["mean"].between(-1, 1).all()
    md = (ablated / "leaderboard.md").read_text()
    assert "## Augmentation ablation" in md and "### Invariance profile" in md


def test_a_second_ablate_run_reuses_every_run_and_profile(ablated, capsys):
    stamps = {p: p.stat().st_mtime_ns for p in ablated.glob("runs/*/*.json")}
    assert cli.main(["run", "--suite", "quick", "--methods", "simclr", "--ablate", "aug", "--out", str(ablated), *FAST]) == 0
    err = capsys.readouterr().err
    assert err.count("complete, skipped") == 3 and "invariance profile [" not in err
    assert {p: p.stat().st_mtime_ns for p in ablated.glob("runs/*/*.json")} == stamps
