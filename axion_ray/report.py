"""Quicklook PNGs and Markdown reports made from a tile store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.metrics.spectral import ndvi
from axion_ray.store.tile_store import OUTPUT_ARRAYS, TileStatus, TileStore


def grid_mosaic(store: TileStore, array: str, band_select: list[int] | None = None) -> np.ndarray:
    """Place tiles on the AOI grid (each tile's non-overlapping part), for viewing only.

    Tiles not produced stay NaN. The blended, georeferenced mosaic is `axion-ray mosaic`'s job.
    """
    rows, cols = store.grid_shape
    stride_y, stride_x = store.height - store.overlap, store.width - store.overlap
    meta = store.tile_meta()
    n_bands = len(band_select) if band_select else store.read(array, [0]).shape[1]
    out = np.full((n_bands, rows * stride_y + store.overlap, cols * stride_x + store.overlap), np.nan, np.float32)
    usable = np.ones(store.n_tiles, bool) if array not in OUTPUT_ARRAYS else store.status(array) == TileStatus.DONE
    for idx, data in store.iter_batches(array, np.flatnonzero(usable)):
        for i, tile in zip(idx, data):
            tile = tile[band_select] if band_select else tile
            y, x = int(meta["tile_row"][i]) * stride_y, int(meta["tile_col"][i]) * stride_x
            out[:, y:y + store.height, x:x + store.width] = tile
    return out


def _rgb(optical: np.ndarray, gain: float = 3.5) -> np.ndarray:
    rgb = np.moveaxis(optical[[2, 1, 0]], 0, -1) * gain
    return np.clip(np.nan_to_num(rgb, nan=0.0), 0, 1)


def quicklook(store: TileStore, out_png: str | Path, arrays: tuple[str, ...] | None = None) -> Path:
    """One PNG: S1 VV, true colour of each optical array present, and NDVI of the last one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if arrays is None:
        arrays = tuple(a for a in ("s2_truth", *OUTPUT_ARRAYS)
                       if store.has(a) and (a not in OUTPUT_ARRAYS or store.counts(a).done > 0))
    panels: list[tuple[str, np.ndarray, dict[str, Any]]] = [
        ("S1 VV (dB)", grid_mosaic(store, "s1", [0])[0], {"cmap": "gray", "vmin": -25, "vmax": 5})]
    for name in arrays:
        panels.append((f"{name} (RGB)", _rgb(grid_mosaic(store, name)), {}))
    if arrays:
        panels.append((f"NDVI {arrays[-1]}", ndvi(grid_mosaic(store, arrays[-1])), {"cmap": "RdYlGn", "vmin": -0.3, "vmax": 0.9}))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.2), squeeze=False)
    for ax, (title, img, kw) in zip(axes[0], panels):
        ax.imshow(img, **kw)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return out_png


def metrics_markdown(result: dict[str, Any]) -> str:
    """A short Markdown table of a `evaluate_store` result."""
    lines = [f"# Metrics: {result['pred']} vs {result.get('baseline')} (truth: {result.get('truth')})", "",
             f"Tiles evaluated: {result['n_tiles']}", ""]
    if "pred_metrics" in result:
        base = result.get("baseline_metrics", {})
        lines += ["| Metric | " + (f"{result['baseline']} | " if base else "") + f"{result['pred']} |",
                  "|---|" + ("---|" if base else "") + "---|"]
        for key, value in result["pred_metrics"].items():
            lines.append(f"| {key} | " + (f"{base[key]:.4f} | " if base else "") + f"{value:.4f} |")
        lines.append("")
    if "geometry" in result:
        lines += ["| Geometry | Value |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in result["geometry"].items()]
        lines.append("")
    if "composite_score" in result:
        verdict = "PASS" if result["constraints_pass"] else "FAIL"
        lines.append(f"Composite score: {result['composite_score']:.4f} (constraints {verdict})")
    return "\n".join(lines) + "\n"
