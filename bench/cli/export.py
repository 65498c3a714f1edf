"""`python -m bench export RUN_DIR --out backbone.pt [--force]`

Writes the trained backbone of a finished run as a plain timm `state_dict`: the keys of
`Backbone.net` (the method's `backbone.net.*` entries without that prefix), read from the
run's final checkpoint after its spec-hash check. Every method keeps the backbone it trains
under `backbone.net` (MAE's ViT encoder, lightly's MaskedVisionTransformerTIMM, shares those
very tensors as `encoder.vit.*`; BYOL's EMA copy is `backbone_momentum.*`, not exported; the
heads, decoders and the AAE's discriminator are left out). Beside it, `<out stem>.json` says
what it is (timm model, channels, image size, stem, the run), and the command prints the lines
of Python that load it: plain timm for `timm:MODEL[@s1|@s2]` backbones, the harness's builder
for the registered ones (custom widths or a replaced stem). No dataset is loaded: the backbone
needs only its channel count and the run's image size.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import UserError

if TYPE_CHECKING:
    import torch
    from torch import nn

BACKBONE_PREFIX = "backbone.net."  # Method.backbone (a bench.backbones.Backbone) -> its timm net
# methods whose features do not come from the backbone: exporting its untouched init would mislead
NO_BACKBONE = {"pixels": "its features are the raw pixels; its backbone is never used"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="a finished run's directory: <out>/runs/<run_id>")
    p.add_argument("--out", type=Path, required=True,
                   help="the .pt file to write (a plain state_dict; <stem>.json is written beside it)")
    p.add_argument("--force", action="store_true", help="replace an existing --out and its .json")


def main(args: argparse.Namespace) -> int:
    # imported here, not at the top: `bench --help` and the other commands stay light
    import os

    import torch

    from bench import backbones
    from bench.engine.train import CHECKPOINT, load_checkpoint
    from bench.results import store

    out: Path = args.out
    meta_path = metadata_path(out)
    result = store.read_result(args.run_dir)
    if result is None:
        raise UserError(f"no {store.RESULT} in '{args.run_dir}'; pass a directory <out>/runs/<run_id>")
    if not result.ok:
        raise UserError(f"run {result.run_id} has status {result.status!r}: only a finished (ok) run has a trained "
                        "backbone to export")
    run = result.config
    if run.method in NO_BACKBONE:
        raise UserError(f"run {result.run_id} is the {run.method} baseline: {NO_BACKBONE[run.method]}")
    existing = [p for p in (out, meta_path) if p.exists()]
    if existing and not args.force:
        raise UserError(f"'{existing[0]}' exists; choose another --out or pass --force to replace it")
    checkpoint = args.run_dir / CHECKPOINT
    if not checkpoint.is_file():
        raise UserError(f"no {CHECKPOINT} in '{args.run_dir}': the trained weights are read from the final checkpoint")
    state = load_checkpoint(checkpoint, result.spec_hash)  # corrupt or another run's: exit 2
    weights = backbone_state(state["model"], result.run_id)
    in_chans, image_size = channels_of(run, weights), run.image_size

    # the harness's own build must take the weights strictly: proves the key mapping and shapes
    backbone = backbones.get(run.backbone).build(in_chans, image_size)
    _load_strict(backbone.net, weights, f"backbone {run.backbone} as this version builds it")
    lines, timm_model = load_lines(run.backbone, weights, backbone.net, in_chans, image_size, out)

    meta: dict[str, Any] = {
        "timm_model": timm_model, "in_chans": in_chans, "image_size": image_size, "stem": stem_of(backbone.net),
        "backbone": run.backbone, "kind": backbone.kind, "patch_size": backbone.patch_size,
        "num_features": backbone.num_features, "run_id": result.run_id, "suite": run.suite, "method": run.method,
        "seed": run.seed, "load": lines,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    torch.save(weights, tmp)
    os.replace(tmp, out)  # atomic: a kill leaves the previous file (or none), never half of one
    store.write_json(meta_path, meta)
    n_params = sum(p.numel() for p in backbone.net.parameters())
    print(f"wrote {out} ({run.backbone}, {len(weights)} tensors, {n_params / 1e6:.2f}M parameters, from run "
          f"{result.run_id}, {run.method}) and {meta_path}; load it with:")
    print("\n".join(lines))
    return 0


def metadata_path(out: Path) -> Path:
    """backbone.pt -> backbone.json."""
    if out.suffix == ".json":
        raise UserError(f"--out {out}: name the .pt file; the .json beside it is written too")
    return out.with_suffix(".json")


def backbone_state(model_state: dict[str, Any], run_id: str) -> dict[str, "torch.Tensor"]:
    """The method's `backbone.net.*` tensors under the timm net's own key names."""
    weights = {k[len(BACKBONE_PREFIX):]: v.clone() for k, v in model_state.items() if k.startswith(BACKBONE_PREFIX)}
    if not weights:
        raise UserError(f"run {run_id}: its checkpoint holds no backbone weights ({BACKBONE_PREFIX}*)")
    return weights


def channels_of(run: Any, weights: dict[str, "torch.Tensor"]) -> int:
    """Input channels: the stored config's, if it records them, else the input width of the first
    4-D weight (a ResNet's conv1, a ViT's patch_embed.proj; state_dicts keep definition order)."""
    for field in ("in_chans", "channels"):
        if isinstance(getattr(run, field, None), int):
            return getattr(run, field)
    first = next((v for v in weights.values() if v.dim() == 4), None)
    if first is None:
        raise UserError(f"backbone {run.backbone}: no convolution or patch embedding to read the input channels from")
    return int(first.shape[1])


def stem_of(net: "nn.Module") -> str | None:
    """'s1' / 's2' for a ResNet with the small-image stem (3x3 conv of that stride, no max-pool),
    None for a model's own stem."""
    from timm.models.resnet import ResNet
    from torch import nn
    if (isinstance(net, ResNet) and isinstance(net.maxpool, nn.Identity) and isinstance(net.conv1, nn.Conv2d)
            and net.conv1.kernel_size == (3, 3)):
        return f"s{net.conv1.stride[0]}"
    return None


def load_lines(name: str, weights: dict[str, "torch.Tensor"], built: "nn.Module", in_chans: int, image_size: int,
               out: Path) -> tuple[list[str], str | None]:
    """(Python lines that rebuild the net and load --out into it, the timm model name or None).

    `timm:MODEL[@sN]`: plain timm, plus the stem replacement for @s1/@s2; the call they print is
    made here and must take the weights strictly. Registered names: their harness builder (they
    change widths or stems, or a plug-in defines them), which `built` is.
    """
    from bench import backbones
    load = f"net.load_state_dict(torch.load({str(out)!r}))"
    if name in backbones.BACKBONES or not name.startswith(backbones.TIMM_PREFIX):
        arch = getattr(built, "pretrained_cfg", {}).get("architecture")
        return ["import torch, bench.backbones",
                f"net = bench.backbones.get({name!r}).build({in_chans}, {image_size}).net", load], arch
    model = name[len(backbones.TIMM_PREFIX):].partition("@")[0]
    net, kwargs = backbones.create_timm(model, in_chans, image_size)
    call = ", ".join([repr(model), *(f"{k}={v!r}" for k, v in kwargs.items())])
    lines = ["import timm, torch", f"net = timm.create_model({call})"]
    stem = stem_of(built)
    if stem:
        width, stride = built.conv1.out_channels, built.conv1.stride[0]
        lines.append(f"net.conv1, net.maxpool = torch.nn.Conv2d({in_chans}, {width}, 3, stride={stride}, padding=1, "
                     f"bias=False), torch.nn.Identity()  # the @{stem} stem")
        backbones.small_stem(net, in_chans, stride)  # what that line does
    _load_strict(net, weights, f"timm.create_model({call})" + (f" with the @{stem} stem" if stem else ""))
    return [*lines, load], model


def _load_strict(net: "nn.Module", weights: dict[str, "torch.Tensor"], what: str) -> None:
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as e:  # missing / unexpected keys or shapes: say which, on one line
        detail = " ".join(str(e).split())[:300]
        raise UserError(f"the run's backbone weights do not fit {what} ({detail})") from None
