"""Stage 2 — Prithvi refiner: `opt_v1` + month + biome → `opt_v2`, better spectra without moving edges.

Contract: `forward(opt_v1, month, biome_code)` takes (B, 4, H, W) reflectance in [0, 1], month (B,)
1–12 (0 = unknown → June) and biome_code (B,) 0–15, and returns (B, 4, H, W) in [0, 1].

Design: a terratorch Prithvi backbone sees the standardised image (B08 feeds the pretrained NIR
channel); its patch tokens, upsampled to full resolution and concatenated with the input, feed a light
ConvNeXt-style head whose blocks are FiLM-conditioned on the month (sin/cos, cyclic) and a learned
biome embedding. The head predicts a per-pixel, per-band *log-gain*: `opt_v2 = opt_v1 · exp(g)`. Its
last layer starts at zero, so an untrained refiner returns its input exactly and Stage 1's geometry is
preserved by construction. Any H, W work: inputs are padded to the patch size and outputs cropped back.

Why a gain, not an additive residual: a generator's colour errors are mostly multiplicative (per
class and band), and a gain's errors are relative. An additive head's absolute errors of a few 1e-3
are harmless on land but swamp dark pixels (water: B08 ≈ 0.015), where NDVI is most sensitive.
For the same reason the head also sees log-reflectance, which spreads those dark values apart.
Measured on the synthetic benchmark (bench/RESULTS.md), 600 steps: NDVI RMSE 0.0616 → 0.0534.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from axion_ray.bands import DEFAULT_MONTH, N_BIOMES, PRITHVI_MEAN_DN, PRITHVI_STD_DN, S2_DN_SCALE
from axion_ray.models.common import pad_to_multiple
from axion_ray.models.registry import STAGES

PRITHVI_PATCH = 16
COND_DIM = 32              # the conditioning vector's width (ConditionEmbedding → every block's FiLM)
_LOG_FLOOR = 1e-3          # log(reflectance + floor): finite at 0, resolves water's ~0.01–0.05
_LOG_CENTRE, _LOG_SCALE = -3.0, 1.5  # maps log-reflectance of 0.001–1 to about −2.6…+2
_MAX_LOG_GAIN = 4.0        # a gain of e^±4 is far beyond any colour error; bounds a wild early step


def image_features(image: torch.Tensor) -> torch.Tensor:
    """What the head sees of each pixel: reflectance and scaled log-reflectance (B, 8, H, W)."""
    log_refl = torch.log(image.clamp_min(0.0) + _LOG_FLOOR)
    return torch.cat([image, (log_refl - _LOG_CENTRE) / _LOG_SCALE], dim=1)


def month_features(month: torch.Tensor) -> torch.Tensor:
    """Cyclic month encoding (B, 2); month 0 (unknown) is treated as June."""
    m = torch.where(month <= 0, torch.full_like(month, DEFAULT_MONTH), month).float()
    angle = 2 * math.pi * (m - 1) / 12.0
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1)


class ConditionEmbedding(nn.Module):
    """Month (cyclic) + a learned biome embedding → one conditioning vector per tile. Shared by Stage 2's
    head and the regression stages' UNet (models/regress.py)."""

    def __init__(self, dim: int = COND_DIM):
        super().__init__()
        self.month_proj = nn.Linear(2, dim)
        self.biome_embed = nn.Embedding(N_BIOMES, dim)
        nn.init.zeros_(self.biome_embed.weight)  # a biome never seen in training stays neutral

    def forward(self, month: torch.Tensor, biome: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.month_proj(month_features(month)) + self.biome_embed(biome.long().clamp(0, N_BIOMES - 1)))


class PixelLayerNorm(nn.Module):
    """ConvNeXt's LayerNorm of channels-first maps: each pixel normalised over its channels alone.

    Ours, not timm's `LayerNorm2d` (the same computation): importing `timm.layers` costs ~3 s in every
    actor that builds a regression stage, which needs nothing else from timm."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


#: How a block normalises, by the name a checkpoint records as `norm`:
#: - `tile`: one statistic over the channels *and the whole image* (GroupNorm with one group): every
#:   pixel's features depend on what else the tile holds and on its size — a 32-px training crop and a
#:   64-px tile are normalised differently, and neighbouring tiles disagree at their seam;
#: - `pixel`: ConvNeXt's own LayerNorm, per pixel over channels: a pixel's output depends on its
#:   neighbourhood only, at any tile size. Measured (bench/RESULTS.md (U)): Stage 1 better with it.
BLOCK_NORMS = ("tile", "pixel")


class ConvNeXtFiLMBlock(nn.Module):
    """ConvNeXt block (7x7 depthwise, norm, inverted MLP) with FiLM on the normalised features."""

    def __init__(self, dim: int, cond_dim: int, mlp_ratio: int = 2, norm: str = "tile"):
        super().__init__()
        if norm not in BLOCK_NORMS:
            raise ValueError(f"unknown block norm {norm!r}; known: {', '.join(BLOCK_NORMS)}")
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = PixelLayerNorm(dim) if norm == "pixel" else nn.GroupNorm(1, dim)
        self.film = nn.Linear(cond_dim, 2 * dim)
        # MLP ratio 2, not ConvNeXt's 4: the head runs at full resolution and dominates CPU time.
        self.pw1 = nn.Conv2d(dim, mlp_ratio * dim, 1)
        self.pw2 = nn.Conv2d(mlp_ratio * dim, dim, 1)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(cond)[..., None, None].chunk(2, dim=1)
        h = self.norm(self.dwconv(x)) * (1 + scale) + shift
        return x + self.pw2(F.gelu(self.pw1(h)))


class RefinerHead(nn.Module):
    """Backbone tokens + per-pixel image features → per-band log-gain (zero at initialisation)."""

    def __init__(self, embed_dim: int, dim: int, blocks: int):
        super().__init__()
        self.cond = ConditionEmbedding()  # built first, as its two layers were: the same random start
        self.token_proj = nn.Conv2d(embed_dim, dim, 1)
        self.stem = nn.Conv2d(dim + 8, dim, 1)  # per-pixel mix; spatial context comes from the blocks
        self.blocks = nn.ModuleList(ConvNeXtFiLMBlock(dim, COND_DIM) for _ in range(blocks))
        self.out = nn.Conv2d(dim, 4, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints from before the shared ConditionEmbedding hold its two layers at the head's top
        # level (`head.month_proj.*`, `head.biome_embed.*`): the same tensors, moved under `cond.`.
        for key in [k for k in state_dict if k.startswith((f"{prefix}month_proj.", f"{prefix}biome_embed."))]:
            state_dict[f"{prefix}cond.{key[len(prefix):]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, tokens: torch.Tensor, image: torch.Tensor, month: torch.Tensor, biome: torch.Tensor) -> torch.Tensor:
        cond = self.cond(month, biome)
        feats = F.interpolate(self.token_proj(tokens), size=image.shape[-2:], mode="bilinear", align_corners=False)
        # channels-last: ~2x faster convolutions on CPU (oneDNN), and what GPUs' tensor cores prefer.
        pixels = image_features(image)
        h = self.stem(torch.cat([feats, pixels], dim=1).contiguous(memory_format=torch.channels_last))
        for block in self.blocks:
            h = block(h, cond)
        return self.out(h).contiguous()


class PrithviRefiner(nn.Module):
    INPUTS = STAGES[2].model_inputs
    OUTPUT = STAGES[2].output
    AMP_DTYPE = torch.float16  # H100: fp16 3,124 tiles/s vs bf16 393 at batch 64 (bench/RESULTS.md)

    def __init__(self, backbone: nn.Module, *, head_dim: int = 48, head_blocks: int = 2, temporal: bool = False):
        super().__init__()
        self.backbone = backbone
        self.temporal = temporal
        self.head = RefinerHead(backbone.embed_dim, head_dim, head_blocks)
        self.register_buffer("mean", torch.tensor(PRITHVI_MEAN_DN).view(1, 4, 1, 1) / S2_DN_SCALE, persistent=False)
        self.register_buffer("std", torch.tensor(PRITHVI_STD_DN).view(1, 4, 1, 1) / S2_DN_SCALE, persistent=False)

    def _temporal_coords(self, month: torch.Tensor) -> torch.Tensor:
        # `_tl` backbones embed (year, day-of-year); we know the month only: mid-month of a fixed year.
        m = torch.where(month <= 0, torch.full_like(month, DEFAULT_MONTH), month).float()
        doy = (m - 1) * 30.4 + 15.0
        return torch.stack([torch.full_like(doy, 2020.0), doy], dim=-1)[:, None, :]

    def forward(self, opt_v1: torch.Tensor, month: torch.Tensor, biome_code: torch.Tensor) -> torch.Tensor:
        image, (h, w) = pad_to_multiple(opt_v1.float(), PRITHVI_PATCH)
        normed = (image - self.mean) / self.std
        kwargs = {"temporal_coords": self._temporal_coords(month)} if self.temporal else {}
        tokens = self.backbone(normed, **kwargs)[-1][:, 1:]  # last block, drop the CLS token
        gh, gw = image.shape[-2] // PRITHVI_PATCH, image.shape[-1] // PRITHVI_PATCH
        tokens = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw)
        log_gain = self.head(tokens.float(), image, month, biome_code).clamp(-_MAX_LOG_GAIN, _MAX_LOG_GAIN)
        return (image * torch.exp(log_gain)).clamp(0.0, 1.0)[..., :h, :w]
