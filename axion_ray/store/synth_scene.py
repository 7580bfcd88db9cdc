"""Physics of the synthetic scenes: land cover, Sentinel-2 reflectance, Sentinel-1 backscatter.

Deliberately simple but physically sensible, so metrics and models behave as on real data:
- land cover from smooth random fields weighted by the biome's class mix, crops cut into parcels,
  rivers as meandering lines (edges for the geometry metrics to track);
- reflectance [B02, B03, B04, B08] from per-class spectra, vegetation moving between a green and a
  senescent spectrum with the month (biome-specific season), with within-class texture;
- sigma-0 in dB per class (docs/ARCHITECTURE.md §7), rising with crop biomass, urban double bounce, a
  range-dependent incidence-angle trend, and multiplicative gamma speckle (ENL 4.4).
Scipy's Gaussian filter and NumPy do the work; nothing here loops over pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

LAND_COVER: tuple[str, ...] = ("water", "forest", "crops", "grass", "urban", "bare")
WATER, FOREST, CROPS, GRASS, URBAN, BARE = range(6)


@dataclass(frozen=True)
class Biome:
    """A biome: class mix (fractions of LAND_COVER), season peak month and amplitude."""

    name: str
    mix: tuple[float, float, float, float, float, float]
    peak_month: float
    season_amp: float  # 0 = evergreen, 1 = strongly seasonal
    base_green: float  # mean greenness of its vegetation


#: biome_code -> Biome. Codes 1–14 follow the WWF terrestrial biomes (Olson et al. 2001);
#: 15 is an agricultural mosaic; 0 is "unknown" (a generic temperate mix).
BIOMES: dict[int, Biome] = {
    0: Biome("unknown", (0.06, 0.25, 0.30, 0.22, 0.07, 0.10), 7.0, 0.6, 0.55),
    1: Biome("tropical moist broadleaf forest", (0.06, 0.70, 0.08, 0.10, 0.03, 0.03), 3.0, 0.15, 0.80),
    2: Biome("tropical dry broadleaf forest", (0.04, 0.50, 0.14, 0.18, 0.04, 0.10), 8.0, 0.60, 0.60),
    3: Biome("tropical coniferous forest", (0.04, 0.62, 0.10, 0.14, 0.04, 0.06), 6.0, 0.30, 0.70),
    4: Biome("temperate broadleaf and mixed forest", (0.05, 0.40, 0.28, 0.17, 0.06, 0.04), 7.0, 0.85, 0.60),
    5: Biome("temperate conifer forest", (0.05, 0.58, 0.12, 0.15, 0.04, 0.06), 7.0, 0.45, 0.62),
    6: Biome("boreal forest / taiga", (0.12, 0.60, 0.04, 0.14, 0.02, 0.08), 7.5, 0.90, 0.50),
    7: Biome("tropical savanna", (0.03, 0.15, 0.15, 0.50, 0.03, 0.14), 2.0, 0.75, 0.45),
    8: Biome("temperate grassland", (0.03, 0.06, 0.30, 0.48, 0.04, 0.09), 6.0, 0.85, 0.50),
    9: Biome("flooded grassland", (0.30, 0.10, 0.10, 0.42, 0.02, 0.06), 5.0, 0.55, 0.60),
    10: Biome("montane grassland", (0.04, 0.12, 0.06, 0.48, 0.02, 0.28), 7.5, 0.80, 0.40),
    11: Biome("tundra", (0.12, 0.04, 0.00, 0.44, 0.01, 0.39), 7.5, 0.95, 0.30),
    12: Biome("mediterranean woodland", (0.04, 0.28, 0.24, 0.20, 0.08, 0.16), 4.0, 0.70, 0.45),
    13: Biome("desert and xeric shrubland", (0.02, 0.02, 0.06, 0.18, 0.04, 0.68), 3.0, 0.50, 0.20),
    14: Biome("mangroves", (0.35, 0.50, 0.04, 0.06, 0.03, 0.02), 6.0, 0.20, 0.75),
    15: Biome("agricultural mosaic", (0.04, 0.10, 0.55, 0.14, 0.12, 0.05), 6.5, 0.95, 0.55),
}

# Reflectance [B02, B03, B04, B08] (typical Sentinel-2 L2A surface reflectance).
_GREEN_SPECTRA = np.array([
    [0.050, 0.045, 0.030, 0.015],   # water (dark, NIR absorbed)
    [0.025, 0.050, 0.025, 0.320],   # forest in leaf
    [0.030, 0.070, 0.032, 0.450],   # crops at peak biomass
    [0.035, 0.070, 0.040, 0.330],   # grass, green
    [0.100, 0.110, 0.120, 0.160],   # urban
    [0.130, 0.160, 0.200, 0.260],   # bare soil
], dtype=np.float32)
_SENESCENT_SPECTRA = np.array([
    [0.050, 0.045, 0.030, 0.015],
    [0.035, 0.055, 0.045, 0.220],   # forest leaf-off
    [0.090, 0.110, 0.130, 0.200],   # harvested field / soil
    [0.070, 0.090, 0.100, 0.220],   # dry grass
    [0.100, 0.110, 0.120, 0.160],
    [0.130, 0.160, 0.200, 0.260],
], dtype=np.float32)
#: How much of the biome's seasonal swing each class follows (forest partly evergreen).
_SEASON_FOLLOW = np.array([0.0, 0.55, 1.0, 0.85, 0.0, 0.0], dtype=np.float32)

# Sigma-0 (dB) VV/VH per class, docs/ARCHITECTURE.md §7; vegetation terms added with greenness below.
_S1_DB = np.array([
    [-20.0, -27.0],   # water
    [-7.5, -13.0],    # forest
    [-12.0, -19.0],   # crops at zero biomass (rises with greenness)
    [-11.0, -18.0],   # grass
    [1.0, -8.0],      # urban (double bounce)
    [-12.0, -20.0],   # bare soil
], dtype=np.float32)
_S1_GREEN_GAIN_DB = np.array([[0, 0], [0.5, 0.8], [3.0, 5.0], [1.5, 2.5], [0, 0], [0, 0]], dtype=np.float32)
S1_ENL = 4.4


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length ~`scale` px.

    Long correlation lengths are drawn on a coarse grid and interpolated up (cubic), so the cost stays
    linear in the pixel count instead of growing with the kernel length.
    """
    factor = max(1, int(scale // 4))
    coarse = (max(4, -(-shape[0] // factor) + 3), max(4, -(-shape[1] // factor) + 3))
    field = ndimage.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), scale / factor, mode="wrap")
    if factor > 1:
        field = ndimage.zoom(field, factor, order=3, mode="grid-wrap")
    field = field[:shape[0], :shape[1]]
    field -= field.mean()
    return field / (field.std() + 1e-8)


def biome_map(rng: np.random.Generator, shape: tuple[int, int], biomes: tuple[int, ...]) -> np.ndarray:
    """Large zones of the AOI's biomes (a transition zone in one AOI, as real AOIs have)."""
    if len(biomes) == 1:
        return np.full(shape, biomes[0], dtype=np.int8)
    scale = max(shape) / 3.0
    fields = np.stack([smooth_field(rng, shape, scale) + 0.35 * smooth_field(rng, shape, scale / 5) for _ in biomes])
    return np.asarray(biomes, dtype=np.int8)[fields.argmax(axis=0)]


def land_cover_map(rng: np.random.Generator, biome_px: np.ndarray, patch_px: float = 10.0) -> np.ndarray:
    """Per-pixel land cover drawn from each pixel's biome mix, as coherent patches, plus a river."""
    shape = biome_px.shape
    mixes = np.stack([np.asarray(b.mix, dtype=np.float32) for b in BIOMES.values()])  # (16, 6)
    log_mix = np.log(mixes[biome_px.astype(np.int64)] + 1e-3)  # (H, W, 6)
    fields = np.stack([smooth_field(rng, shape, patch_px * s) for s in (2.0, 1.5, 1.2, 1.0, 0.6, 1.2)], axis=-1)
    cover = (fields + 1.3 * log_mix).argmax(axis=-1).astype(np.int8)
    # Urban is built along a grid of streets: thin roads of "bare" cut urban blocks.
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    street = ((yy % 12) < 1) | ((xx % 14) < 1)
    cover[(cover == URBAN) & street] = BARE
    if rng.random() < 0.7:  # a meandering river crossing the AOI
        t = np.linspace(0, 1, shape[1])
        centre = shape[0] * (0.2 + 0.6 * rng.random()) + 0.12 * shape[0] * np.sin(2 * np.pi * (rng.random() + 1.5 * t))
        half_width = 1.5 + 2.5 * rng.random()
        cover[np.abs(yy - centre[None, :]) < half_width] = WATER
    return cover


def parcel_ids(rng: np.random.Generator, shape: tuple[int, int], size: tuple[int, int] = (14, 30)) -> np.ndarray:
    """Rectangular field parcels of random sizes (row bands split into random-width fields)."""
    ids = np.zeros(shape, dtype=np.int32)
    next_id, y = 0, 0
    while y < shape[0]:
        h = int(rng.integers(*size))
        x = 0
        while x < shape[1]:
            w = int(rng.integers(*size))
            ids[y:y + h, x:x + w] = next_id
            next_id, x = next_id + 1, x + w
        y += h
    return ids


@dataclass
class SceneFields:
    """Static (date-independent) fields of an AOI mosaic."""

    cover: np.ndarray        # (H, W) int8 land cover
    biome: np.ndarray        # (H, W) int8 biome code
    phase: np.ndarray        # (H, W) float32 phenology offset in months (per crop parcel)
    vigour: np.ndarray       # (H, W) float32 multiplicative greenness factor
    texture: np.ndarray      # (4, H, W) float32 multiplicative reflectance texture
    roughness: np.ndarray    # (H, W) float32 dB offset of backscatter (soil moisture / roughness)
    parcel: np.ndarray       # (H, W) int32 field-parcel id (crops share phase and vigour within one)


def scene_fields(rng: np.random.Generator, shape: tuple[int, int], biomes: tuple[int, ...]) -> SceneFields:
    biome_px = biome_map(rng, shape, biomes)
    cover = land_cover_map(rng, biome_px)
    parcels = parcel_ids(rng, shape)
    n_parcels = int(parcels.max()) + 1
    parcel_phase = rng.uniform(-2.0, 2.0, n_parcels).astype(np.float32)
    parcel_vigour = rng.uniform(0.7, 1.15, n_parcels).astype(np.float32)
    is_crop = cover == CROPS
    phase = np.where(is_crop, parcel_phase[parcels], 0.6 * smooth_field(rng, shape, 20.0)).astype(np.float32)
    vigour = np.where(is_crop, parcel_vigour[parcels], 1.0 + 0.08 * smooth_field(rng, shape, 6.0)).astype(np.float32)
    common = smooth_field(rng, shape, 3.0)
    texture = np.stack([1.0 + 0.06 * common + 0.03 * smooth_field(rng, shape, 1.5) for _ in range(4)])
    roughness = 1.2 * smooth_field(rng, shape, 8.0)
    return SceneFields(cover, biome_px, phase, vigour, texture.astype(np.float32), roughness.astype(np.float32), parcels)


_PEAK = np.array([b.peak_month for b in BIOMES.values()], dtype=np.float32)
_AMP = np.array([b.season_amp for b in BIOMES.values()], dtype=np.float32)
_BASE = np.array([b.base_green for b in BIOMES.values()], dtype=np.float32)


def greenness(fields: SceneFields, month: int) -> np.ndarray:
    """Vegetation greenness in [0, 1] for a month: each pixel's biome season, parcel phase, class."""
    biome = fields.biome.astype(np.int64)
    season = np.cos(2 * np.pi * (month - _PEAK[biome] - fields.phase) / 12.0)  # 1 at peak, -1 off-season
    g = _BASE[biome] + 0.5 * _AMP[biome] * _SEASON_FOLLOW[fields.cover] * season
    crops = 0.5 + 0.5 * season * np.maximum(_AMP[biome], 0.4)  # crops run a full cycle, sown to harvested
    g = np.where(fields.cover == CROPS, crops, g)
    return np.clip(g * fields.vigour, 0.0, 1.0).astype(np.float32)


def reflectance(fields: SceneFields, month: int) -> np.ndarray:
    """Surface reflectance (4, H, W) in [0, 1] for one acquisition month."""
    g = greenness(fields, month)
    green, brown = _GREEN_SPECTRA[fields.cover], _SENESCENT_SPECTRA[fields.cover]  # (H, W, 4)
    spectra = brown + (green - brown) * g[..., None]
    refl = np.moveaxis(spectra, -1, 0) * fields.texture
    return np.clip(refl, 0.0, 1.0).astype(np.float32)


def backscatter_db(rng: np.random.Generator, fields: SceneFields, month: int, enl: float = S1_ENL) -> np.ndarray:
    """Sentinel-1 sigma-0 (2, H, W) in dB with multiplicative gamma speckle (mean 1, ENL `enl`)."""
    g = greenness(fields, month)
    db = _S1_DB[fields.cover] + _S1_GREEN_GAIN_DB[fields.cover] * g[..., None]  # (H, W, 2)
    db = np.moveaxis(db, -1, 0)
    not_water = fields.cover != WATER
    db = db + np.where(not_water, fields.roughness, 0.4 * fields.roughness)[None]  # wind ruffles water less
    width = db.shape[-1]
    db = db - np.linspace(0.0, 1.5, width, dtype=np.float32)[None, None, :]  # near-to-far range incidence trend
    urban = fields.cover == URBAN
    db[0] += np.where(urban, 3.0 * np.clip(smooth_field(rng, urban.shape, 2.0), 0, None), 0.0)
    speckle = rng.gamma(shape=enl, scale=1.0 / enl, size=db.shape)
    linear = np.power(10.0, db / 10.0) * speckle
    return (10.0 * np.log10(np.maximum(linear, 1e-6))).astype(np.float32)
