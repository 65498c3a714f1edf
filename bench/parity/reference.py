"""Independent reference training loops, one per method, for `bench parity`.

Each is written the way the code its recipe comes from writes it, NOT the way the harness
does: lightly's examples for SimCLR, BYOL, VICReg and MAE on a ViT (PIL images through
torchvision/lightly transforms in a DataLoader, one forward per view, lightly's losses and
heads, the optimizer stepped in the loop); the official paper-AAVAE training step for VAE and
AASAE (torch.distributions for sampling, KL and likelihood; the extra no-grad pass over the
clean image its step makes); Makhzani et al.'s three alternating updates for the AAE. They
take the recipe's *numbers* from the resolved config, and use nothing of the harness: no
bench.engine, no methods/, no bench.backbones. The dataset arrays and the evaluation are
shared (bench/parity/compare.py), so a difference in accuracy is a difference in training.

Where the reference code itself does something else than the harness's recipe (lightly's
fixed BYOL momentum, no warmup, ...) the loop follows the harness's recipe numbers written
the reference's way, since parity compares implementations of ONE recipe.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import timm
import torch
import torch.nn.functional as F
import torchvision.transforms as T
from lightly.loss import NegativeCosineSimilarity, NTXentLoss, VICRegLoss
from lightly.models import utils
from lightly.models.modules import (BarlowTwinsProjectionHead, BYOLPredictionHead, BYOLProjectionHead,
                                    MaskedVisionTransformerTIMM, SimCLRProjectionHead)
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import SimCLRTransform
from lightly.transforms.simclr_transform import SimCLRViewTransform
from lightly.utils.lars import LARS
from lightly.utils.scheduler import cosine_schedule
from PIL import Image
from timm.models.resnet import BasicBlock, ResNet
from torch import nn
from torch.distributions import Normal, kl_divergence
from torch.utils.data import DataLoader, Dataset

with warnings.catch_warnings():  # lightly 1.6 marks its MAE decoder deprecated; its example still uses it
    warnings.simplefilter("ignore", FutureWarning)
    from lightly.models.modules import MAEDecoderTIMM


# ----------------------------------------------------------------------------- backbones
REFERENCE_BACKBONES = ("resnet-tiny", "resnet-tiny-s1", "resnet18-cifar", "vit-tiny-p4")


def make_backbone(name: str, in_chans: int, size: int) -> nn.Module:
    """The suite's backbone, built from timm directly (same architecture as the registry's)."""
    if name in ("resnet-tiny", "resnet-tiny-s1"):
        net = ResNet(BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=32,
                     num_classes=0, in_chans=in_chans)
        stride = 2 if name == "resnet-tiny" else 1
    elif name == "resnet18-cifar":
        net, stride = timm.create_model("resnet18", num_classes=0, in_chans=in_chans), 1
    elif name == "vit-tiny-p4":
        return timm.create_model("vit_tiny_patch16_224", num_classes=0, in_chans=in_chans, img_size=size,
                                 patch_size=4, global_pool="token")
    else:
        raise ValueError(f"the reference loops know no backbone {name!r}")
    net.conv1 = nn.Conv2d(in_chans, net.conv1.out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


# ----------------------------------------------------------------------------- data
class ViewsDataset(Dataset):
    """uint8 (N, C, H, W) arrays served as PIL images through a torchvision transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> tuple[Any, int]:
        x = self.images[i].permute(1, 2, 0).numpy()
        img = Image.fromarray(x[..., 0] if x.shape[-1] == 1 else x, mode="L" if x.shape[-1] == 1 else "RGB")
        return self.transform(img), int(self.labels[i])


def view_transforms(kinds: tuple[str, ...], aug: Any, size: int, mean: tuple, std: tuple) -> Callable:
    """lightly's SimCLR transform with the suite's parameters; "clean" views are only normalized."""
    if aug.solarize_p or aug.blur_p:
        raise ValueError("the reference loops implement crop, flip, jitter and grayscale only")
    norm = {"mean": list(mean), "std": list(std)}
    params = dict(input_size=size, cj_prob=aug.jitter_p, cj_strength=1.0, cj_bright=aug.brightness,
                  cj_contrast=aug.contrast, cj_sat=aug.saturation, cj_hue=aug.hue, min_scale=aug.crop_scale_min,
                  random_gray_scale=aug.grayscale_p, gaussian_blur=0.0, hf_prob=aug.hflip_p, normalize=norm)
    if kinds == ("augmented", "augmented"):
        return SimCLRTransform(**params)
    augmented = SimCLRViewTransform(**{k: v for k, v in params.items() if k != "input_size"}, input_size=size)
    clean = T.Compose([T.ToTensor(), T.Normalize(mean, std)])
    parts = [augmented if k == "augmented" else clean for k in kinds]
    return lambda img: [t(img) for t in parts]


# ----------------------------------------------------------------------------- schedule
def warmup_then(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """LambdaLR factor: linear warmup over `warmup` steps, then cosine to 0 or constant."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return factor


def decay_groups(modules: list[nn.Module], weight_decay: float, extra_no_decay: tuple = ()) -> list[dict]:
    """lightly's split: no weight decay on norm layers and biases (nor on `extra_no_decay`)."""
    decay, no_decay = utils.get_weight_decay_parameters(modules)
    skip = {id(p) for p in extra_no_decay}
    return [{"params": [p for p in decay if id(p) not in skip and p.requires_grad], "weight_decay": weight_decay},
            {"params": [p for p in no_decay if p.requires_grad] + [p for p in decay if id(p) in skip],
             "weight_decay": 0.0}]


def make_optimizer(optim: Any, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    if optim.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum)
    if optim.name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=(optim.beta1, optim.beta2))
    if optim.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(optim.beta1, optim.beta2))
    if optim.name == "lars" and optim.lars_clip_lr:
        return ClippedLARS(groups, lr=lr, momentum=optim.momentum, eta=optim.lars_trust_coefficient)
    if optim.name == "lars":
        return LARS(groups, lr=lr, momentum=optim.momentum, trust_coefficient=optim.lars_trust_coefficient)
    raise ValueError(f"unknown optimizer {optim.name!r}")


class ClippedLARS(torch.optim.SGD):
    """LARS as solo-learn's CIFAR recipes run it (`solo/utils/lars.py`: eta, `clip_lr`,
    `exclude_bias_n_norm`): SGD whose gradient, for every parameter with weight decay, is first
    weight-decayed and then scaled by min(eta ||w|| / (||g|| + wd ||w||) / lr, 1)."""

    def __init__(self, params: Any, lr: float, momentum: float, eta: float, eps: float = 1e-8) -> None:
        super().__init__(params, lr=lr, momentum=momentum)
        self.eta, self.eps = eta, eps

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        for group in self.param_groups:
            wd = group["weight_decay"]
            group["weight_decay"] = 0.0  # applied here, before the scaling, not by SGD after it
            group["_wd"] = wd
            for p in group["params"]:
                if p.grad is None or wd == 0:
                    continue
                p_norm, g_norm = torch.norm(p), torch.norm(p.grad)
                if p_norm != 0 and g_norm != 0:
                    lars_lr = self.eta * p_norm / (g_norm + p_norm * wd + self.eps)
                    lars_lr = torch.clamp(lars_lr / group["lr"], max=1.0)
                    p.grad.add_(p, alpha=wd).mul_(lars_lr)
        loss = super().step(closure)
        for group in self.param_groups:
            group["weight_decay"] = group.pop("_wd")
        return loss


# ----------------------------------------------------------------------------- SimCLR
class SimCLR(nn.Module):
    """lightly examples/pytorch/simclr.py."""
    views = ("augmented", "augmented")

    def __init__(self, backbone: nn.Module, cfg: Any) -> None:
        super().__init__()
        d = backbone.num_features
        self.backbone = backbone
        self.projection_head = SimCLRProjectionHead(d, cfg.proj_hidden_dim or d, cfg.proj_output_dim)
        self.criterion = NTXentLoss(temperature=cfg.temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def loss(self, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
        x0, x1 = views
        return self.criterion(self(x0), self(x1))


# ----------------------------------------------------------------------------- BYOL
class BYOL(nn.Module):
    """lightly examples/pytorch/byol.py; the momentum follows the recipe's per-step cosine."""
    views = ("augmented", "augmented")

    def __init__(self, backbone: nn.Module, cfg: Any) -> None:
        super().__init__()
        d = backbone.num_features
        self.cfg = cfg
        self.backbone = backbone
        self.projection_head = BYOLProjectionHead(d, cfg.proj_hidden_dim or 2 * d, cfg.proj_output_dim)
        self.prediction_head = BYOLPredictionHead(cfg.proj_output_dim, cfg.pred_hidden_dim or 2 * d,
                                                  cfg.proj_output_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.criterion = NegativeCosineSimilarity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head_momentum(self.backbone_momentum(x).flatten(start_dim=1)).detach()

    def loss(self, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
        # lightly updates the target at the start of each step, with this step's momentum
        m = cosine_schedule(step, total, self.cfg.momentum_start, self.cfg.momentum_end)
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)
        x0, x1 = views
        p0, z0 = self(x0), self.forward_momentum(x0)
        p1, z1 = self(x1), self.forward_momentum(x1)
        return 0.5 * (self.criterion(p0, z1) + self.criterion(p1, z0))


# ----------------------------------------------------------------------------- VICReg
class VICReg(nn.Module):
    """lightly examples/pytorch/vicreg.py (its expander is BarlowTwinsProjectionHead)."""
    views = ("augmented", "augmented")

    def __init__(self, backbone: nn.Module, cfg: Any) -> None:
        super().__init__()
        d = backbone.num_features
        hidden = cfg.proj_hidden_dim or 4 * d
        self.backbone = backbone
        self.projection_head = BarlowTwinsProjectionHead(d, hidden, cfg.proj_output_dim or hidden)
        self.criterion = VICRegLoss(lambda_param=cfg.sim_weight, mu_param=cfg.var_weight, nu_param=cfg.cov_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x).flatten(start_dim=1))

    def loss(self, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
        x0, x1 = views
        return self.criterion(self(x0), self(x1))


# ----------------------------------------------------------------------------- MAE
def norm_pix(target: torch.Tensor) -> torch.Tensor:
    """facebookresearch/mae `norm_pix_loss`: each target patch standardized by its own statistics."""
    mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
    return (target - mean) / (var + 1.0e-6) ** 0.5


class MAE(nn.Module):
    """lightly examples/pytorch/mae.py (ViT): encode visible tokens, decode, MSE on masked patches."""
    views = ("augmented",)

    def __init__(self, vit: nn.Module, cfg: Any, in_chans: int) -> None:
        super().__init__()
        wide = vit.embed_dim >= 768
        decoder_dim, depth = cfg.decoder_dim or (512 if wide else 128), cfg.decoder_depth or (8 if wide else 2)
        self.cfg = cfg
        self.mask_ratio = cfg.mask_ratio
        self.patch_size = vit.patch_embed.patch_size[0]
        keep_init = cfg.vit_init == "backbone"
        self.backbone = MaskedVisionTransformerTIMM(vit=vit, weight_initialization="skip" if keep_init else "",
                                                    pos_embed_initialization="skip" if keep_init else "sincos")
        self.sequence_length = self.backbone.sequence_length
        self.decoder = MAEDecoderTIMM(num_patches=vit.patch_embed.num_patches, patch_size=self.patch_size,
                                      in_chans=in_chans, embed_dim=vit.embed_dim, decoder_embed_dim=decoder_dim,
                                      decoder_depth=depth, decoder_num_heads=max(1, decoder_dim // 32))

    def loss(self, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
        (images,) = views
        b = images.shape[0]
        idx_keep, idx_mask = utils.random_token_mask(size=(b, self.sequence_length), mask_ratio=self.mask_ratio,
                                                     device=images.device)
        x_encoded = self.backbone.encode(images=images, idx_keep=idx_keep)
        x_decode = self.decoder.embed(x_encoded)
        x_masked = utils.repeat_token(self.decoder.mask_token, (b, self.sequence_length))
        x_masked = utils.set_at_index(x_masked, idx_keep, x_decode.type_as(x_masked))
        x_pred = self.decoder.predict(utils.get_at_index(self.decoder.decode(x_masked), idx_mask))
        target = utils.get_at_index(utils.patchify(images, self.patch_size), idx_mask - 1)  # no class token
        if self.cfg.norm_pix_loss:
            target = norm_pix(target)
        return F.mse_loss(x_pred, target)


class MaskedInputCNN(nn.Module):
    """SimMIM-style masked-input reconstruction on a CNN: masked cells get a learned colour, the
    feature map is upsampled back to pixels, MSE on the masked cells only."""
    views = ("augmented",)

    def __init__(self, backbone: nn.Module, cfg: Any, in_chans: int, size: int, decoder: dict) -> None:
        super().__init__()
        self.cfg, self.backbone, self.size = cfg, backbone, size
        self.patch = decoder.pop("cell")
        self.mask_token = nn.Parameter(torch.zeros(1, in_chans, 1, 1))
        self.decoder = FeatureMapDecoder(out_channels=in_chans, size=size, **decoder)

    def loss(self, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
        (x,) = views
        b, grid = x.shape[0], self.size // self.patch
        _, idx_mask = utils.random_token_mask((b, grid * grid), self.cfg.cnn_mask_ratio, mask_class_token=True,
                                              device=x.device)
        mask = torch.zeros(b, grid * grid, device=x.device).scatter_(1, idx_mask, 1.0)
        pixel_mask = mask.view(b, 1, grid, 1, grid, 1).expand(-1, 1, -1, self.patch, -1, self.patch)
        pixel_mask = pixel_mask.reshape(b, 1, self.size, self.size)
        x_in = torch.where(pixel_mask.bool(), self.mask_token.expand_as(x), x)
        pred = utils.patchify(self.decoder(self.backbone.forward_features(x_in)), self.patch)
        target = utils.patchify(x, self.patch)
        if self.cfg.norm_pix_loss:
            target = norm_pix(target)
        per_cell = (pred - target).pow(2).mean(dim=-1)
        return (per_cell * mask).sum() / mask.sum()


# ----------------------------------------------------------------------------- autoencoders
class Block(nn.Module):
    """paper-AAVAE decoder BasicBlock (1fc158d): optional upscale, conv-relu-conv, skip, relu."""

    def __init__(self, inplanes: int, planes: int, upscale_to: int | None, project: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1)
        self.upsample = nn.Conv2d(inplanes, planes, 1) if project else None
        self.upscale_to = upscale_to

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upscale_to is not None:
            x = F.interpolate(x, size=(self.upscale_to, self.upscale_to), mode="nearest")
        identity = self.upsample(x) if self.upsample is not None else x
        out = self.conv2(self.relu(self.conv1(x)))
        return self.relu(out + identity)


class FeatureMapDecoder(nn.Module):
    """paper-AAVAE `Decoder` from its 1x1 conv on: 4 stages of BasicBlocks (the first of each with a
    1x1 projection of the skip), nearest upscaling to ceil(size/8), ceil(size/4), ceil(size/2),
    size from a 4x4 map (the official 4 -> 8 -> 16 -> 32 at 32px), then conv3x3-ReLU-conv3x3."""

    def __init__(self, in_channels: int, width: int, blocks: int, head_width: int, out_channels: int, size: int,
                 in_size: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 1)
        sizes = [math.ceil(size / 8), math.ceil(size / 4), math.ceil(size / 2), size]
        if sizes[0] < in_size:
            raise ValueError(f"the reference decoder upsamples a {in_size}px map; {size}px images are too small")
        stages, inplanes = [], width
        for i, s in enumerate(sizes):
            planes = max(8, width // 2 ** (i + 1))
            up = s if s != (sizes[i - 1] if i else in_size) else None
            layer = [Block(inplanes, planes, up, project=True)] + [Block(planes, planes, None, False)
                                                                  for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layer))
            inplanes = planes
        self.layers = nn.Sequential(*stages)
        self.conv2 = nn.Conv2d(inplanes, head_width, 3, padding=1)
        self.final_conv = nn.Conv2d(head_width, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(F.relu(self.conv1(x)))
        return self.final_conv(F.relu(self.conv2(x)))


class Decoder(nn.Module):
    """paper-AAVAE `Decoder`: two Linear+ReLU projections, reshape to (h/16, 4, 4), the rest."""

    def __init__(self, latent_dim: int, width: int, blocks: int, head_width: int, out_channels: int,
                 size: int) -> None:
        super().__init__()
        self.h_dim = width
        self.linear_projection1 = nn.Linear(latent_dim, width)
        self.linear_projection2 = nn.Linear(width, width)
        self.up = FeatureMapDecoder(width // 16, width, blocks, head_width, out_channels, size)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.linear_projection2(F.relu(self.linear_projection1(z))))
        return self.up(x.view(x.size(0), self.h_dim // 16, 4, 4))


class ProjectionHeadVAE(nn.Module):
    """paper-AAVAE `ProjectionHeadVAE`: Linear-BN-ReLU, then mu and log-variance (no bias)."""

    def __init__(self, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.first_layer = nn.Sequential(nn.Linear(input_dim, input_dim), nn.BatchNorm1d(input_dim), nn.ReLU())
        self.mu = nn.Linear(input_dim, output_dim, bias=False)
        self.logvar = nn.Linear(input_dim, output_dim, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.first_layer(x)
        return self.mu(x), self.logvar(x)


class StochasticAE(nn.Module):
    """paper-AAVAE `src/vae.py` `VAE.step` (ec38eb2): VAE with clean input, AASAE with `denoising`
    (input = augmented view, target = the clean image) and kl_coeff 0."""

    def __init__(self, backbone: nn.Module, cfg: Any, denoising: bool, decoder: dict) -> None:
        super().__init__()
        self.cfg, self.denoising = cfg, denoising
        self.views = ("augmented", "clean") if denoising else ("clean",)
        self.encoder = backbone
        self.projection = ProjectionHeadVAE(backbone.num_features, cfg.latent_dim)
        self.decoder = Decoder(cfg.latent_dim, **decoder)
        self.log_scale = nn.Parameter(torch.tensor([cfg.log_scale]), requires_grad=False)

    @staticmethod
    def sample(mu: torch.Tensor, log_var: torch.Tensor, eps: float = 1e-6) -> tuple[Normal, Normal, torch.Tensor]:
        std = torch.exp(log_var / 2.0) + eps
        p = Normal(torch.zeros_like(mu), torch.ones_like(std))
        q = Normal(mu, std)
        return p, q, q.rsample()

    def loss(self, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
        x, original = views if self.denoising else (views[0], views[0])
        with torch.no_grad():  # the official step encodes the original image too (for its logs)
            mu_orig, log_var_orig = self.projection(self.encoder(original))
        mu, log_var = self.projection(self.encoder(x))
        p, q, z = self.sample(mu, log_var)
        kl = kl_divergence(q, p).sum(dim=-1)
        with torch.no_grad():
            self.sample(mu_orig, log_var_orig)
        x_hat = self.decoder(z)
        log_pxz = Normal(x_hat, torch.exp(self.log_scale / 2.0) + 1e-6).log_prob(original).sum(dim=(1, 2, 3))
        return (self.cfg.kl_coeff * kl - log_pxz).mean()


class AAE(nn.Module):
    """Makhzani et al. 2015, section 2: per minibatch a reconstruction phase (encoder + decoder),
    then a regularization phase (the discriminator, then the encoder as generator), each with
    its own optimizer; uniform prior U(-1, 1)^d (Liu et al. 2018)."""
    views = ("clean",)

    def __init__(self, backbone: nn.Module, cfg: Any, decoder: dict) -> None:
        super().__init__()
        h = backbone.num_features
        self.cfg = cfg
        self.encoder = nn.Sequential(backbone, nn.Linear(h, h), nn.BatchNorm1d(h), nn.ReLU(),
                                     nn.Linear(h, cfg.latent_dim, bias=False), nn.Tanh())
        self.decoder = Decoder(cfg.latent_dim, **decoder)
        d = cfg.disc_hidden
        self.discriminator = nn.Sequential(nn.Linear(cfg.latent_dim, d), nn.LeakyReLU(0.2), nn.Linear(d, d),
                                           nn.LeakyReLU(0.2), nn.Linear(d, 1))
        self.log_scale = cfg.log_scale
        betas = (cfg.adv_beta1, 0.999)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.disc_lr, betas=betas)
        self.opt_g = torch.optim.Adam(self.encoder.parameters(), lr=cfg.gen_lr, betas=betas)

    def loss(self, views: list[torch.Tensor], step: int, total: int) -> torch.Tensor:
        """Reconstruction phase: -log N(x; decoder(encoder(x)), sigma), summed over pixels."""
        (x,) = views
        sigma = math.exp(self.log_scale / 2.0) + 1e-6
        return -Normal(self.decoder(self.encoder(x)), sigma).log_prob(x).sum(dim=(1, 2, 3)).mean()

    def regularize(self, views: list[torch.Tensor]) -> dict[str, float]:
        """Regularization phase: discriminator step, then generator (encoder) step."""
        (x,) = views
        z = self.encoder(x)
        prior = torch.rand_like(z) * 2 - 1
        d_real, d_fake = self.discriminator(prior), self.discriminator(z.detach())
        d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                  + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
        self.opt_d.zero_grad()
        d_loss.backward()
        self.opt_d.step()
        g_out = self.discriminator(z)
        g_loss = F.binary_cross_entropy_with_logits(g_out, torch.ones_like(g_out))
        self.opt_g.zero_grad()
        g_loss.backward()
        self.opt_g.step()
        return {"d_loss": float(d_loss), "g_loss": float(g_loss)}

    def main_parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.decoder.parameters()]


# ----------------------------------------------------------------------------- building + loop
@dataclass(frozen=True)
class Recipe:
    """The numbers one reference run trains with (from the harness's resolved config)."""
    method: str
    backbone: str
    in_chans: int
    size: int
    mean: tuple
    std: tuple
    method_config: Any
    optim: Any
    aug: Any
    epochs: int
    batch_size: int
    warmup_epochs: int
    decoder: dict          # autoencoders / CNN MAE: decoder sizes (the recipe's auto sizes, resolved)
    seed: int
    grad_clip: float = 0.0


def check(recipe: Recipe) -> None:
    """ValueError for what the reference loops do not implement (before anything trains)."""
    if recipe.backbone not in REFERENCE_BACKBONES:
        raise ValueError(f"the reference loops build {', '.join(REFERENCE_BACKBONES)} only, not {recipe.backbone!r}")
    if recipe.aug.solarize_p or recipe.aug.blur_p:
        raise ValueError("the reference loops implement crop, flip, jitter and grayscale only (set aug.solarize_p=0 "
                         "and aug.blur_p=0)")
    if recipe.grad_clip:
        raise ValueError("the reference loops do not clip gradients (train.grad_clip must be 0)")
    if recipe.decoder and "cell" not in recipe.decoder and math.ceil(recipe.size / 8) < 4:
        raise ValueError(f"the reference decoder needs images of at least 25 px, not {recipe.size}")


def build(recipe: Recipe) -> nn.Module:
    """The reference model of `recipe.method`, initialised from the recipe's seed."""
    torch.manual_seed(recipe.seed)
    backbone = make_backbone(recipe.backbone, recipe.in_chans, recipe.size)
    cfg, m = recipe.method_config, recipe.method
    out = dict(out_channels=recipe.in_chans, size=recipe.size)
    if m == "simclr":
        return SimCLR(backbone, cfg)
    if m == "byol":
        return BYOL(backbone, cfg)
    if m == "vicreg":
        return VICReg(backbone, cfg)
    if m == "mae" and isinstance(backbone, timm.models.VisionTransformer):
        return MAE(backbone, cfg, recipe.in_chans)
    if m == "mae":
        return MaskedInputCNN(backbone, cfg, recipe.in_chans, recipe.size, dict(recipe.decoder))
    if m in ("vae", "aasae"):
        return StochasticAE(backbone, cfg, denoising=m == "aasae", decoder={**recipe.decoder, **out})
    if m == "aae":
        return AAE(backbone, cfg, decoder={**recipe.decoder, **out})
    raise ValueError(f"no reference loop for {m!r}")


def encoder_of(model: nn.Module) -> nn.Module:
    """The network whose pooled output every evaluation uses (the backbone, before any head)."""
    if isinstance(model, MAE):
        return model.backbone.vit
    if isinstance(model, AAE):
        return model.encoder[0]
    return model.encoder if isinstance(model, StochasticAE) else model.backbone


def peak_lr(recipe: Recipe) -> float:
    """The linear scaling rule: base lr x batch / the batch the base lr is quoted at."""
    return recipe.optim.lr * recipe.batch_size / recipe.optim.lr_batch_size


def exempt_tokens(model: nn.Module) -> tuple[nn.Parameter, ...]:
    """A timm ViT's tokens and position embedding (timm's no_weight_decay), and mask tokens."""
    out: tuple[nn.Parameter, ...] = ()
    for m in model.modules():
        if isinstance(m, timm.models.VisionTransformer):
            out += tuple(p for n, p in m.named_parameters() if n in m.no_weight_decay())
    if isinstance(model, MAE):
        out += (model.decoder.mask_token,)
    if isinstance(model, MaskedInputCNN):
        out += (model.mask_token,)
    return out


def main_optimizer(model: nn.Module, recipe: Recipe, lr: float) -> torch.optim.Optimizer:
    extra = () if recipe.optim.token_weight_decay else exempt_tokens(model)
    if isinstance(model, AAE):  # the reconstruction phase's optimizer: encoder + decoder
        groups = decay_groups([model.encoder, model.decoder], recipe.optim.weight_decay, extra)
    else:  # the whole model; the frozen BYOL target and fixed tensors drop out (requires_grad False)
        groups = decay_groups([model], recipe.optim.weight_decay, extra)
    return make_optimizer(recipe.optim, groups, lr)


class GivenViews:
    """Full batches of uint8 `images` whose views come from a given function, in place of the PIL
    transforms in a DataLoader (the diagnostics `bench parity --reference-views harness|matched`,
    which separate the data pipeline and the random streams from the training code). Each pass
    (epoch) takes its image order from `order(epoch)` when given, else a fresh seeded shuffle."""

    def __init__(self, images: torch.Tensor, batch_size: int, seed: int,
                 make_views: Callable[[torch.Tensor], list[torch.Tensor]],
                 order: Callable[[int], torch.Tensor] | None = None) -> None:
        self.images, self.batch_size, self.make_views, self.order = images, batch_size, make_views, order
        self.gen = torch.Generator().manual_seed(seed)
        self.passes = 0

    def __len__(self) -> int:
        return self.images.shape[0] // self.batch_size

    def __iter__(self) -> Any:
        n = self.images.shape[0]
        order = self.order(self.passes) if self.order is not None else torch.randperm(n, generator=self.gen)
        self.passes += 1
        for i in range(len(self)):
            yield self.make_views(self.images.index_select(0, order[i * self.batch_size:(i + 1) * self.batch_size])), None


def train(recipe: Recipe, images: torch.Tensor, labels: torch.Tensor, workers: int = 2,
          progress: Callable[[int, int, float], None] | None = None,
          make_views: Callable[[torch.Tensor], list[torch.Tensor]] | None = None,
          order: Callable[[int], torch.Tensor] | None = None,
          initialize: Callable[[nn.Module], None] | None = None) -> tuple[nn.Module, float]:
    """Train the reference model on uint8 `images`; returns (encoder, wall seconds incl. data loading).
    Diagnostics (the reference's own pipeline when all are None): `make_views` makes each batch's
    views from its uint8 images instead of the PIL transforms in a DataLoader; `order(epoch)` gives
    each epoch's image order (with `make_views`); `initialize` replaces the built model's initial
    weights (e.g. by another implementation's)."""
    if order is not None and make_views is None:
        raise ValueError("an image order needs given views (make_views)")
    model = build(recipe)
    if initialize is not None:
        initialize(model)
    if make_views is not None:
        loader = GivenViews(images, recipe.batch_size, recipe.seed, make_views, order)
    else:
        transform = view_transforms(model.views, recipe.aug, recipe.size, recipe.mean, recipe.std)
        loader = DataLoader(ViewsDataset(images, labels, transform), batch_size=recipe.batch_size, shuffle=True,
                            drop_last=True, num_workers=workers, persistent_workers=workers > 0,
                            generator=torch.Generator().manual_seed(recipe.seed))
    steps_per_epoch = len(loader)
    total = steps_per_epoch * recipe.epochs
    optimizer = main_optimizer(model, recipe, peak_lr(recipe))
    warmup = steps_per_epoch * min(recipe.warmup_epochs, recipe.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then(recipe.optim.schedule, warmup, total))
    torch.manual_seed(recipe.seed)
    model.train()
    step, t0 = 0, time.perf_counter()
    for epoch in range(recipe.epochs):
        for views, _ in loader:
            views = views if isinstance(views, (list, tuple)) else [views]
            optimizer.zero_grad()  # also clears the AAE generator step's encoder gradients
            loss = model.loss(list(views), step, total)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"reference loss is {loss.item()} at step {step}")
            loss.backward()
            optimizer.step()
            if isinstance(model, AAE):
                model.regularize(list(views))
            scheduler.step()
            step += 1
            if progress is not None:
                progress(step, total, loss.item())
    return encoder_of(model).eval(), time.perf_counter() - t0
