"""Every registered method (and the supervised baseline) on every registered backbone: one
CPU training step through the harness's optimizer builder, then `encode`. The parametrization
reads the registries, so a new method or backbone is tested the moment it is registered.
Below: the method-specific contracts (which views feed what, momentum, extra state).
"""
from __future__ import annotations

import dataclasses
import io
import copy
import math
import sys

import pytest
import torch

import methods
from bench.engine.augment import AugConfig, Augment, normalize
from bench.backbones import BACKBONES
from bench.engine.train import build_optimizer, make_views, scaled_lr
from methods.base import AUGMENTED, CLEAN, DataInfo

TRAINED = methods.METHODS.names() + [n for n in methods.BASELINES.names() if methods.get(n).trains]
BATCH = 4


def _shape(backbone: str) -> tuple[int, int]:
    """(channels, size): tiny inputs; 1 channel for the CPU backbones, 3 (RGB) for the others."""
    return (1, 16) if backbone.startswith("resnet-tiny") else (3, 16)


def build(name: str, backbone: str, seed: int = 0, **cfg):
    cls = methods.get(name)
    channels, size = _shape(backbone)
    torch.manual_seed(seed)
    info = DataInfo(channels, size, 10, (0.5,) * channels, (0.25,) * channels)
    return cls(dataclasses.replace(cls.Config(), **cfg), BACKBONES.get(backbone).build(channels, size), info)


def views_for(method, x: torch.Tensor) -> list[torch.Tensor]:
    """Stand-in views: an 'augmented' view differs from the clean image."""
    return [x + 0.3 * torch.randn_like(x) if kind == AUGMENTED else x for kind in method.views]


@pytest.mark.parametrize("backbone", BACKBONES.names())
@pytest.mark.parametrize("name", TRAINED)
def test_one_training_step(name, backbone):
    method = build(name, backbone)
    optimizer = build_optimizer(method, method.optim, scaled_lr(method.optim, BATCH))
    channels, size = _shape(backbone)
    x = torch.randn(BATCH, channels, size, size)
    before = [p.detach().clone() for p in method.optimized_parameters()]

    method.train()
    loss, logs = method.training_step(views_for(method, x), torch.arange(BATCH) % 10)
    assert loss.ndim == 0 and math.isfinite(loss.item())
    # logged terms: detached 0-dim tensors (read by the loop without a GPU sync) or numbers
    assert all(isinstance(v, float) or (torch.is_tensor(v) and v.ndim == 0 and not v.requires_grad)
               for v in logs.values())
    assert all(math.isfinite(float(v)) for v in logs.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    method.on_step_end(0, 10)
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, method.optimized_parameters()))

    method.eval()
    with torch.no_grad():
        features = method.encode(x)
        recon = method.reconstruct(x)
    assert features.shape == (BATCH, method.backbone.num_features)
    assert torch.isfinite(features).all()
    if recon is not None:
        assert recon.shape == x.shape and torch.isfinite(recon).all()
    assert isinstance(method.variant, str)


def test_registration_order():
    assert methods.METHODS.names() == ["vae", "aasae", "aae", "simclr", "byol", "vicreg", "mae"]


@pytest.mark.parametrize("name", methods.METHODS.names())
def test_method_metadata(name):
    cls = methods.get(name)
    doc = sys.modules[cls.__module__].__doc__
    assert doc and "arxiv.org/abs/" in doc
    assert dataclasses.is_dataclass(cls.Config) and cls.Config.__dataclass_params__.frozen
    fields = {f.name for f in dataclasses.fields(AugConfig)}
    assert set(cls.native_aug) <= fields
    assert cls.paradigm in {"autoencoding", "contrastive", "non-contrastive", "masked"}
    assert cls.reference


# ----------------------------------------------------------------------------- autoencoders
def _spy_nll(monkeypatch, module):
    calls = []
    real = module.gaussian_nll

    def spy(x_hat, target, log_scale=0.0):
        calls.append((x_hat, target))
        return real(x_hat, target, log_scale)

    monkeypatch.setattr(module, "gaussian_nll", spy)
    return calls


def test_aasae_encodes_augmented_and_reconstructs_clean(monkeypatch):
    import methods.aasae as aasae_mod
    from methods.autoencoder import gaussian_nll
    assert aasae_mod.AASAE.views == (AUGMENTED, CLEAN)
    method = build("aasae", "resnet-tiny")
    calls = _spy_nll(monkeypatch, aasae_mod)
    seen = []
    method.backbone.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    clean = torch.randn(BATCH, 1, 16, 16)
    augmented = clean.flip(-1) + 1.0
    torch.manual_seed(1)
    loss, _ = method.training_step([augmented, clean], torch.zeros(BATCH, dtype=torch.long))
    (x_hat, target), = calls
    assert torch.equal(target, clean) and not torch.equal(target, augmented)
    assert torch.equal(seen[0], augmented)
    # kl_coeff = 0: the loss is exactly the Gaussian NLL of the clean image given z(augmented)
    torch.manual_seed(1)
    mu, logvar = method.head(method.backbone(augmented))
    z = mu + (torch.exp(logvar / 2) + 1e-6) * torch.randn_like(mu)
    expected = gaussian_nll(method.decoder(z), clean).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_vae_consumes_the_clean_image(monkeypatch):
    import methods.vae as vae_mod
    assert vae_mod.VAE.views == (CLEAN,)
    method = build("vae", "resnet-tiny")
    aug = Augment(AugConfig(), 16, 1, (0.5,), (0.25,))
    xb = torch.randint(0, 256, (BATCH, 1, 16, 16), dtype=torch.uint8)
    views = make_views(method, xb, aug)
    assert len(views) == 1 and torch.equal(views[0], normalize(xb, (0.5,), (0.25,)))
    calls = _spy_nll(monkeypatch, vae_mod)
    method.training_step(views, torch.zeros(BATCH, dtype=torch.long))
    assert torch.equal(calls[0][1], views[0])
    assert method.cfg.kl_coeff == 1.0


# ----------------------------------------------------------------------------- BYOL
def test_byol_momentum_moves_the_target():
    method = build("byol", "resnet-tiny")
    optimizer = build_optimizer(method, method.optim, 0.1)
    target_before = [p.detach().clone() for p in method.backbone_momentum.parameters()]
    assert all(not p.requires_grad for p in method.backbone_momentum.parameters())
    x = torch.randn(BATCH, 1, 16, 16)
    method.on_step_start(0, 100)  # cosine schedule: momentum 0.99 at step 0
    loss, logs = method.training_step(views_for(method, x), torch.zeros(BATCH, dtype=torch.long))
    assert logs["momentum"] == pytest.approx(0.99)  # the momentum this step uses, not the previous one
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    method.on_step_end(0, 100)
    assert method.momentum == pytest.approx(0.99)
    moved = 0
    for old, new, online_p in zip(target_before, method.backbone_momentum.parameters(), method.backbone.parameters()):
        assert torch.allclose(new, 0.99 * old + 0.01 * online_p.detach(), atol=1e-6)
        moved += not torch.equal(old, new)
    assert moved > 0
    # a resumed run sets the momentum of the step it resumes at, not the schedule's start
    fresh = build("byol", "resnet-tiny")
    fresh.on_step_start(99, 100)
    assert fresh.momentum == pytest.approx(1.0)
    _, logs = fresh.training_step(views_for(fresh, x), torch.zeros(BATCH, dtype=torch.long))
    assert logs["momentum"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- AAE
def test_aae_regularization_phase_has_its_own_optimizers_and_state_round_trips():
    method = build("aae", "resnet-tiny")
    disc = set(map(id, method.discriminator.parameters()))
    assert not disc & set(map(id, method.optimized_parameters()))
    d_before = [p.detach().clone() for p in method.discriminator.parameters()]
    e_before = [p.detach().clone() for p in method.encoder_parameters()]
    x = torch.randn(BATCH, 1, 16, 16)
    loss, logs = method.training_step([x], torch.zeros(BATCH, dtype=torch.long))
    assert set(logs) == {"recon"}
    # the reconstruction phase alone moves nothing (the harness steps it)
    assert all(torch.equal(b, p) for b, p in zip(d_before, method.discriminator.parameters()))
    loss.backward()
    logs = method.after_optimizer_step([x], torch.zeros(BATCH, dtype=torch.long))
    assert {"adv_g", "adv_d", "disc_acc"} <= set(logs)
    assert any(not torch.equal(b, p) for b, p in zip(d_before, method.discriminator.parameters()))
    assert any(not torch.equal(b, p) for b, p in zip(e_before, method.encoder_parameters()))

    extra = method.state_dict()["_extra_state"]

    def plain(v):  # tensors, dicts, lists and numbers only
        if isinstance(v, dict):
            return all(isinstance(k, (int, str)) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(plain(x) for x in v)
        return isinstance(v, (torch.Tensor, int, float))
    assert plain(extra)

    buf = io.BytesIO()
    torch.save(method.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = build("aae", "resnet-tiny", seed=1)
    fresh.load_state_dict(state)
    for opt, fresh_opt in ((method.disc_opt, fresh.disc_opt), (method.gen_opt, fresh.gen_opt)):
        saved, loaded = opt.state_dict(), fresh_opt.state_dict()
        assert loaded["param_groups"] == saved["param_groups"]
        assert saved["state"] and saved["state"].keys() == loaded["state"].keys()
        for k, s in saved["state"].items():
            for name, value in s.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(loaded["state"][k][name]))
    for a, b in zip(method.discriminator.parameters(), fresh.discriminator.parameters()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- MAE
def test_mae_vit_encodes_only_visible_tokens():
    method = build("mae", "vit-tiny-p4")
    assert method.variant == "mae"
    shapes = []
    method.backbone.net.blocks[0].register_forward_pre_hook(lambda mod, args: shapes.append(args[0].shape))
    x = torch.randn(BATCH, 3, 16, 16)
    method.training_step([x], torch.zeros(BATCH, dtype=torch.long))
    # 16 patches, 75% dropped -> 4 visible + the CLS token
    assert shapes[0] == (BATCH, 1 + 4, 192)


def test_mae_cnn_variant_is_named():
    method = build("mae", "resnet-tiny")
    assert method.variant == "mae (masked-input reconstruction, CNN)"
    assert method.patch == 2  # smallest divisor of 16 that is >= max(2, 16/8)


# ----------------------------------------------------------------------------- decoder
@pytest.mark.parametrize("size", [8, 28, 32, 96])
def test_decoder_reaches_every_suite_image_size(size):
    from methods.autoencoder import LatentDecoder, upsampling_sizes
    torch.manual_seed(0)
    decoder = LatentDecoder(latent_dim=8, width=32, size=size, channels=3, blocks=1, head_width=8)
    out = decoder(torch.randn(2, 8))
    assert out.shape == (2, 3, size, size)
    assert torch.isfinite(out).all() and out.std().item() < 10  # default init: no blow-up at any size
    assert upsampling_sizes(4, size)[-1] == size
    assert upsampling_sizes(4, 32) == [8, 16, 32]  # the official CIFAR decoder's 4 -> 32


def test_decoder_follows_the_official_layout():
    """paper-AAVAE 1fc158d: no BatchNorm, every conv and linear with a bias, a 1x1-conv skip on
    the first block of each of the four stages, PyTorch's default init (nothing zeroed)."""
    from methods.autoencoder import LatentDecoder, UpBlock
    decoder = LatentDecoder(latent_dim=128, width=512, size=32, channels=3, blocks=2, head_width=64)
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in decoder.modules())
    layers = [m for m in decoder.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert all(m.bias is not None for m in layers)
    assert all(m.weight.abs().sum() > 0 for m in layers)
    blocks = [m for m in decoder.modules() if isinstance(m, UpBlock)]
    assert [b.size for b in blocks] == [None, None, 8, None, 16, None, 32, None]
    assert [isinstance(b.skip, torch.nn.Conv2d) for b in blocks] == [True, False] * 4
    assert [b.conv1.out_channels for b in blocks[::2]] == [256, 128, 64, 32]


def test_set_aug_overrides_win_over_the_native_recipe():
    """--aug native applies the method's own recipe first, then the user's --set aug.* on top."""
    from bench.config import RunSpec
    from bench.suites import SUITES, resolve
    suite = SUITES.get("cifar10-all")
    native = resolve(suite, RunSpec(suite.name, "byol", 0, "native"), {})
    assert native.aug.solarize_p == 0.1 and native.aug.saturation == 0.2  # BYOL's own recipe
    mine = resolve(suite, RunSpec(suite.name, "byol", 0, "native"), {"aug": {"solarize_p": "0.0"}})
    assert mine.aug.solarize_p == 0.0 and mine.aug.saturation == 0.2  # the user's value, the rest native
    shared = resolve(suite, RunSpec(suite.name, "byol", 0), {"aug": {"solarize_p": "0.3"}})
    assert shared.aug.solarize_p == 0.3 and shared.aug.saturation == suite.aug.saturation


# ----------------------------------------------------------------------------- how views are forwarded

def _online(method):
    """The network a method's loss reads each view through (the target branch for BYOL aside)."""
    if method.name == "simclr":
        return lambda x: method.projection(method.backbone(x))
    if method.name == "byol":
        return lambda x: method.prediction(method.projection(method.backbone(x)))
    return lambda x: method.expander(method.backbone(x))


@pytest.mark.parametrize("name", ["simclr", "byol", "vicreg"])
@pytest.mark.parametrize("mode", ["joint", "separate"])
def test_views_forward_jointly_or_one_at_a_time(name, mode):
    """joint: one pass over both views (BatchNorm statistics over both); separate: one pass per
    view. In train mode the two differ exactly by the BatchNorm statistics."""
    from methods.base import forward_views
    method = build(name, "resnet-tiny", forward_views=mode)
    method.train()
    torch.manual_seed(1)
    views = views_for(method, torch.randn(8, 1, 16, 16))
    net = _online(method)
    state = copy.deepcopy(method.state_dict())
    got = forward_views(net, views, mode)
    method.load_state_dict(state)  # BatchNorm running stats moved: start both from the same state
    if mode == "joint":
        want = net(torch.cat(views)).chunk(2)
    else:
        want = [net(v) for v in views]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    method.load_state_dict(state)
    other = forward_views(net, views, "separate" if mode == "joint" else "joint")
    assert not torch.allclose(other[0], got[0])  # the statistics really differ
    loss, _ = method.training_step(views, torch.zeros(8, dtype=torch.long))
    assert math.isfinite(loss.item())


def test_unknown_view_forward_is_a_user_error():
    from bench.errors import UserError
    from methods.base import forward_views
    with pytest.raises(UserError, match="forward_views='both'"):
        forward_views(lambda x: x, [torch.zeros(1)], "both")


# ----------------------------------------------------------------------------- LARS
@pytest.mark.parametrize("clip_lr", [False, True])
def test_lars_takes_lightlys_steps_and_solo_learns_when_clipped(clip_lr):
    """Without clipping the harness's LARS is lightly's; with it, the reference loop's
    solo-learn-style ClippedLARS (bench/parity/reference.py) takes the same steps."""
    from lightly.utils.lars import LARS as LightlyLARS

    from bench.engine.lars import LARS
    from bench.parity.reference import ClippedLARS
    torch.manual_seed(0)
    w0, b0 = torch.randn(16, 8), torch.randn(16)
    # the tiny middle gradient makes the trust ratio exceed 1 / lr, where clipping engages
    grads = [(torch.randn(16, 8) * scale, torch.randn(16) * scale) for scale in (1.0, 1e-3, 1.0)]

    def run(make):
        w, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(b0.clone())
        opt = make([{"params": [w], "weight_decay": 1e-4}, {"params": [b], "weight_decay": 0.0}])
        for gw, gb in grads:
            w.grad, b.grad = gw.clone(), gb.clone()
            opt.step()
        return w.detach(), b.detach()

    ours = run(lambda g: LARS(g, lr=0.3, momentum=0.9, trust_coefficient=0.02, clip_lr=clip_lr))
    if clip_lr:
        other = run(lambda g: ClippedLARS(g, lr=0.3, momentum=0.9, eta=0.02))
    else:
        other = run(lambda g: LightlyLARS(g, lr=0.3, momentum=0.9, trust_coefficient=0.02))
    for a, b in zip(ours, other):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
