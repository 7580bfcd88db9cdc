"""The regression kind of every stage: S1 and/or the optical input + month + biome → reflectance, in one pass.

Why beside generation: TerraMind's generation needs its published weights (unreachable on machines
without the Hub) and ~75x Stage 2's time per tile; a regression model learns from the store's own
(s1 → s2_truth) pairs and runs at Stage 2's pace. Generation stays for users with the weights.

Contract (`RegressStage1`): `forward(s1, month, biome_code)` — (B, 2, H, W) σ0 dB [VV, VH], month
(B,) 1–12 (0 = unknown), biome (B,) 0–15 — returns (B, 4, H, W) reflectance in [0, 1].
`RegressStage3`: `forward(s1, opt_v2, month, biome_code)` returns `opt_v2 · exp(g)` with a bounded
log-gain `g` (|g| ≤ `max_log_gain`, zero at initialisation): a grounding that re-reads the SAR but
keeps `opt_v2`'s geometry, as Stage 2's gain keeps Stage 1's.

Design: a small UNet (three 2x downsamplings, ConvNeXt blocks FiLM-conditioned on month and biome —
the blocks of Stage 2's head, here normalised per pixel: `DEFAULT_NORM`) whose bottleneck optionally
adds the tokens of the TerraMind encoder (terratorch's BACKBONE_REGISTRY `terramind_v1_*`, S1GRD or
S1GRD + S2L2A, the file `TerraMind_v1_*.pt` from local disk when present, LoRA on it; else trained
from scratch).
`encoder="unet"` leaves the encoder out (the plain convolutional variant); `encoder="pixel"` (stages
with an optical input: `PixelStage3`, and `PixelStage2`, Stage 2's only regression model, on `opt_v1`
alone) is a per-pixel spectral calibrator — see `PixelCalibrator`. The UNet carries the
full-resolution detail a 16-px-patch ViT cannot; the encoder adds context over the whole tile.
Inputs of any H, W work: they are padded to a multiple of the 16-px patch and cropped back (the
encoder alone, without TerraMind's diffusion tokenizer, has no square-of-32 rule).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from axion_ray.bands import N_BIOMES
from axion_ray.models.common import pad_to_multiple
from axion_ray.models.registry import stage_spec
from axion_ray.models.s2l2a import assemble_s2l2a, standardize_s2l2a
from axion_ray.models.stage2 import COND_DIM, ConditionEmbedding, ConvNeXtFiLMBlock, image_features, month_features

_PATCH = 16
#: The UNet blocks' normalisation for new models (models/stage2.BLOCK_NORMS). A checkpoint without a
#: `norm` predates the choice and was trained with `tile`, which `models/builder` then rebuilds.
DEFAULT_NORM = "pixel"
# TerraMind's pretraining statistics of S1GRD (dB) and S2L2A (DN): what its encoder expects to see.
_S1_MEAN, _S1_STD = (-12.599, -20.293), (5.195, 5.890)


def standardize_s1(s1: torch.Tensor) -> torch.Tensor:
    """σ0 dB → TerraMind's standardised S1GRD (what its encoder was pretrained on)."""
    mean = torch.tensor(_S1_MEAN, device=s1.device).view(1, 2, 1, 1)
    std = torch.tensor(_S1_STD, device=s1.device).view(1, 2, 1, 1)
    return (s1 - mean) / std


def s1_features(s1: torch.Tensor) -> torch.Tensor:
    """σ0 dB standardised with TerraMind's S1GRD statistics, plus the VV−VH ratio (a vegetation cue)."""
    s1 = s1.float().clamp(-40.0, 10.0)
    return torch.cat([standardize_s1(s1), ((s1[:, :1] - s1[:, 1:]) - 7.0) / 3.0], dim=1)


class _Level(nn.Module):
    """One UNet level: a 1x1 mix to `dim` channels, then a FiLM-conditioned ConvNeXt block."""

    def __init__(self, in_dim: int, dim: int, norm: str):
        super().__init__()
        self.mix = nn.Conv2d(in_dim, dim, 1)
        self.block = ConvNeXtFiLMBlock(dim, COND_DIM, norm=norm)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.block(self.mix(x), cond)


class RegressionDecoder(nn.Module):
    """The trainable image path: a conditioned UNet; `tokens` (B, D, H/16, W/16) join at the bottleneck."""

    def __init__(self, in_channels: int, width: int, token_dim: int | None, norm: str):
        super().__init__()
        dims = (width, 2 * width, 4 * width, 4 * width)
        self.cond = ConditionEmbedding()
        self.down = nn.ModuleList([_Level(in_channels, dims[0], norm)] +
                                  [_Level(dims[i - 1], dims[i], norm) for i in range(1, len(dims))])
        self.pool = nn.AvgPool2d(2)
        self.token_proj = nn.Conv2d(token_dim, dims[-1], 1) if token_dim else None
        self.up = nn.ModuleList(_Level(dims[i + 1] + dims[i], dims[i], norm) for i in reversed(range(len(dims) - 1)))
        self.out = nn.Conv2d(dims[0], 4, 1)

    def forward(self, x: torch.Tensor, month: torch.Tensor, biome: torch.Tensor,
                tokens: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.cond(month, biome)
        skips = []
        h = x.contiguous(memory_format=torch.channels_last)  # ~2x faster convolutions on CPU (oneDNN)
        for i, level in enumerate(self.down):
            if i:
                skips.append(h)
                h = self.pool(h)
            h = level(h, cond)
        if self.token_proj is not None and tokens is not None:
            h = h + F.interpolate(self.token_proj(tokens), size=h.shape[-2:], mode="bilinear", align_corners=False)
        for level, skip in zip(self.up, reversed(skips)):
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = level(torch.cat([h, skip], dim=1), cond)
        return self.out(h).contiguous()


class RegressionStage(nn.Module):
    """Shared body of the two regression stages (see the module docstring)."""

    STAGE = 1

    def __init__(self, encoder: nn.Module | None, *, width: int = 32, norm: str = DEFAULT_NORM):
        super().__init__()
        self.encoder = encoder
        self.norm = norm  # the blocks' normalisation (models/stage2.BLOCK_NORMS), recorded in checkpoints
        token_dim = encoder.out_channels[-1] if encoder is not None else None  # terratorch's per-layer widths
        self.decoder = RegressionDecoder(self.in_channels, width, token_dim, norm)

    in_channels = 3

    @property
    def encoder_name(self) -> str:
        """What the model was built on, as `build_stage(encoder=...)` names it."""
        return "unet" if self.encoder is None else "terramind"

    def _tokens(self, modalities: dict[str, torch.Tensor], hw: tuple[int, int]) -> torch.Tensor | None:
        if self.encoder is None:
            return None
        tokens = self.encoder(modalities)[-1]  # last block (B, L, D); TerraMind merges modalities by mean
        gh, gw = hw[0] // _PATCH, hw[1] // _PATCH
        return tokens[:, -gh * gw:].transpose(1, 2).reshape(tokens.shape[0], -1, gh, gw).float()


class RegressStage1(RegressionStage):
    """S1 + month + biome → opt_v1."""

    INPUTS = stage_spec(1, "regress").model_inputs
    OUTPUT = stage_spec(1, "regress").output
    AMP_DTYPE = torch.float16

    @torch.no_grad()
    def start_from(self, spectrum) -> None:
        """Make the untrained model return a flat image of `spectrum` (the training truth's mean): its
        output bias becomes that spectrum's logit. Measured (60 s of training on the demo's AOIs): NDVI
        RMSE 0.088 from the flat image against 0.107 from the sigmoid's 0.5, whose grey every band must
        first leave (and whose EVI denominator nears zero on the way for blue)."""
        p = torch.as_tensor(spectrum, dtype=torch.float32).clamp(1e-3, 1 - 1e-3)
        self.decoder.out.bias.copy_(torch.log(p / (1 - p)).to(self.decoder.out.bias))

    def forward(self, s1: torch.Tensor, month: torch.Tensor, biome_code: torch.Tensor) -> torch.Tensor:
        s1, (h, w) = pad_to_multiple(s1.float(), _PATCH)
        feats = s1_features(s1)
        tokens = self._tokens({"S1GRD": standardize_s1(s1)}, s1.shape[-2:])
        logits = self.decoder(feats, month, biome_code, tokens)
        # A sigmoid is log-linear for dark values: water's 0.01–0.05 is as easy to reach as land's 0.3.
        return torch.sigmoid(logits.float())[..., :h, :w]


class RegressStage3(RegressionStage):
    """S1 + opt_v2 + month + biome → opt_v3 = opt_v2 · exp(g), |g| ≤ max_log_gain."""

    INPUTS = stage_spec(3, "regress").model_inputs
    OUTPUT = stage_spec(3, "regress").output
    AMP_DTYPE = torch.float16
    in_channels = 3 + 8

    def __init__(self, encoder: nn.Module | None, *, width: int = 32, max_log_gain: float = 1.0,
                 norm: str = DEFAULT_NORM):
        super().__init__(encoder, width=width, norm=norm)
        self.max_log_gain = max_log_gain
        nn.init.zeros_(self.decoder.out.weight)  # untrained: returns opt_v2 exactly
        nn.init.zeros_(self.decoder.out.bias)

    def forward(self, s1: torch.Tensor, opt_v2: torch.Tensor, month: torch.Tensor, biome_code: torch.Tensor
                ) -> torch.Tensor:
        s1, (h, w) = pad_to_multiple(s1.float(), _PATCH)
        optical, _ = pad_to_multiple(opt_v2.float().clamp(0.0, 1.0), _PATCH)
        feats = torch.cat([s1_features(s1), image_features(optical)], dim=1)
        tokens = None
        if self.encoder is not None:
            s1_std = standardize_s1(s1)
            tokens = self._tokens({"S1GRD": s1_std, "S2L2A": standardize_s2l2a(assemble_s2l2a(optical))},
                                  s1.shape[-2:])
        log_gain = self.max_log_gain * torch.tanh(self.decoder(feats, month, biome_code, tokens).float())
        return (optical * torch.exp(log_gain)).clamp(0.0, 1.0)[..., :h, :w]


_BOX, _WIDE_BOX = 5, 15  # the neighbourhoods the calibrator summarises (px): speckle down, geometry kept


def _box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a size x size window, edges replicated (no dark border at the tile's edge)."""
    return F.avg_pool2d(F.pad(x, (size // 2,) * 4, mode="replicate"), size, stride=1)


#: The Stage 3 calibrator's fixed per-pixel feature sets, by name (what a checkpoint records as `features`):
#: - `basic` (stop 26): S1, its 5x5 mean, `opt_v2`'s reflectance and log-reflectance — 14 channels;
#: - `texture`: `basic` + S1's 5x5 standard deviation (speckle texture: water is smooth, forest and
#:   towns rough), its 15x15 mean (the field or stand around the pixel) and `opt_v2`'s 5x5 mean —
#:   28 channels. Measured on run (F)'s data (bench/RESULTS.md): NDVI RMSE 0.0751 → 0.0731 at 600 steps.
PIXEL_FEATURE_SETS: dict[str, int] = {"basic": 3 + 3 + 8, "texture": 3 + 3 + 8 + 3 + 3 + 8}
DEFAULT_PIXEL_FEATURES = "texture"
#: Stage 2's (`PixelStage2`, no S1): `optical` — `opt_v1`'s reflectance and log-reflectance, their 5x5
#: and 15x15 means (the pixel, its neighbourhood, the field around it) — 24 channels.
STAGE2_PIXEL_FEATURE_SETS: dict[str, int] = {"optical": 3 * 8}


class PixelCalibrator(nn.Module):
    """A per-pixel spectral calibrator: optical input (+ S1) + month + biome → input · exp(g).

    Why: what the stage before gets wrong on unseen AOIs is mostly a spectral bias per land-cover class,
    month and biome (the colour of a class in a season), not geometry. That bias is learned from pixels
    drawn across *every* training tile at each step, and not from batches of whole tiles: 16 tiles per
    step see a few classes of a few (month, biome) pairs, and their gradient is that batch's noise.
    Measured on the chain bench's `opt_v2` (bench/RESULTS.md): the same per-pixel network reaches NDVI
    RMSE 0.0742 from 0.0817 on 32,768 random pixels per step and learns nothing (0.0815) on 16 whole
    tiles per step.

    The network sees, per pixel, fixed features (`pixel_features`, one of the class's `FEATURE_SETS`:
    summaries of the pixel's neighbourhood — a mean carries most of the SAR's signal without its
    speckle, the speckle's spread tells smooth from rough surfaces —, the optical input's reflectance
    and log-reflectance) plus month (cyclic) and biome (one-hot; a biome never trained on stays
    neutral: its weights start at zero and get no gradient). Its gain is per pixel and it has no
    trained spatial layer, so it cannot move its input's edges; its last layer starts at zero, so
    untrained it returns its input exactly. Training draws pixels (`train/loop.RegressTask`); inference
    runs on whole tiles. Subclasses name the stage's inputs and features (Stage 2: `PixelStage2`,
    Stage 3: `PixelStage3`).
    """

    AMP_DTYPE = torch.float16
    PIXEL_WISE = True            # trains on pixels drawn across tiles (train/loop.RegressTask)
    encoder = None
    encoder_name = "pixel"
    FEATURE_SETS: dict[str, int] = {}
    DEFAULT_FEATURES = ""
    UNRECORDED_FEATURES = ""     # what a checkpoint that records no feature set was trained with

    def __init__(self, encoder: nn.Module | None = None, *, width: int = 32, max_log_gain: float = 1.0,
                 features: str | None = None):
        super().__init__()
        features = features or self.DEFAULT_FEATURES
        if encoder is not None:
            raise ValueError("the per-pixel calibrator has no encoder")
        if features not in self.FEATURE_SETS:
            raise ValueError(f"unknown pixel feature set {features!r}; known: {', '.join(self.FEATURE_SETS)}")
        hidden = 2 * width
        self.features = features
        self.n_features = self.FEATURE_SETS[features]
        self.max_log_gain = max_log_gain
        self.mlp = nn.Sequential(nn.Conv2d(self.n_features + 2 + N_BIOMES, hidden, 1), nn.GELU(),
                                 nn.Conv2d(hidden, hidden, 1), nn.GELU(), nn.Conv2d(hidden, 4, 1))
        with torch.no_grad():
            self.mlp[0].weight[:, self.n_features + 2:] = 0.0  # the biome one-hot starts neutral
        nn.init.zeros_(self.mlp[-1].weight)  # untrained: returns its input exactly
        nn.init.zeros_(self.mlp[-1].bias)

    def pixel_features(self, *images: torch.Tensor) -> torch.Tensor:
        """The fixed per-pixel features (B, n_features, H, W) of whole tiles, from the stage's images in
        `INPUTS` order (the optical input last); no parameters."""
        raise NotImplementedError

    def calibrate(self, optical: torch.Tensor, month: torch.Tensor, biome_code: torch.Tensor,
                  feats: torch.Tensor) -> torch.Tensor:
        optical = optical.float().clamp(0.0, 1.0)
        h, w = feats.shape[-2:]
        cond = torch.cat([month_features(month), F.one_hot(biome_code.long().clamp(0, N_BIOMES - 1), N_BIOMES).float()],
                         dim=1)[:, :, None, None].expand(-1, -1, h, w)
        log_gain = self.max_log_gain * torch.tanh(self.mlp(torch.cat([feats.float(), cond], dim=1)).float())
        return (optical * torch.exp(log_gain)).clamp(0.0, 1.0)


class PixelStage2(PixelCalibrator):
    """opt_v1 + month + biome → opt_v2 = opt_v1 · exp(g): Stage 2's regression kind (see PixelCalibrator).

    Why beside the Prithvi refiner: trained from scratch, the refiner learned nothing of a Stage 1's
    colour bias per class, month and biome (bench/RESULTS.md (AC), (AD): within ±0.00013 NDVI RMSE on
    whole tiles, on crops from 16x as many tiles, frozen or without its tokens), while this calibrator,
    on the same data, is better on all three figures. It sees `opt_v1` alone, as Stage 2 must; S1 is
    Stage 3's.
    """

    INPUTS = stage_spec(2, "regress").model_inputs
    OUTPUT = stage_spec(2, "regress").output
    FEATURE_SETS = STAGE2_PIXEL_FEATURE_SETS
    DEFAULT_FEATURES = UNRECORDED_FEATURES = "optical"

    def pixel_features(self, opt_v1: torch.Tensor) -> torch.Tensor:
        optical = image_features(opt_v1.float().clamp(0.0, 1.0))
        return torch.cat([optical, _box_mean(optical, _BOX), _box_mean(optical, _WIDE_BOX)], dim=1)

    def forward(self, opt_v1: torch.Tensor, month: torch.Tensor, biome_code: torch.Tensor,
                *, features: torch.Tensor | None = None) -> torch.Tensor:
        """Whole tiles, or (training) pixels: `features` (N, n_features, 1, 1) from `pixel_features`
        with `opt_v1` (N, 4, 1, 1) and one month and biome per pixel."""
        return self.calibrate(opt_v1, month, biome_code, self.pixel_features(opt_v1) if features is None else features)


class PixelStage3(PixelCalibrator):
    """S1 + opt_v2 + month + biome → opt_v3 = opt_v2 · exp(g): Stage 3's per-pixel calibrator (see
    PixelCalibrator), whose features add S1 and the summaries of its neighbourhood."""

    INPUTS = stage_spec(3, "regress").model_inputs
    OUTPUT = stage_spec(3, "regress").output
    FEATURE_SETS = PIXEL_FEATURE_SETS
    DEFAULT_FEATURES = DEFAULT_PIXEL_FEATURES
    UNRECORDED_FEATURES = "basic"  # checkpoints from before stop 26 record none

    def pixel_features(self, s1: torch.Tensor, opt_v2: torch.Tensor) -> torch.Tensor:
        sar = s1_features(s1.float())
        optical = image_features(opt_v2.float().clamp(0.0, 1.0))
        mean = _box_mean(sar, _BOX)
        parts = [sar, mean, optical]
        if self.features == "texture":
            spread = (_box_mean(sar * sar, _BOX) - mean * mean).clamp_min(0.0).sqrt()
            parts += [spread, _box_mean(sar, _WIDE_BOX), _box_mean(optical, _BOX)]
        return torch.cat(parts, dim=1)

    def forward(self, s1: torch.Tensor | None, opt_v2: torch.Tensor, month: torch.Tensor, biome_code: torch.Tensor,
                *, features: torch.Tensor | None = None) -> torch.Tensor:
        """Whole tiles, or (training) pixels: `features` (N, n_features, 1, 1) from `pixel_features`
        with `opt_v2` (N, 4, 1, 1) and one month and biome per pixel; `s1` is then unused."""
        return self.calibrate(opt_v2, month, biome_code,
                              self.pixel_features(s1, opt_v2) if features is None else features)


#: The per-pixel calibrator of each stage with an optical input (encoder `pixel`).
CALIBRATORS = {2: PixelStage2, 3: PixelStage3}
