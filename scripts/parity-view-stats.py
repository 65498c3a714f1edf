"""How the harness's views differ from the parity reference loop's, without training (docs/parity.md,
"MAE on a ViT"): the crop parameters of kornia's RandomResizedCrop (the harness) against
torchvision's (the reference), and statistics of the views both pipelines make of the same images.

    python scripts/parity-view-stats.py [--method mae] [--backbone vit-tiny-p4] [--draws 20000]
                                        [--images 2000] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import kornia.augmentation as K
import numpy as np
import torch
import torchvision.transforms as T
from lightly.models import utils
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import suites  # noqa: E402
from bench.config import RunSpec  # noqa: E402
from bench.engine.data import SuiteData  # noqa: E402
from bench.engine.execute import build_augment, build_method  # noqa: E402
from bench.parity import compare, reference  # noqa: E402

QUANTILES = (0.1, 0.5, 0.9)
VAR_EDGES = (0.0, 1e-10, 1e-8, 1e-6, 1e-4, 1e-2, float("inf"))


def crop_stats(w: torch.Tensor, h: torch.Tensor, size: int) -> dict[str, float]:
    area = w * h / size ** 2
    return {"mean_width": w.mean().item(), "mean_height": h.mean().item(), "mean_area": area.mean().item(),
            **{f"area_q{int(q * 100)}": torch.quantile(area, q).item() for q in QUANTILES},
            "full_image": ((w == size) & (h == size)).float().mean().item()}


def crops(draws: int, size: int, scale_min: float) -> dict[str, dict[str, float]]:
    """The crop boxes each pipeline draws (kornia's integer corners, as the harness uses them)."""
    box = K.RandomResizedCrop((size, size), scale=(scale_min, 1.0)).forward_parameters((draws, 1, size, size))["src"].long()
    kw, kh = (box[:, 1, 0] - box[:, 0, 0] + 1).float(), (box[:, 3, 1] - box[:, 0, 1] + 1).float()
    tv = T.RandomResizedCrop(size, scale=(scale_min, 1.0))
    img = Image.fromarray(np.zeros((size, size), np.uint8))
    params = torch.tensor([tv.get_params(img, tv.scale, tv.ratio) for _ in range(draws)], dtype=torch.float32)
    return {"kornia (harness)": crop_stats(kw, kh, size), "torchvision (reference)": crop_stats(params[:, 3], params[:, 2], size)}


def view_stats(v: torch.Tensor, patch: int) -> dict[str, float]:
    grad = (v[..., :, 1:] - v[..., :, :-1]).pow(2).mean() + (v[..., 1:, :] - v[..., :-1, :]).pow(2).mean()
    var = utils.patchify(v, patch).var(-1)
    shares = {f"patch_var_{a:g}_to_{b:g}": ((var >= a) & (var < b)).float().mean().item()
              for a, b in zip(VAR_EDGES, VAR_EDGES[1:])}
    return {"mean": v.mean().item(), "std": v.std().item(), "gradient_energy": grad.item(),
            "mean_patch_var": var.mean().item(), **shares}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="mae")
    ap.add_argument("--backbone", default="vit-tiny-p4")
    ap.add_argument("--draws", type=int, default=20000)
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.manual_seed(0)
    suite = dataclasses.replace(suites.SUITES.get("fmnist-ci"), backbone=args.backbone)
    data = SuiteData(suite, None, False, torch.device("cpu"))
    run = suites.resolve(suite, RunSpec(suite.name, args.method, 0), {})
    harness = build_method(run, data.info, torch.device("cpu"))
    images = data.images[: args.images]
    harness_views = build_augment(run, data.info, torch.device("cpu"))(images)
    recipe = compare.recipe_of(run, data.info, harness)
    transform = reference.view_transforms(("augmented",), recipe.aug, recipe.size, recipe.mean, recipe.std)
    pil = reference.ViewsDataset(images, data.labels[: args.images], transform)
    pil_views = torch.stack([pil[i][0][0] for i in range(len(pil))])
    patch = getattr(harness, "patch", 4)
    record = {"command": "python scripts/parity-view-stats.py " + " ".join(sys.argv[1:]), "suite": suite.name,
              "method": args.method, "backbone": args.backbone, "aug": dataclasses.asdict(run.aug),
              "crop_draws": args.draws, "crops": crops(args.draws, data.info.size, run.aug.crop_scale_min),
              "images": len(images), "patch": patch,
              "views": {"harness (kornia, float)": view_stats(harness_views, patch),
                        "reference (PIL, uint8)": view_stats(pil_views, patch)}}
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
