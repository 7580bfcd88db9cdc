"""Synthetic AOIs: one coherent mosaic cut into overlapping tiles, with a Stage-1-like prior.

Our test and demo data until pretrained TerraMind weights are present. The `opt_v1` prior imitates a
fixed, imperfect Stage 1 model (docs/ARCHITECTURE.md §7): its colour errors are a fixed function of land cover,
month and biome — the same for every seed, as a trained generator's biases are — plus a little blur
and per-tile noise. Its errors against `s2_truth` are calibrated to the Axion-Sat Stage 1 figures
(NDVI RMSE ~0.085, EVI RMSE ~0.095, SAM ~0.18 rad; see `tests/store/test_synth.py`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from scipy import ndimage

from axion_ray.bands import N_BIOMES
from axion_ray.config import SynthConfig
from axion_ray.errors import TileMetadataError
from axion_ray.store.synth_scene import BIOMES, LAND_COVER, SceneFields, backscatter_db, reflectance, scene_fields
from axion_ray.store.tile_store import TileStore

# Biomes a seed picks from when none are given: the common ones of real Sentinel AOIs.
_DEFAULT_BIOME_POOL = (4, 5, 6, 7, 8, 12, 15, 1, 2, 13)


class Stage1Prior:
    """The fixed error model of our imitation Stage 1 (never seeded by the AOI).

    Per land-cover class a per-band gain and offset, modulated smoothly by month and biome; then a
    Gaussian blur (a generator's lost detail) and white noise. A refiner can learn to undo the bias
    from the spectra plus month and biome; it cannot (and must not try to) undo blur by moving edges.
    """

    # Fixed constants: a generative model's systematic colour errors, per class [B02, B03, B04, B08].
    GAIN = np.array([
        [1.36, 1.28, 1.20, 1.13],   # water: washed out
        [1.85, 1.36, 1.20, 0.90],   # forest: hazy blue cast, NIR under-estimated
        [1.85, 1.36, 1.20, 0.90],   # crops
        [1.85, 1.36, 1.20, 0.90],   # grass
        [1.36, 1.21, 0.93, 1.06],   # urban: bluish
        [1.43, 1.14, 0.87, 1.00],   # bare: bluish, red too low
    ], dtype=np.float32)
    OFFSET = np.array([0.010, 0.003, 0.0, 0.0], dtype=np.float32)  # additive haze, strongest in blue
    SEASON_AMP = np.array([0.08, 0.04, 0.06, 0.04], dtype=np.float32)
    SEASON_PHASE = np.array([0.3, 1.7, 2.9, 4.4], dtype=np.float32)
    BIOME_AMP = 0.06
    BLUR_SIGMA_PX = 0.5
    NOISE_STD = 0.004

    def __init__(self, strength: float = 1.0):
        self.strength = float(strength)
        # Biome effects from a fixed generator: part of the "model", identical for every AOI seed.
        self._biome_effect = np.random.default_rng(20251014).uniform(-1, 1, (N_BIOMES, 4)).astype(np.float32)

    def gain(self, cover: np.ndarray, month: int, biome_code: int) -> np.ndarray:
        """Per-pixel, per-band gain (4, H, W)."""
        season = 1 + self.SEASON_AMP * np.sin(2 * np.pi * month / 12.0 + self.SEASON_PHASE)
        biome = 1 + self.BIOME_AMP * self._biome_effect[int(biome_code)]
        g = self.GAIN[cover] * (season * biome)[None, None, :]
        return np.moveaxis(1 + self.strength * (g - 1), -1, 0)

    def apply(self, truth: np.ndarray, cover: np.ndarray, month: int, biome_code: int,
              rng: np.random.Generator) -> np.ndarray:
        """Stage-1-like estimate (4, H, W) of one tile's `truth`."""
        offset = self.OFFSET[:, None, None] * self.strength
        biased = truth * self.gain(cover, month, biome_code) + offset
        blurred = ndimage.gaussian_filter(biased, sigma=(0, self.BLUR_SIGMA_PX, self.BLUR_SIGMA_PX), mode="nearest")
        noisy = blurred + rng.normal(0.0, self.NOISE_STD, blurred.shape)
        return np.clip(noisy, 0.0, 1.0).astype(np.float32)


def _choose_months(rng: np.random.Generator, n: int) -> tuple[int, ...]:
    return tuple(int(m) for m in rng.choice(np.arange(1, 13), size=n, replace=False))


def _validate(cfg: SynthConfig) -> None:
    if cfg.rows < 1 or cfg.cols < 1:
        raise TileMetadataError(f"rows and cols must be at least 1, got {cfg.rows}x{cfg.cols}")
    if cfg.tile_size < 8:
        raise TileMetadataError(f"tile size must be at least 8 px, got {cfg.tile_size}")
    if not 0 <= cfg.overlap < cfg.tile_size // 2 + 1 or cfg.overlap >= cfg.tile_size:
        raise TileMetadataError(f"overlap must be 0..{cfg.tile_size // 2} px for {cfg.tile_size}-px tiles, got {cfg.overlap}")
    bad_months = [m for m in cfg.months if not 1 <= m <= 12]
    if bad_months:
        raise TileMetadataError(f"months must be 1–12, got {bad_months}")
    bad_biomes = [b for b in cfg.biomes if b not in BIOMES]
    if bad_biomes:
        raise TileMetadataError(f"biome codes must be 0–{N_BIOMES - 1}, got {bad_biomes}")


def _draw_scene(cfg: SynthConfig) -> tuple[np.random.Generator, tuple[int, ...], tuple[int, ...], SceneFields]:
    """The first draws from `cfg.seed`, in the one order that `synthesize_aoi` and `replay_tiles` share:
    months, biomes, the scene's static fields. Returns the generator (for the acquisitions' draws that
    follow), the months, the biomes and the fields."""
    _validate(cfg)
    rng = np.random.default_rng(cfg.seed)
    stride = cfg.tile_size - cfg.overlap
    shape = (cfg.rows * stride + cfg.overlap, cfg.cols * stride + cfg.overlap)
    months = cfg.months or _choose_months(rng, min(cfg.cols, 3))  # one acquisition per swath
    biomes = cfg.biomes or tuple(int(b) for b in rng.choice(_DEFAULT_BIOME_POOL, size=2, replace=False))
    return rng, months, biomes, scene_fields(rng, shape, biomes)


def _tile_windows(cfg: SynthConfig) -> list[tuple[slice, slice]]:
    """Each tile's (rows, cols) window in the scene, in tile order (row-major)."""
    stride = cfg.tile_size - cfg.overlap
    rows, cols = np.divmod(np.arange(cfg.rows * cfg.cols), cfg.cols)
    return [(slice(r * stride, r * stride + cfg.tile_size), slice(c * stride, c * stride + cfg.tile_size))
            for r, c in zip(rows, cols)]


def replay_tiles(cfg: SynthConfig, field: str = "cover") -> np.ndarray:
    """One of the scene's static fields (a `SceneFields` name: `cover`, `parcel`, `biome`, `texture`, …)
    for every tile of the AOI `synthesize_aoi(cfg)` writes, (N, [C,] H, W): the same seed replays the
    same scene (what an oracle, or an analysis of where a model errs, knows that no model input says)."""
    names = [f.name for f in dataclasses.fields(SceneFields)]
    if field not in names:
        raise ValueError(f"unknown scene field {field!r}; known: {', '.join(names)}")
    scene = getattr(_draw_scene(cfg)[3], field)
    return np.stack([scene[(..., *window)] for window in _tile_windows(cfg)])


def replay_land_cover(cfg: SynthConfig) -> np.ndarray:
    """The land-cover class of every pixel of every tile, (N, H, W) indices into LAND_COVER."""
    return replay_tiles(cfg, "cover")


def synthesize_aoi(path: str | Path, cfg: SynthConfig = SynthConfig(), *, overwrite: bool = False) -> TileStore:
    """Generate an AOI and write it as a tile store at `path`.

    Deterministic for `cfg.seed`. Writes s1, s2_truth, month, biome_code, tile_row/col, a UTM CRS and
    transform, and (unless `cfg.with_prior` is False) the Stage-1-like prior into `opt_v1`, marked done
    with provenance `stage="synthetic-prior"`.
    """
    rng, months, biomes, fields = _draw_scene(cfg)
    stride = cfg.tile_size - cfg.overlap

    n = cfg.rows * cfg.cols
    transform = (cfg.origin[0], cfg.pixel_size_m, 0.0, cfg.origin[1], 0.0, -cfg.pixel_size_m)
    store = TileStore.create(
        path, n, cfg.tile_size, crs=cfg.crs, transform=transform, overlap=cfg.overlap,
        grid_shape=(cfg.rows, cfg.cols), with_truth=True, overwrite=overwrite, shard_tiles=cfg.shard_tiles or None,
        attrs={"synthetic": {"seed": cfg.seed, "months": list(months), "biomes": list(biomes),
                             "land_cover_classes": list(LAND_COVER)}},
    )
    rows, cols = np.divmod(np.arange(n), cfg.cols)
    swath = np.minimum(cols * len(months) // cfg.cols, len(months) - 1)
    tile_month = np.asarray(months, dtype=np.int8)[swath]
    centre = cfg.tile_size // 2
    tile_biome = fields.biome[rows * stride + centre, cols * stride + centre].astype(np.int8)
    store.set_tile_meta(month=tile_month, biome_code=tile_biome, tile_row=rows, tile_col=cols)

    # Scene-wide fields once per month (one acquisition per swath), then cut tiles out of them.
    truth_by_month = {m: reflectance(fields, m) for m in months}
    s1_by_month = {m: backscatter_db(rng, fields, m) for m in months}
    prior = Stage1Prior()
    s1 = np.empty((n, 2, cfg.tile_size, cfg.tile_size), np.float32)
    truth = np.empty((n, 4, cfg.tile_size, cfg.tile_size), np.float32)
    opt_v1 = np.empty_like(truth)
    for i, window in enumerate(_tile_windows(cfg)):
        m = int(tile_month[i])
        s1[i] = s1_by_month[m][(slice(None), *window)]
        truth[i] = truth_by_month[m][(slice(None), *window)]
        opt_v1[i] = prior.apply(truth[i], fields.cover[window], m, int(tile_biome[i]), rng)
    idx = np.arange(n)
    store.write("s1", idx, s1)
    store.write("s2_truth", idx, truth)
    if cfg.with_prior:
        store.write("opt_v1", idx, opt_v1)
        store.set_provenance("opt_v1", stage="synthetic-prior", model="Stage1Prior (fixed error model)",
                             device="cpu", note="imitates an imperfect Stage 1; not a model output")
    return store

