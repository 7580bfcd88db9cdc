"""Model presets and weight sources as data: one table, keyed by preset name (timm's default_cfgs idea).

`tiny` is for CPU tests and the demo; `small` to `large` for GPUs. Weight files are named by the
Hugging Face repository and file terratorch itself downloads them from; we only ever read them locally.
"""

from __future__ import annotations

from dataclasses import dataclass

from axion_ray.errors import ConfigError


@dataclass(frozen=True)
class StagePreset:
    """What each stage is built from at one size."""

    terramind: str        # TerraMind variant for stages 1 and 3 (`<name>_generate` in terratorch)
    prithvi: str          # Prithvi backbone for stage 2 (terratorch BACKBONE_REGISTRY)
    head_dim: int         # width of the Stage 2 ConvNeXt head
    head_blocks: int      # depth of the Stage 2 ConvNeXt head


PRESETS: dict[str, StagePreset] = {
    "tiny": StagePreset("terramind_v1_tiny", "prithvi_eo_tiny", head_dim=32, head_blocks=2),
    "small": StagePreset("terramind_v1_small", "prithvi_eo_v2_tiny_tl", head_dim=48, head_blocks=2),
    "base": StagePreset("terramind_v1_base", "prithvi_eo_v2_100_tl", head_dim=64, head_blocks=3),
    "large": StagePreset("terramind_v1_large", "prithvi_eo_v2_300_tl", head_dim=96, head_blocks=3),
}

#: Prithvi backbones a user may pick for Stage 2 directly (`prithvi=` option), smallest first.
PRITHVI_BACKBONES: tuple[str, ...] = (
    "prithvi_eo_tiny", "prithvi_eo_v2_tiny_tl", "prithvi_eo_v2_100_tl", "prithvi_eo_v2_300",
    "prithvi_eo_v2_300_tl", "prithvi_eo_v2_600", "prithvi_eo_v2_600_tl",
)

#: Encoders of the regression stages (models/regress.py): TerraMind's ViT (the preset's variant, its
#: transformer file only) under the UNet, the UNet alone, or — stages with an optical input — `pixel`,
#: the per-pixel spectral calibrator (`PixelStage2`, `PixelStage3`; Stage 2's only regression model,
#: since it sees no S1 for TerraMind or the UNet to read). When none is named, the builder takes
#: TerraMind's where its published file is on disk (LoRA on it), else each stage's measured best from
#: scratch (`builder.default_encoder`; bench/chain_quality.py, bench/RESULTS.md).
ENCODERS: tuple[str, ...] = ("terramind", "unet", "pixel")
CALIBRATOR_ENCODERS: tuple[str, ...] = ("pixel",)


def encoders_for(stage: int) -> tuple[str, ...]:
    """The encoders regression Stage `stage` can be built on."""
    if stage == 2:
        return CALIBRATOR_ENCODERS
    return ENCODERS if stage == 3 else tuple(e for e in ENCODERS if e not in CALIBRATOR_ENCODERS)


def check_encoder(stage: int, encoder: str | None) -> None:
    """ConfigError for an encoder a regression stage has no such variant of."""
    if encoder is None:
        return
    if encoder not in ENCODERS:
        raise ConfigError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
    if encoder not in encoders_for(stage):
        why = ("Stage 2's regression kind calibrates opt_v1 and reads no S1" if stage == 2 else
               f"encoder {encoder!r} calibrates an optical input: only Stages 2 and 3 have one")
        raise ConfigError(f"{why}; Stage {stage} takes encoder {' or '.join(encoders_for(stage))}, not {encoder!r}")

REGRESSION_WIDTH = 32     # channels of the UNet's full-resolution level (x2, x4, x4 below); pixel: hidden/2

#: TerraMind's S2L2A tokenizer (the diffusion decoder every generating stage needs beside its transformer).
TOKENIZER_S2L2A = "terramind_v1_tokenizer_s2l2a"


@dataclass(frozen=True)
class WeightFile:
    repo_id: str
    filename: str


#: Published weights (same sources as terratorch's `pretrained_weights` tables). Absent = none exist.
WEIGHT_FILES: dict[str, WeightFile] = {
    "terramind_v1_tiny": WeightFile("ibm-esa-geospatial/TerraMind-1.0-tiny", "TerraMind_v1_tiny.pt"),
    "terramind_v1_small": WeightFile("ibm-esa-geospatial/TerraMind-1.0-small", "TerraMind_v1_small.pt"),
    "terramind_v1_base": WeightFile("ibm-esa-geospatial/TerraMind-1.0-base", "TerraMind_v1_base.pt"),
    "terramind_v1_large": WeightFile("ibm-esa-geospatial/TerraMind-1.0-large", "TerraMind_v1_large.pt"),
    TOKENIZER_S2L2A: WeightFile("ibm-esa-geospatial/TerraMind-1.0-Tokenizer-S2L2A",
                                               "TerraMind_Tokenizer_S2L2A.pt"),
    "prithvi_eo_v2_tiny_tl": WeightFile("ibm-nasa-geospatial/Prithvi-EO-2.0-tiny-TL", "Prithvi_EO_V2_tiny_TL.pt"),
    "prithvi_eo_v2_100_tl": WeightFile("ibm-nasa-geospatial/Prithvi-EO-2.0-100M-TL", "Prithvi_EO_V2_100M_TL.pt"),
    "prithvi_eo_v2_300": WeightFile("ibm-nasa-geospatial/Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt"),
    "prithvi_eo_v2_300_tl": WeightFile("ibm-nasa-geospatial/Prithvi-EO-2.0-300M-TL", "Prithvi_EO_V2_300M_TL.pt"),
    "prithvi_eo_v2_600": WeightFile("ibm-nasa-geospatial/Prithvi-EO-2.0-600M", "Prithvi_EO_V2_600M.pt"),
    "prithvi_eo_v2_600_tl": WeightFile("ibm-nasa-geospatial/Prithvi-EO-2.0-600M-TL", "Prithvi_EO_V2_600M_TL.pt"),
}


def weight_file(variant: str) -> WeightFile | None:
    """The published file of `variant`: the table above, or for a timm `name.tag` (the inspection
    classifiers) the `model.safetensors` of its `timm/name.tag` repository, as timm itself fetches it."""
    if variant in WEIGHT_FILES:
        return WEIGHT_FILES[variant]
    if "." in variant:
        return WeightFile(f"timm/{variant}", "model.safetensors")
    return None
