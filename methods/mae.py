"""MAE: mask a large random subset of image patches, encode only what is visible, and let a
light decoder reconstruct the pixels of the masked patches; the loss is the MSE on masked
patches only, against per-patch normalized pixels (norm_pix_loss).

[0] He et al., "Masked Autoencoders Are Scalable Vision Learners", 2021,
    https://arxiv.org/abs/2111.06377
ViT backbones run true MAE (facebookresearch/mae, lightly's MaskedVisionTransformerTIMM and
MaskedVisionTransformerDecoderTIMM: random token dropping at ratio 0.75, a transformer decoder
over visible + mask tokens; no weight decay on cls/mask tokens and position embeddings). The
encoder keeps the shared ViT's timm init and learned position embedding (`vit_init="backbone"`,
so MAE starts where every other method starts); `vit_init="mae"` is the paper's xavier init
with a fixed 2-D sin-cos position embedding (docs/protocols.md).
The paper's decoder is 512-d x 8 blocks; for encoders narrower than ViT-B (768-d) the
default here is 128-d x 2 blocks (a 192-d ViT-Tiny would otherwise spend most of its compute
in the decoder). CNN backbones run masked-input reconstruction (SimMIM/SparK-style [1, 2]):
input cells of ~size/8 px are replaced by a learned mask colour at ratio 0.6, the backbone's
feature map (timm `forward_features`) is upsampled back to the image by a light residual
decoder, and the same masked, normalized-pixel loss scores the masked cells only.
[1] Xie et al., "SimMIM", 2021, https://arxiv.org/abs/2111.09886
[2] Tian et al., "SparK: Designing BERT for Convolutional Networks", 2023, https://arxiv.org/abs/2301.03580
Optimizer: AdamW, base lr 1.5e-4 x batch/256, wd 0.05, betas (0.9, 0.95), cosine.
Native augmentation: random resized crop (scale 0.2-1) + the suite's flip only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from lightly.models import utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM
from torch import nn

from bench.backbones import Backbone
from bench.errors import UserError
from methods.autoencoder import ResidualUpsampler, decoder_size, masked_patch_loss
from methods.base import AUGMENTED, DataInfo, Method, OptimConfig, register, Logs


@dataclass(frozen=True)
class MAEConfig:
    mask_ratio: float = 0.75       # ViT: fraction of patch tokens dropped (paper: 0.75)
    decoder_dim: int = 0           # ViT decoder width; 0 = 512 (paper) for >= 768-d encoders, else 128
    decoder_depth: int = 0         # ViT decoder blocks; 0 = 8 (paper) for >= 768-d encoders, else 2
    norm_pix_loss: bool = True     # targets = pixels standardized per patch (paper default for features)
    vit_init: str = "backbone"     # backbone: keep the ViT's timm init (learned pos-embed), as every other
                                   # method starts from; mae: MAE's xavier init + fixed sin-cos pos-embed
    cnn_mask_ratio: float = 0.6    # CNN variant: fraction of input cells masked (SimMIM/SparK: 0.6)
    cnn_patch: int = 0             # CNN mask cell in px; 0 = smallest divisor of the size >= max(2, size/8)
    cnn_decoder_width: int = 0     # CNN decoder width; 0 = auto (as the autoencoders' decoder, methods/autoencoder.py)
    cnn_decoder_blocks: int = 1    # residual blocks per up-stage of the CNN decoder (light, as SparK's)
    cnn_decoder_head_width: int = 0  # channels of its last 3x3 conv; 0 = auto (as the autoencoders')


VIT_INITS = ("backbone", "mae")


def _cell_size(size: int, requested: int) -> int:
    if requested:
        if size % requested:
            raise ValueError(f"mae.cnn_patch={requested} must divide the image size {size}")
        return requested
    return next(d for d in range(max(2, -(-size // 8)), size + 1) if size % d == 0)


@register
class MAE(Method):
    name = "mae"
    paradigm = "masked"
    views = (AUGMENTED,)
    Config = MAEConfig
    optim = OptimConfig(name="adamw", lr=1.5e-4, lr_batch_size=256, weight_decay=0.05, beta1=0.9, beta2=0.95)
    native_aug = {"crop_scale_min": 0.2, "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0}
    reference = "He et al. 2021, arXiv:2111.06377 (CNN: SimMIM/SparK-style masked-input reconstruction)"

    def __init__(self, cfg: MAEConfig, backbone: Backbone, data: DataInfo) -> None:
        super().__init__(cfg, backbone, data)
        self.is_vit = backbone.kind == "vit"
        if self.is_vit:
            vit = backbone.net
            self.patch = backbone.patch_size
            if cfg.vit_init not in VIT_INITS:
                raise UserError(f"mae.vit_init={cfg.vit_init!r}: choose one of {', '.join(VIT_INITS)}")
            # shares the backbone's weights; "backbone" leaves its init (and learned pos-embed) alone
            keep = cfg.vit_init == "backbone"
            self.encoder = MaskedVisionTransformerTIMM(
                vit=vit, weight_initialization="skip" if keep else "",
                pos_embed_initialization="skip" if keep else "sincos")
            self.encoder.mask_token.requires_grad_(False)        # the encoder never sees mask tokens
            wide = vit.embed_dim >= 768
            dim, depth = cfg.decoder_dim or (512 if wide else 128), cfg.decoder_depth or (8 if wide else 2)
            self.decoder_embed = nn.Linear(vit.embed_dim, dim)
            self.decoder = MaskedVisionTransformerDecoderTIMM(
                num_patches=vit.patch_embed.num_patches, embed_dim=dim, depth=depth, num_heads=max(1, dim // 32),
                num_prefix_tokens=vit.num_prefix_tokens)
            self.decoder_pred = nn.Linear(dim, self.patch ** 2 * data.channels)
            for layer in (self.decoder_embed, self.decoder_pred):  # MAE's init of its decoder linears
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)
        else:
            self.patch = _cell_size(data.size, cfg.cnn_patch)
            self.mask_token = nn.Parameter(torch.zeros(1, data.channels, 1, 1))  # learned "mask colour"
            with torch.no_grad():  # the feature map's size and width, from one dry run in eval mode
                was_training = backbone.training
                fmap = backbone.eval().net.forward_features(torch.zeros(1, data.channels, data.size, data.size))
                backbone.train(was_training)
            width, blocks, head = decoder_size(cfg.cnn_decoder_width, cfg.cnn_decoder_blocks,
                                               cfg.cnn_decoder_head_width, backbone.num_features)
            self.decoder = ResidualUpsampler(fmap.shape[1], width, data.size, fmap.shape[-1], data.channels, blocks, head)

    def no_weight_decay(self) -> set[int]:
        """The backbone's tokens and pos-embed, and the mask token (decoder's on a ViT, as MAE;
        the input mask colour on a CNN, as SimMIM)."""
        extra = {id(self.decoder.mask_token) if self.is_vit else id(self.mask_token)}
        return super().no_weight_decay() | extra

    @property
    def variant(self) -> str:
        return "mae" if self.is_vit else "mae (masked-input reconstruction, CNN)"

    def training_step(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, Logs]:
        x = views[0]
        pred, mask = self._predict(x)
        loss = masked_patch_loss(pred, utils.patchify(x, self.patch), mask, self.cfg.norm_pix_loss)
        return loss, {"masked_mse": loss.detach()}

    def _predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted pixels for every patch (B, L, p*p*C) and the mask (B, L), 1 = masked."""
        b = x.shape[0]
        if self.is_vit:
            seq = self.encoder.sequence_length  # prefix (CLS) token + patches; CLS is never masked
            idx_keep, idx_mask = utils.random_token_mask((b, seq), self.cfg.mask_ratio, device=x.device)
            visible = self.decoder_embed(self.encoder.encode(x, idx_keep=idx_keep))  # encoder sees ~25% of tokens
            tokens = utils.repeat_token(self.decoder.mask_token, (b, seq))
            tokens = utils.set_at_index(tokens, idx_keep, visible.type_as(tokens))
            n_prefix = seq - self.decoder.num_patches
            pred = self.decoder_pred(self.decoder(tokens)[:, n_prefix:])
            mask = torch.zeros(b, seq, device=x.device).scatter_(1, idx_mask, 1.0)[:, n_prefix:]
            return pred, mask
        grid = x.shape[-1] // self.patch
        _, idx_mask = utils.random_token_mask((b, grid * grid), self.cfg.cnn_mask_ratio, mask_class_token=True,
                                              device=x.device)
        mask = torch.zeros(b, grid * grid, device=x.device).scatter_(1, idx_mask, 1.0)
        m = F.interpolate(mask.view(b, 1, grid, grid), scale_factor=self.patch, mode="nearest")
        x_in = x * (1 - m) + self.mask_token * m  # masked cells get the learned mask colour
        x_hat = self.decoder(self.backbone.net.forward_features(x_in))
        return utils.patchify(x_hat, self.patch), mask

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of the whole, unmasked image (ViT: the CLS token)."""
        return self.backbone(x)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Visible patches from the input, masked ones from the prediction (de-normalized
        with the true patch statistics when norm_pix_loss, as in the MAE demo)."""
        pred, mask = self._predict(x)
        patches = utils.patchify(x, self.patch)
        if self.cfg.norm_pix_loss:
            pred = pred * (patches.var(-1, keepdim=True) + 1e-6).sqrt() + patches.mean(-1, keepdim=True)
        out = torch.where(mask.bool().unsqueeze(-1), pred.to(patches.dtype), patches)
        return utils.unpatchify(out, self.patch, x.shape[1])
