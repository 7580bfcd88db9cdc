"""Metrics over a tile store: the figures `axion-ray metrics` writes (docs/ARCHITECTURE.md §6 names)."""

from __future__ import annotations

from typing import Any

import numpy as np

from axion_ray.config import CompositeConfig, GeometryConfig
from axion_ray.errors import TileDataError
from axion_ray.metrics.composite import composite_score
from axion_ray.metrics.geometry import GeometryAccumulator
from axion_ray.metrics.spectral import SpectralAccumulator
from axion_ray.store.tile_store import OUTPUT_ARRAYS, TileStatus, TileStore


def _usable(store: TileStore, array: str) -> np.ndarray:
    if array in OUTPUT_ARRAYS:
        return store.status(array) == TileStatus.DONE
    return np.ones(store.n_tiles, dtype=bool)


#: `baseline=` value for the best flat image: every pixel the truth's mean spectrum over the tiles
#: evaluated. What a model that ignores its input could reach; Stage 1 regression is scored against it.
FLAT_BASELINE = "flat"


def _truth_mean(store: TileStore, truth: str, indices: np.ndarray, batch_size: int) -> np.ndarray:
    sums, counts = np.zeros(4), np.zeros(4)
    for start in range(0, indices.size, batch_size):
        t = store.read(truth, indices[start:start + batch_size]).astype(np.float64)
        sums += np.nansum(t, axis=(0, 2, 3))
        counts += np.isfinite(t).sum(axis=(0, 2, 3))
    return (sums / np.maximum(counts, 1))[None, :, None, None]


def evaluate_store(store: TileStore, pred: str = "opt_v2", baseline: str | None = "opt_v1",
                   truth: str | None = "s2_truth", *, batch_size: int = 64,
                   geometry_cfg: GeometryConfig = GeometryConfig(),
                   composite_cfg: CompositeConfig = CompositeConfig()) -> dict[str, Any]:
    """Compare `pred` with `truth` (spectral) and with `baseline` (geometry) over every usable tile.

    A tile is usable when every output array involved is done. Returns pred/baseline spectral figures
    against the truth, geometry of pred vs baseline, and the composite score with its constraints.

    Raises:
        TileDataError: unknown arrays, no usable tile, or non-finite truth/prediction values.
    """
    flat = baseline == FLAT_BASELINE
    if flat and truth is None:
        raise TileDataError("the flat baseline is the truth's mean spectrum: give a truth array")
    for name in filter(None, (pred, None if flat else baseline, truth)):
        if not store.has(name):
            raise TileDataError(f"store {store.path} has no array {name!r} (it has {', '.join(store.arrays)})")
    if truth is None and baseline is None:
        raise TileDataError("give a truth array, a baseline array, or both")
    mask = _usable(store, pred)
    for name in filter(None, (None if flat else baseline, truth)):
        mask &= _usable(store, name)
    indices = np.flatnonzero(mask)
    if indices.size == 0:
        raise TileDataError(f"no tile has {pred}" + (f" and {baseline}" if baseline else "") + " done; run inference first")

    pred_acc, base_acc = SpectralAccumulator(), SpectralAccumulator()
    geo_acc = GeometryAccumulator(geometry_cfg)
    if flat:  # geometry against the truth's own edges: their count is no constraint
        composite_cfg = composite_cfg.against_truth()
    mean = _truth_mean(store, truth, indices, batch_size) if flat else None
    for start in range(0, indices.size, batch_size):
        idx = indices[start:start + batch_size]
        p = store.read(pred, idx)
        _check_finite(p, pred, idx)
        if truth:
            t = store.read(truth, idx)
            _check_finite(t, truth, idx)
            pred_acc.update(p, t)
        if flat:  # the best flat image; edges are then measured against the truth's own
            geo_acc.update(p, t)
            base_acc.update(np.where(np.isnan(t), np.nan, mean).astype(np.float32), t)
        elif baseline:
            b = store.read(baseline, idx)
            _check_finite(b, baseline, idx)
            geo_acc.update(p, b)
            if truth:
                base_acc.update(b, t)

    result: dict[str, Any] = {"store": store.path, "pred": pred, "baseline": baseline, "truth": truth,
                              "n_tiles": int(indices.size)}
    if truth:
        result["pred_metrics"] = pred_acc.compute()
    if baseline:
        result["geometry"] = geo_acc.compute()
    if truth and baseline:
        result["baseline_metrics"] = base_acc.compute()
        comp = composite_score(result["pred_metrics"], result["baseline_metrics"], result["geometry"], composite_cfg)
        result.update(comp.to_dict())
    return result


def _check_finite(data: np.ndarray, name: str, idx: np.ndarray) -> None:
    """NaN pixels are no-data and left out of the figures; a used tile with no valid pixel, or with
    infinities, is an error."""
    bad = np.isinf(data).any(axis=(1, 2, 3)) | ~np.isfinite(data).all(axis=1).any(axis=(1, 2))
    if bad.any():
        raise TileDataError(f"{name} has NaN/Inf values in every pixel (or infinities) in tile(s) "
                            f"{idx[bad][:10].tolist()}; fix or re-run those tiles")
