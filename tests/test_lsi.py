"""Latent space interpolation suites (bench/lsi): pairing, labels, mixup, the AAE's prior field,
the uniform prior's codes, the generator's data, its cache, the report and `bench check`.

Two tiny suites are registered for the module and removed after it: `lsi-test` (digits 8px,
the two AAEs with a 2-d code, trained once for the module) and `lsi-test-check` (one epoch of
everything: a `bench run` + `bench check` round trip in seconds).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import cli
from bench.config import AugConfig, TrainConfig
from bench.engine.augment import normalize
from bench.errors import UserError
from bench.lsi import generators, mixing, runner
from bench.lsi.classifier import Classifier, row_config
from bench.eval.evaluate import label_subset
from bench.lsi.data import LSIData
from bench.lsi.suites import LSI_SUITES, LSIConfig, LSISuite

KS = "lsi-test"
CHECK = "lsi-test-check"


@pytest.fixture(scope="module", autouse=True)
def _suites_and_one_thread():
    """Register the two test suites (restored after the module) and train on one thread: the
    tiny runs are latency-bound, and one thread keeps them fast on a loaded 2-core machine."""
    before_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    snapshot = LSI_SUITES.snapshot()
    base = dict(dataset="digits", backbone="resnet-tiny-s1", image_size=8, aug=AugConfig(crop_scale_min=0.4, hflip_p=0.0))
    LSI_SUITES.register(KS, LSISuite(
        name=KS, description="tests only", **base,
        train=TrainConfig(epochs=1, batch_size=128, warmup_epochs=0),
        generator_train=TrainConfig(epochs=6, batch_size=32, warmup_epochs=1), generator_lr=1e-3,
        lsi=LSIConfig(latent_dim=2, label_fractions=(1.0,), hole_pairs=128, grid_pairs=2, grid_steps=5),
        rows=("standard", "lsi-uniform", "lsi-gaussian")))
    LSI_SUITES.register(CHECK, LSISuite(
        name=CHECK, description="tests only", **base,
        train=TrainConfig(epochs=1, batch_size=64, warmup_epochs=0),
        generator_train=TrainConfig(epochs=1, batch_size=64, warmup_epochs=0),
        lsi=LSIConfig(latent_dim=4, label_fractions=(1.0, 0.1), hole_pairs=64, grid_pairs=1, grid_steps=3),
        train_subset=320, rows=("none", "lsi-uniform"), tolerance=2.0))
    yield
    LSI_SUITES.restore(snapshot)
    torch.set_num_threads(before_threads)


# ----------------------------------------------------------------------------- mixing

def test_pairs_are_inter_class_and_same_class_partners_are_redrawn():
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 2, 3] * 4)
    for _ in range(50):
        i, j = mixing.inter_class_pairs(labels, len(labels))
        assert len(i) == len(labels)              # nothing dropped: every class has partners elsewhere
        assert bool((labels[i] != labels[j]).all())
        assert torch.equal(i, torch.arange(len(labels)))
    i, j = mixing.inter_class_pairs(labels, 2 * len(labels))  # r = 2: the batch twice, two permutations
    assert len(i) == 2 * len(labels) and bool((labels[i] != labels[j]).all())
    i, j = mixing.inter_class_pairs(torch.zeros(8, dtype=torch.long), 8)  # one class: no pair exists
    assert len(i) == 0


class _Linear:
    """A stub generator whose code is the image itself: decoding z_lam gives back lam*x_i + (1-lam)*x_j."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.view(-1, 1, 4, 4)


def test_lsi_labels_are_lambda_weighted_two_hot():
    torch.manual_seed(1)
    b, k = 32, 5
    x = torch.randn(b, 1, 4, 4, dtype=torch.float64)
    labels = torch.randint(0, k, (b,))
    generated, targets, i, j = mixing.lsi(x, labels, k, _Linear(), ratio=1.0, lam_kind="uniform")
    assert len(i) == b and bool((labels[i] != labels[j]).all())
    # recover each pair's lambda from the decoded image (least squares on x_i - x_j)
    a, c = x[i].flatten(1), x[j].flatten(1)
    lam = ((generated.flatten(1) - c) * (a - c)).sum(1) / ((a - c) ** 2).sum(1)
    expected = lam.unsqueeze(1) * torch.eye(k, dtype=torch.float64)[labels[i]] \
        + (1 - lam.unsqueeze(1)) * torch.eye(k, dtype=torch.float64)[labels[j]]
    assert torch.allclose(targets.double(), expected, atol=1e-5)
    assert torch.allclose(targets.sum(1), torch.ones(b))
    assert float(lam.min()) >= 0 and float(lam.max()) <= 1 and float(lam.std()) > 0.1  # U(0, 1), one per pair
    _, half, _, _ = mixing.lsi(x, labels, k, _Linear(), ratio=0.5, lam_kind="half")
    assert half.shape[0] == b // 2 and set(half.unique().tolist()) == {0.0, 0.5}  # the plain two-hot label


def test_soft_cross_entropy_is_the_lambda_weighted_sum_of_two_cross_entropies():
    torch.manual_seed(2)
    logits, yi, yj, lam = torch.randn(6, 4), torch.tensor([0, 1, 2, 3, 0, 1]), torch.tensor([1, 2, 3, 0, 2, 3]), torch.rand(6)
    q = mixing.soft_targets(yi, yj, lam, 4)
    ce = torch.nn.functional.cross_entropy
    manual = (lam * ce(logits, yi, reduction="none") + (1 - lam) * ce(logits, yj, reduction="none")).mean()
    assert torch.allclose(mixing.soft_cross_entropy(logits, q), manual, atol=1e-6)


def test_mixup_mixes_images_and_labels_with_one_beta_lambda():
    b, k = 16, 4
    x = torch.eye(b).view(b, 1, b, 1)  # image m is the m-th unit vector: mixing is readable off the pixels
    labels = torch.arange(b) % k
    torch.manual_seed(3)
    mixed, targets = mixing.mixup(x, labels, k, alpha=1.0)
    flat = mixed.view(b, b)
    lam = None
    for m in range(b):
        others = [c for c in flat[m].nonzero().flatten().tolist() if c != m]
        j = others[0] if others else m
        lam_m = float(flat[m, m]) if others else 1.0
        if others:
            assert lam is None or abs(lam_m - lam) < 1e-6  # one lambda for the whole batch
            lam = lam_m
        expected = lam_m * torch.eye(k)[labels[m]] + (1 - lam_m) * torch.eye(k)[labels[j]]
        assert torch.allclose(targets[m], expected, atol=1e-6)


def test_label_subsets_are_class_balanced_with_a_minimum_per_class():
    labels = torch.arange(10).repeat_interleave(143)
    idx = label_subset(labels, 0.1, seed=0, min_per_class=2)
    assert torch.bincount(labels[idx]).tolist() == [14] * 10
    idx = label_subset(labels, 0.01, seed=0, min_per_class=2)  # 1.43 per class would round to 1: the minimum 2 holds
    assert torch.bincount(labels[idx]).tolist() == [2] * 10
    assert not torch.equal(idx, label_subset(labels, 0.01, seed=1, min_per_class=2))  # seeded by the run seed
    assert len(label_subset(labels, 1.0, seed=0, min_per_class=2)) == len(labels)


# ----------------------------------------------------------------------------- the AAE's prior

def test_aae_prior_field_keeps_the_default_and_switches_squash_and_prior():
    from bench import backbones
    from methods.aae import AAE, AAEConfig
    from methods.base import DataInfo
    info = DataInfo(1, 8, 10, (0.5,), (0.25,))
    assert AAEConfig().prior == "uniform"

    def build(cfg):
        torch.manual_seed(0)
        return AAE(cfg, backbones.get("resnet-tiny-s1").build(1, 8), info)
    uni, gau = build(AAEConfig(latent_dim=4)), build(AAEConfig(latent_dim=4, prior="gaussian"))
    assert isinstance(uni.head[-1], torch.nn.Tanh) and isinstance(gau.head[-1], torch.nn.Identity)
    for (n, a), (_, b) in zip(uni.state_dict().items(), gau.state_dict().items()):  # same init either way
        assert n == "_extra_state" or torch.equal(a, b)
    with pytest.raises(UserError, match="prior"):
        build(AAEConfig(prior="laplace"))
    # the field is stored only when not the default: AAE runs made before it existed keep their run ids
    from bench.config import RunSpec
    from bench.suites import SUITES, resolve
    default = resolve(SUITES.get("fmnist-ci"), RunSpec("fmnist-ci", "aae", 0, "shared"), {})
    gaussian = resolve(SUITES.get("fmnist-ci"), RunSpec("fmnist-ci", "aae", 0, "shared"), {"aae": {"prior": "gaussian"}})
    assert "prior" not in default.to_json()["method_config"] and default.method_config.prior == "uniform"
    assert default.run_id == "aae-s0-1ca69b00b0"  # its id before the field was added (git 96d0ddf)
    assert gaussian.to_json()["method_config"]["prior"] == "gaussian" and gaussian.run_id != default.run_id


@pytest.fixture(scope="module")
def ks_run(tmp_path_factory):
    """The `lsi-test` suite run once (2 seeds), recording every image a generator trained on."""
    out = tmp_path_factory.mktemp("lsi-test")
    seen = []
    real_train = generators.train

    def spy(method, images, labels, *a, **k):
        seen.append((images.clone(), labels.clone()))
        return real_train(method, images, labels, *a, **k)
    generators.train = spy
    try:
        records = runner.run_lsi_suite(LSI_SUITES.get(KS), runner.LSIOptions(out=out, seeds=2, device="cpu",
                                                                             download=False))
    finally:
        generators.train = real_train
    assert all(r["status"] == "ok" for r in records), [r.get("reason") for r in records]
    return out, seen, records


def _codes(out: Path, kind: str) -> np.ndarray:
    suite = LSI_SUITES.get(KS)
    data = LSIData(suite, None, False, torch.device("cpu"))
    g = generators.prepare(suite, kind, data, out, torch.device("cpu"))
    assert g.record["cached"]
    return g.codec.encode(normalize(data.train.images, data.info.mean, data.info.std)).numpy()


def test_uniform_prior_codes_pass_a_uniformity_test_that_gaussian_prior_codes_fail(ks_run):
    from scipy.stats import kstest
    out, _, _ = ks_run
    # every 10th train image (144 codes; the discriminator judged batches of 32): a KS test per dimension
    # against U(-1, 1), Bonferroni over the dimensions. After 264 steps the adversarial match is close, not
    # exact: 1,438 codes would show its remaining ripples (measured p 0.003-0.25 over 6-8 epochs)
    uniform, gaussian = _codes(out, "aae-uniform")[::10], _codes(out, "aae-gaussian")[::10]
    alpha = 0.01 / uniform.shape[1]
    p_uniform = [kstest(uniform[:, d], "uniform", args=(-1, 2)).pvalue for d in range(uniform.shape[1])]
    p_gaussian = [kstest(gaussian[:, d], "uniform", args=(-1, 2)).pvalue for d in range(gaussian.shape[1])]
    assert min(p_uniform) > alpha, p_uniform
    assert max(p_gaussian) < alpha, p_gaussian
    assert np.abs(uniform).max() <= 1.0 and np.abs(gaussian).max() > 1.0  # squashed vs not


def test_the_generators_train_on_exactly_the_train_split_without_labels(ks_run):
    out, seen, _ = ks_run
    suite = LSI_SUITES.get(KS)
    data = LSIData(suite, None, False, torch.device("cpu"))
    assert len(seen) == len(suite.generators) == 2
    for images, labels in seen:
        assert torch.equal(images, data.train.images)
        assert bool((labels == -1).all())  # no label reaches a generator
    # and no test image is among them (digits has no exact duplicates across its split)
    train_rows = {bytes(r) for r in data.train.images.flatten(1).numpy()}
    assert not any(bytes(r) in train_rows for r in data.test.images.flatten(1).numpy())


def test_a_second_run_reuses_the_cached_generators_and_runs(ks_run, monkeypatch, capsys):
    out, _, first = ks_run
    before = {p: p.stat().st_mtime_ns for p in out.glob("generators/*/checkpoint.pt")}

    def no_training(*a, **k):
        raise AssertionError("trained again")
    monkeypatch.setattr(generators, "train", no_training)
    monkeypatch.setattr(runner, "train", no_training)
    again = runner.run_lsi_suite(LSI_SUITES.get(KS), runner.LSIOptions(out=out, seeds=2, device="cpu", download=False))
    assert [r["metrics"] for r in again] == [r["metrics"] for r in first]
    assert {p: p.stat().st_mtime_ns for p in out.glob("generators/*/checkpoint.pt")} == before
    err = capsys.readouterr().err
    assert err.count(": cached (") == 2 and err.count("complete, skipped") == len(first)
    summary = json.loads((out / "lsi.json").read_text())
    assert all(g["train_s"] > 0 and g["cached"] for g in summary["generators"].values())


def test_the_leaderboard_has_every_cell_the_costs_holes_and_pictures(ks_run):
    from bench.lsi import report
    out, _, _ = ks_run
    html = report.write_report(out).read_text()
    for row in LSI_SUITES.get(KS).rows:
        assert f"data-row='{row}'" in html
    assert html.count("(n=2)") == 3 and "±" in html
    assert html.count("data:image/png;base64,") == 2
    assert "critic acc." in html and "data-generator='aae-gaussian'" in html
    md = (out / "leaderboard.md").read_text()
    assert "interp-aae-uniform.png" in md and "## Generators" in md
    csv = (out / "leaderboard.csv").read_text().splitlines()
    assert csv[0].startswith("row,title,label_fraction") and len(csv) == 4


def test_a_classifier_batch_holds_b_real_plus_r_b_generated_images():
    from bench import backbones
    from methods.base import DataInfo
    info = DataInfo(1, 4, 3, (0.0,), (1.0,))
    cfg = row_config("lsi-uniform", 0.5, "uniform", 1.0)
    model = Classifier(cfg, backbones.get("resnet-tiny-s1").build(1, 4), info, _Linear())
    torch.manual_seed(0)
    x, labels = torch.randn(8, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    batch, targets = model.batch(x, labels)
    assert batch.shape[0] == 12 and torch.equal(batch[:8], x)
    assert torch.equal(targets[:8], torch.eye(3)[labels])

    class Codec(torch.nn.Module):  # a generator WITH parameters: none of them may reach the optimizer
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(16, 16)

        def encode(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x.flatten(1))

        def decode(self, z: torch.Tensor) -> torch.Tensor:
            return z.view(-1, 1, 4, 4)
    codec = Codec()
    with_codec = Classifier(cfg, backbones.get("resnet-tiny-s1").build(1, 4), info, codec)
    generator_params = {id(p) for p in codec.parameters()}
    assert generator_params and not generator_params & {id(p) for p in with_codec.parameters()}
    assert len(list(with_codec.parameters())) == len(list(model.parameters()))


# ----------------------------------------------------------------------------- CLI and check

def test_run_refuses_options_that_do_not_apply(capsys):
    for extra in (["--methods", "simclr"], ["--set", "train.epochs=1"], ["--aug", "native"], ["--shard", "0/2"]):
        assert cli.main(["run", "--suite", CHECK, *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "does not apply to LSI suite" in err and "\n" not in err


def test_list_shows_the_lsi_suites(capsys):
    assert cli.main(["list", "suites"]) == 0
    out = capsys.readouterr().out
    assert "lsi-quick" in out and "lsi-fmnist" in out and "lsi-cifar10" in out


def test_check_holds_against_its_own_reference_and_fails_on_a_tampered_metric(tmp_path, capsys):
    out, ref = tmp_path / "run", tmp_path / "ref"
    assert cli.main(["run", "--suite", CHECK, "--seeds", "2", "--out", str(out), "--threads", "1",
                     "--no-download"]) == 0
    assert (out / "leaderboard.html").exists()
    assert cli.main(["check", "--suite", CHECK, "--write-reference", str(out), "--reference", str(ref)]) == 0
    published = json.loads((ref / "results.json").read_text())
    assert published["kind"] == "lsi" and published["seeds"] == 2 and published["threads"] == 1
    assert published["command"] == f"python -m bench run --suite {CHECK} --seeds 2"
    assert set(published["methods"]["none"]) == {"top1_100pct", "top1_10pct"}
    assert cli.main(["check", "--suite", CHECK, "--write-reference", str(out), "--reference", str(ref)]) == 2
    capsys.readouterr()

    assert cli.main(["check", "--suite", CHECK, "--reference", str(ref), "--out", str(tmp_path / "c1")]) == 0
    text = capsys.readouterr().out
    assert "OK: all 4 published metrics within tolerance" in text

    entry = published["methods"]["lsi-uniform"]["top1_100pct"]
    entry["value"] += entry["tolerance"] + 0.5
    (ref / "results.json").write_text(json.dumps(published))
    assert cli.main(["check", "--suite", CHECK, "--reference", str(ref), "--out", str(tmp_path / "c2")]) == 1
    text = capsys.readouterr().out
    assert "DRIFT: 1 of 4" in text and "lsi-uniform top1_100pct" in text

    assert cli.main(["check", "--suite", CHECK, "--reference", str(ref), "--out", str(out)]) == 2  # not empty
    assert "is not empty" in capsys.readouterr().err
