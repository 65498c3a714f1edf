"""One-step equality: from the same initial weights and the same input views, each method's
harness training step and its independent reference loop (bench/parity/reference.py) give the
same loss, the same gradients and, after one optimizer step, the same weights (relative 1e-5).
All seven methods; MAE on a ViT (true MAE) and on a CNN (masked-input reconstruction)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bench.config import RunSpec
from bench.engine.execute import build_method
from bench.engine.train import build_optimizer, scaled_lr
from bench.parity import compare, reference
from bench.suites import SUITES, resolve, resolve_scope
from methods.base import AUGMENTED, DataInfo

RTOL = 1e-5
BATCH = 8
SIZE = 28  # the parity suite's size (Fashion-MNIST)
CASES = [("vae", "resnet-tiny"), ("aasae", "resnet-tiny"), ("aae", "resnet-tiny"), ("simclr", "resnet-tiny"),
         ("byol", "resnet-tiny"), ("vicreg", "resnet-tiny"), ("mae", "resnet-tiny"), ("mae", "vit-tiny-p4")]


def _pair(method: str, backbone: str):
    suite = replace(SUITES.get("fmnist-ci"), backbone=backbone)
    run = resolve(suite, RunSpec(suite.name, method, 0), {})
    info = DataInfo(1, SIZE, 10, (0.286,), (0.353,))
    harness = build_method(run, info, torch.device("cpu"))
    ref = reference.build(compare.recipe_of(run, info, harness))
    compare.load_harness_weights(harness.state_dict(), ref)
    return run, harness, ref


def _params(module) -> list[torch.nn.Parameter]:
    """Trainable parameters, each once, in registration order."""
    seen, out = set(), []
    for p in module.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _close(a: torch.Tensor, b: torch.Tensor, what: str, floor: float = 0.0, rtol: float = RTOL) -> None:
    """|a - b| <= rtol |b| (norms over the tensor); `floor` stands in for |b| when that is smaller:
    a bias right before a BatchNorm has a true gradient of 0, so its computed one is rounding noise."""
    err = (a.double() - b.double()).norm().item()
    scale = max(b.double().norm().item(), floor)
    assert err <= rtol * scale + 1e-12, f"{what}: |difference| {err:.3g} vs |reference| {scale:.3g}"


def _views(harness) -> list[torch.Tensor]:
    torch.manual_seed(7)
    clean = torch.randn(BATCH, 1, SIZE, SIZE)
    return [torch.randn(BATCH, 1, SIZE, SIZE) if k == AUGMENTED else clean for k in harness.views]


def _param_pairs(harness, ref, vit: bool) -> list[tuple[str, torch.nn.Parameter, torch.nn.Parameter]]:
    """(harness name, harness parameter, reference parameter) for every trainable parameter."""
    h = [(n, p) for n, p in harness.named_parameters() if p.requires_grad]
    r = [(n, p) for n, p in ref.named_parameters() if p.requires_grad]
    if vit:
        by_name = dict(r)
        pairs = [(n, p, by_name[compare.vit_reference_name(n)]) for n, p in h if compare.vit_reference_name(n) is not None]
        unused = {id(ref.backbone.mask_token)}  # lightly's encoder mask token: trainable, never used
        assert {id(p) for _, p in r} - {id(rp) for _, _, rp in pairs} == unused
        return pairs
    assert [p.shape for _, p in h] == [p.shape for _, p in r]
    return [(n, hp, rp) for (n, hp), (_, rp) in zip(h, r)]


def _group_of(opt: torch.optim.Optimizer, p: torch.nn.Parameter) -> dict | None:
    return next((g for g in opt.param_groups if any(q is p for q in g["params"])), None)


def _same_hyperparameters(h_opt, r_opt, pairs) -> None:
    """Per parameter pair: the same optimizer type of step, lr, weight decay, momentum / betas
    and LARS trust coefficient (catches a wrong group even where one step could not)."""
    for name, hp, rp in pairs:
        hg, rg = _group_of(h_opt, hp), _group_of(r_opt, rp)
        assert (hg is None) == (rg is None), f"{name}: optimized on one side only"
        if hg is None:  # the AAE discriminator: its own optimizer on both sides
            continue
        assert hg["lr"] == pytest.approx(rg["lr"]), name
        assert hg["weight_decay"] == rg["weight_decay"], f"{name}: weight decay {hg['weight_decay']} vs {rg['weight_decay']}"
        for key in ("momentum", "betas"):
            if key in hg or key in rg:
                assert hg.get(key) == rg.get(key), f"{name}: {key}"
        if "trust_coefficient" in hg:
            assert hg["trust_coefficient"] == rg.get("trust_coefficient", getattr(r_opt, "eta", None)), name
            assert hg["clip_lr"] == (type(r_opt).__name__ == "ClippedLARS"), name


@pytest.mark.parametrize("method,backbone", CASES, ids=[f"{m}-{b}" for m, b in CASES])
def test_one_step_equals_the_reference_loop(method, backbone):
    run, harness, ref = _pair(method, backbone)
    harness.train(), ref.train()
    views = _views(harness)
    labels = torch.zeros(BATCH, dtype=torch.long)
    pairs = _param_pairs(harness, ref, vit=backbone.startswith("vit"))
    recipe = compare.recipe_of(run, harness.data, harness)
    lr = scaled_lr(run.optim, run.train.batch_size)
    assert reference.peak_lr(recipe) == pytest.approx(lr)  # the two sides' own scaling rules agree
    h_opt = build_optimizer(harness, run.optim, lr)
    r_opt = reference.main_optimizer(ref, recipe, reference.peak_lr(recipe))
    _same_hyperparameters(h_opt, r_opt, pairs)

    noise: set[str] = set()
    keep: dict[str, torch.Tensor] = {}  # per element: whose weights are compared
    for step in range(2):  # two steps, so momentum buffers and Adam's betas matter too
        harness.on_step_start(step, 100)
        h_opt.zero_grad(), r_opt.zero_grad()
        torch.manual_seed(step)
        h_loss, _ = harness.training_step(views, labels)
        torch.manual_seed(step)
        r_loss = ref.loss(views, step, 100)
        _close(h_loss.detach(), r_loss.detach(), f"loss at step {step}")
        h_loss.backward()
        r_loss.backward()
        # a parameter whose true gradient is 0 (a bias right before a BatchNorm) has rounding noise
        # for a gradient: it is held to 1e-5 of 1% of the step's largest gradient, and its weights
        # are not compared (Adam turns any gradient, noise too, into a full-lr step)
        largest = max(rp.grad.norm().item() for _, _, rp in pairs if rp.grad is not None)
        for name, hp, rp in pairs:
            if name.startswith("discriminator."):  # not in the reconstruction phase: compared by its weights below
                continue
            assert (hp.grad is None) == (rp.grad is None), f"{name}: gradient present on one side only"
            if hp.grad is not None:
                _close(hp.grad, rp.grad, f"gradient of {name} at step {step}", 1e-2 * largest)
                if rp.grad.norm().item() < 1e-4 * largest:
                    noise.add(name)
                # elements with a true gradient of 0 inside a tensor (a ViT's key bias: softmax
                # ignores a shift of every key) are noise too
                signal = rp.grad.abs() > 1e-2 * rp.grad.pow(2).mean().sqrt()
                keep[name] = keep.get(name, torch.ones_like(signal)) & signal
        h_opt.step()
        r_opt.step()
        torch.manual_seed(100 + step)
        h_logs = harness.after_optimizer_step(views, labels)
        torch.manual_seed(100 + step)
        r_logs = ref.regularize(views) if hasattr(ref, "regularize") else {}
        harness.on_step_end(step, 100)
        if method == "aae":  # the generator step's encoder gradients: its Adam step amplifies noise too
            for name, _, rp in pairs:
                if rp.grad is not None and not name.startswith(("decoder.", "discriminator.")):
                    keep[name] = keep.get(name, torch.ones_like(rp, dtype=torch.bool)) & (
                        rp.grad.abs() > 1e-2 * rp.grad.pow(2).mean().sqrt())
        if method == "aae":  # the regularization phase: a discriminator step, then the encoder's
            _close(torch.as_tensor(h_logs["adv_d"]), torch.tensor(r_logs["d_loss"]), "discriminator loss")
            _close(torch.as_tensor(h_logs["adv_g"]), torch.tensor(r_logs["g_loss"]), "generator loss")
            for i, (hp, rp) in enumerate(zip(harness.discriminator.parameters(), ref.discriminator.parameters())):
                _close(hp.detach(), rp.detach(), f"discriminator weights {i} after step {step}")
        for name, hp, rp in pairs:
            if name not in noise:
                m = keep.get(name, torch.ones_like(hp, dtype=torch.bool))
                _close(hp.detach()[m], rp.detach()[m], f"weights of {name} after step {step}")


@pytest.mark.parametrize("schedule,warmup,total", [("cosine", 78, 468), ("cosine", 0, 156), ("constant", 78, 156),
                                                     ("cosine", 156, 156)])
def test_the_reference_schedule_gives_the_harness_lr_at_every_step(schedule, warmup, total):
    """The equality test steps at one lr; this checks the rest of the trajectory: the reference's
    LambdaLR (stepped after each optimizer step) sets the harness's lr at every step."""
    from bench.engine.train import lr_factor
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, reference.warmup_then(schedule, warmup, total))
    for step in range(total):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * lr_factor(step, warmup, total, schedule), abs=1e-12), step
        opt.step()
        sched.step()


def test_the_reference_loops_use_nothing_of_the_harness_but_data_and_evaluation():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(reference))
    imported = {n.module if isinstance(n, ast.ImportFrom) else a.name
                for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in (n.names if isinstance(n, ast.Import) else [n])}
    assert not {m for m in imported if m and (m.startswith("bench") or m.startswith("methods"))}


def test_given_views_serve_shuffled_full_batches_of_distinct_images():
    """--reference-views harness: the reference loop's batches without its DataLoader."""
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    batches = reference.GivenViews(images, batch_size=4, seed=0, make_views=lambda xb: [xb.float(), xb.float() + 100])
    assert len(batches) == 2
    passes = [[views for views, _ in batches] for _ in range(2)]
    for p in passes:
        assert all(v[0].shape[0] == 4 and torch.equal(v[1], v[0] + 100) for v in p)
        seen = torch.cat([v[0].flatten() for v in p])
        assert len(set(seen.tolist())) == 8  # drop_last: 8 distinct images of the 10
    assert not torch.equal(torch.cat([v[0] for v in passes[0]]), torch.cat([v[0] for v in passes[1]]))  # re-shuffled


def test_the_reference_loop_trains_on_given_views_instead_of_its_pil_pipeline():
    run, harness, _ = _pair("simclr", "resnet-tiny")
    info = DataInfo(1, SIZE, 10, (0.286,), (0.353,))
    recipe = replace(compare.recipe_of(run, info, harness), epochs=1, batch_size=BATCH, warmup_epochs=0)
    images = torch.randint(0, 256, (2 * BATCH + 3, 1, SIZE, SIZE), dtype=torch.uint8)
    seen: list[torch.Tensor] = []

    def make_views(xb: torch.Tensor) -> list[torch.Tensor]:
        seen.append(xb)
        return [xb.float() / 255, xb.float().flip(-1) / 255]
    encoder, _ = reference.train(recipe, images, torch.zeros(len(images), dtype=torch.long), workers=0,
                                 make_views=make_views)
    assert len(seen) == 2 and all(xb.dtype == torch.uint8 and xb.shape[0] == BATCH for xb in seen)
    assert not encoder.training


def test_given_views_follow_a_given_order_per_pass():
    """--reference-views matched: each epoch's batches in the order the harness would take them."""
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    asked: list[int] = []

    def order(epoch: int) -> torch.Tensor:
        asked.append(epoch)
        return torch.arange(10).roll(epoch)
    batches = reference.GivenViews(images, batch_size=4, seed=0, make_views=lambda xb: [xb.flatten()], order=order)
    passes = [[views[0].tolist() for views, _ in batches] for _ in range(2)]
    assert asked == [0, 1]
    assert passes == [[[0, 1, 2, 3], [4, 5, 6, 7]], [[9, 0, 1, 2], [3, 4, 5, 6]]]


def test_epoch_order_seeds_the_draws_and_the_shuffle_from_the_runs_seed_and_epoch():
    """The harness's per-epoch seeding, pinned: seed 3, epoch 1 -> 3 * 100003 + 1 for both the
    global draws (augmentation, masks) and the shuffle, so a matched reference replays both."""
    from bench.engine.train import epoch_order
    order = epoch_order(3, 1, 50)
    draw = torch.rand(3)
    assert torch.equal(order, torch.randperm(50, generator=torch.Generator().manual_seed(300_010)))
    torch.manual_seed(300_010)
    assert torch.equal(draw, torch.rand(3))
    assert not torch.equal(order, epoch_order(3, 2, 50))


@pytest.mark.parametrize("method,backbone", [("mae", "vit-tiny-p4"), ("simclr", "resnet-tiny")])
def test_the_reference_can_start_from_the_harness_weights(method, backbone):
    """--reference-views matched loads the harness's initial weights into the reference model."""
    run, harness, _ = _pair(method, backbone)
    info = DataInfo(1, SIZE, 10, (0.286,), (0.353,))
    recipe = replace(compare.recipe_of(run, info, harness), seed=5)  # another seed: other initial draws
    ref = reference.build(recipe)
    vit = backbone.startswith("vit")
    compare.load_harness_weights(harness.state_dict(), ref)
    for name, hp, rp in _param_pairs(harness, ref, vit):
        assert torch.equal(hp, rp), name
    if not vit:  # buffers too (BatchNorm statistics): moved off their initial values first
        ref2 = reference.build(recipe)
        harness.train()
        with torch.no_grad():
            harness.backbone(torch.randn(BATCH, 1, SIZE, SIZE))
        compare.load_harness_weights(harness.state_dict(), ref2)
        for (hk, hv), (rk, rv) in zip(harness.state_dict().items(), ref2.state_dict().items()):
            assert torch.equal(hv, rv), f"{hk} vs {rk}"


MATCHED = [("mae", "vit-tiny-p4"), ("mae", "resnet-tiny"), ("simclr", "resnet-tiny"), ("vicreg", "resnet-tiny"),
           ("aae", "resnet-tiny")]


@pytest.mark.parametrize("method,backbone", MATCHED, ids=[f"{m}-{b}" for m, b in MATCHED])
def test_matched_streams_train_the_same_encoder_over_whole_epochs(method, backbone, tmp_path):
    """The whole training loop, not one step (`--reference-views matched`): from the harness's
    initial weights, on its views in its batch order with its random draws, the reference loop
    logs the harness's loss at every step (warmup and cosine included) and ends with an encoder
    that gives the harness's features (relative 1e-4), through `compare.reference_inputs`, which
    `bench parity --reference-views matched` uses. BYOL (its target updated one step apart) and
    the VAE/AASAE (the official step's extra pass, which draws noise and moves BatchNorm
    statistics) differ by design: docs/parity.md."""
    import copy
    import csv
    from bench import config
    from bench.engine.execute import build_augment
    from bench.engine.train import TrainContext, train
    sets = config.parse_sets(["train.epochs=3", "train.batch_size=8", "train.warmup_epochs=1"])
    suite = replace(SUITES.get("fmnist-ci"), backbone=backbone)
    suite = replace(suite, train=resolve_scope(suite, "train", sets.pop("train")))
    run = resolve(suite, RunSpec(suite.name, method, 2), sets)  # a seed other than 0: its epochs' seeds
    info = DataInfo(1, SIZE, 10, (0.286,), (0.353,))
    cpu = torch.device("cpu")
    harness = build_method(run, info, cpu)
    initial = copy.deepcopy(harness.state_dict())
    aug = build_augment(run, info, cpu)
    images = torch.randint(0, 256, (2 * BATCH + 3, 1, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(len(images), dtype=torch.long)
    out = train(harness, images, labels, aug, run.train, run.optim,
                TrainContext(run_dir=tmp_path, device=cpu, seed=run.seed, spec_hash=run.spec_hash))
    assert out.status == "ok" and out.step == 6
    h_losses = [float(r["loss"]) for r in csv.DictReader((tmp_path / "train_log.csv").open())]

    r_losses: list[float] = []
    encoder, _ = reference.train(
        compare.recipe_of(run, info, harness), images, labels, workers=0,
        progress=lambda step, total, loss: r_losses.append(loss),
        **compare.reference_inputs("matched", harness, aug, initial, run.seed, len(images)))
    assert len(r_losses) == len(h_losses) == 6
    for step, (h, r) in enumerate(zip(h_losses, r_losses)):
        assert h == pytest.approx(r, rel=1e-4), f"loss at step {step}: harness {h} vs reference {r}"
    harness.eval()
    x = (images.float() / 255 - 0.286) / 0.353
    with torch.no_grad():
        _close(harness.encode(x), encoder(x), "trained encoder's features", rtol=1e-4)


def test_mismatched_architectures_are_refused_when_loading_harness_weights():
    _, harness, _ = _pair("simclr", "resnet-tiny")
    _, _, other = _pair("vicreg", "resnet-tiny")
    with pytest.raises(ValueError):
        compare.load_harness_weights(harness.state_dict(), other)


def _record(method: str, h: list[float], r: list[float], harness_only: bool = False) -> dict:
    seeds = [{"seed": i, "init_knn": 40.0, "harness_knn": a, "reference_knn": b, "difference": a - b,
              "harness_train_s": 10.0, "reference_train_s": 20.0} for i, (a, b) in enumerate(zip(h, r))]
    return {"method": method, "variant": method, "suite": "fmnist-ci", "backbone": "resnet-tiny",
            "dataset": "fashion-mnist", "images": 10000, "epochs": 2, "batch_size": 128, "steps": 156,
            "scored_on": "fashion-mnist test split", "seeds": seeds, "command": f"python -m bench parity --method {method}",
            "harness_only": harness_only}


def test_table_rows_hold_means_and_differences_and_skip_harness_only_records(tmp_path):
    import json
    from bench.cli import main
    (tmp_path / "simclr-resnet-tiny.json").write_text(json.dumps(_record("simclr", [68.0, 67.0], [67.0, 67.2])))
    (tmp_path / "vicreg-resnet-tiny-harness-only.json").write_text(
        json.dumps(_record("vicreg", [70.0], [float("nan")], harness_only=True)))
    (tmp_path / "byol-resnet-tiny-harness-views.json").write_text(
        json.dumps({**_record("byol", [60.0], [59.0]), "reference_views": "harness"}))
    doc = tmp_path / "parity.md"
    doc.write_text(f"# Parity\n\nintro\n\n{compare.TABLE_START}\nold\n{compare.TABLE_END}\n\noutro\n")
    assert main(["parity", "--render-only", "--doc", str(doc), "--out", str(tmp_path)]) == 0
    text = doc.read_text()
    assert "intro" in text and "outro" in text and "old" not in text
    rows = [line for line in text.splitlines() if line.startswith("| simclr")]
    assert len(rows) == 1 and "67.50 ± 0.71" in rows[0] and "67.10 ± 0.14" in rows[0] and "+0.40" in rows[0]
    assert "| vicreg" not in text
    assert "| byol | byol; reference fed the harness's views |" in text
    (tmp_path / "byol-resnet-tiny-matched.json").write_text(
        json.dumps({**_record("byol", [60.0], [59.9]), "reference_views": "matched"}))
    assert main(["parity", "--render-only", "--doc", str(doc), "--out", str(tmp_path)]) == 0
    assert "| byol | byol; reference fed the harness's views, batches, draws and initial weights |" in doc.read_text()
    later = _record("aae", [50.0, 51.0], [50.5, 50.5])  # --first-seed 2: the table names the seeds
    later["seeds"] = [{**r, "seed": r["seed"] + 2} for r in later["seeds"]]
    (tmp_path / "aae-resnet-tiny.json").write_text(json.dumps(later))
    assert main(["parity", "--render-only", "--doc", str(doc), "--out", str(tmp_path)]) == 0
    assert "| +0.00 | 2 (2, 3) |" in doc.read_text()


@pytest.mark.parametrize("argv,message", [
    (["--render-only"], "--render-only needs --doc"),
    ([], "--method is required"),
    (["--method", "simclr", "--validation", "5"], "--validation 5"),
    (["--method", "simclr", "--workers", "-1"], "--workers -1"),
    (["--method", "simclr", "--first-seed", "-1"], "--first-seed -1"),
    (["--method", "simclr", "--backbone", "no-such-net"], "no-such-net"),
    (["--method", "mae", "--harness-only", "--reference-views", "harness"], "--reference-views"),
])
def test_parity_user_mistakes_are_one_line_errors(argv, message, tmp_path, capsys):
    from bench.cli import main
    assert main(["parity", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_an_existing_record_is_not_overwritten(tmp_path, capsys):
    import json
    from bench.cli import main
    target = tmp_path / "simclr-resnet-tiny.json"
    target.write_text(json.dumps(_record("simclr", [68.0], [67.0])))
    assert main(["parity", "--method", "simclr", "--out", str(tmp_path)]) == 2
    assert "--force" in capsys.readouterr().err
    assert json.loads(target.read_text())["seeds"][0]["harness_knn"] == 68.0
