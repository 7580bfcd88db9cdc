"""Edge-movement metrics: does a candidate keep the baseline's edges where they were? (docs/ARCHITECTURE.md §6)

On one band (B08): edges = Sobel magnitude normalised to [0, 1] per tile and thresholded; per-tile
displacement = symmetric chamfer distance (mean of the two directed mean distances to the nearest edge,
each truncated); edge_ratio pools edge-pixel counts over all tiles (robust to edgeless tiles);
edge_corr is the mean over tiles of the Pearson correlation of Sobel magnitudes (tiles where either
magnitude is constant are skipped). Sobel runs batched; the distance transform runs per tile because
scipy's EDT has no batch axis (a loop over tiles, not pixels). Invalid pixels (NaN in either image)
are filled from their nearest valid neighbour before Sobel, and edges within a pixel of the no-data
border are dropped: the border of the valid region is not an edge of the image.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from axion_ray.config import GeometryConfig
from axion_ray.store.validity import fill_invalid, interior


def sobel_magnitude(band: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a (N, H, W) batch."""
    band = np.asarray(band, dtype=np.float64)
    gy = ndimage.sobel(band, axis=-2, mode="nearest")
    gx = ndimage.sobel(band, axis=-1, mode="nearest")
    return np.hypot(gx, gy)


def edge_masks(magnitude: np.ndarray, threshold: float) -> np.ndarray:
    """Per-tile normalised magnitude > threshold."""
    peak = magnitude.max(axis=(-2, -1), keepdims=True)
    return (magnitude / np.where(peak > 0, peak, 1.0)) > threshold


def _directed_mean_distance(src: np.ndarray, dst: np.ndarray, truncate: float) -> float:
    if not src.any():
        return 0.0
    if not dst.any():
        return truncate
    dist_to_dst = ndimage.distance_transform_edt(~dst)
    return float(np.minimum(dist_to_dst[src], truncate).mean())


def chamfer_displacement(cand: np.ndarray, base: np.ndarray, truncate: float) -> float:
    """Symmetric truncated chamfer distance between two boolean edge maps (px)."""
    return 0.5 * (_directed_mean_distance(cand, base, truncate) + _directed_mean_distance(base, cand, truncate))


class GeometryAccumulator:
    """Collects per-tile edge statistics of candidate vs baseline over batches."""

    def __init__(self, cfg: GeometryConfig = GeometryConfig()):
        self.cfg = cfg
        self._disp: list[float] = []
        self._corr: list[float] = []
        self._n_edges = np.zeros(2, dtype=np.int64)  # candidate, baseline

    def update(self, candidate: np.ndarray, baseline: np.ndarray) -> None:
        if candidate.shape != baseline.shape or candidate.ndim != 4:
            raise ValueError(f"candidate and baseline must be equal (N, C, H, W) batches, got "
                             f"{candidate.shape} and {baseline.shape}")
        valid = np.isfinite(candidate).all(axis=1) & np.isfinite(baseline).all(axis=1)
        inner = None
        if not valid.all():
            keep = valid.any(axis=(1, 2))
            if not keep.any():
                return
            valid = valid[keep]
            candidate, baseline = fill_invalid(candidate[keep], valid), fill_invalid(baseline[keep], valid)
            inner = interior(valid)
        mag_c = sobel_magnitude(candidate[:, self.cfg.band])
        mag_b = sobel_magnitude(baseline[:, self.cfg.band])
        if inner is not None:  # no edges (nor gradients) on or beside the no-data border
            mag_c, mag_b = np.where(inner, mag_c, 0.0), np.where(inner, mag_b, 0.0)
        edges_c, edges_b = edge_masks(mag_c, self.cfg.edge_threshold), edge_masks(mag_b, self.cfg.edge_threshold)
        self._n_edges += [int(edges_c.sum()), int(edges_b.sum())]
        for ec, eb in zip(edges_c, edges_b):
            self._disp.append(chamfer_displacement(ec, eb, self.cfg.truncate_px))
        flat_c = mag_c.reshape(len(mag_c), -1)
        flat_b = mag_b.reshape(len(mag_b), -1)
        zc = flat_c - flat_c.mean(axis=1, keepdims=True)
        zb = flat_b - flat_b.mean(axis=1, keepdims=True)
        denom = np.sqrt((zc * zc).sum(axis=1) * (zb * zb).sum(axis=1))
        valid = denom > 0
        self._corr.extend(((zc * zb).sum(axis=1)[valid] / denom[valid]).tolist())

    def merge(self, other: GeometryAccumulator) -> GeometryAccumulator:
        """Add `other`'s tiles (another worker's share of the same validation set, in whole batches:
        `sobel_magnitude` smooths across a batch's tiles, so the figures depend on how they are batched)."""
        self._disp.extend(other._disp)
        self._corr.extend(other._corr)
        self._n_edges += other._n_edges
        return self

    def compute(self) -> dict[str, float]:
        """edge_disp_mean_px, edge_disp_max_px, edge_ratio, edge_corr."""
        if not self._disp:
            raise ValueError("no tiles to compute geometry metrics on")
        n_c, n_b = self._n_edges
        ratio = 1.0 if max(n_c, n_b) == 0 else float(min(n_c, n_b) / max(n_c, n_b))
        return {
            "edge_disp_mean_px": float(np.mean(self._disp)),
            "edge_disp_max_px": float(np.max(self._disp)),
            "edge_ratio": ratio,
            "edge_corr": float(np.mean(self._corr)) if self._corr else float("nan"),
        }


def geometry_metrics(candidate: np.ndarray, baseline: np.ndarray, cfg: GeometryConfig = GeometryConfig()) -> dict[str, float]:
    """Geometry figures of one (N, 4, H, W) batch against its baseline."""
    acc = GeometryAccumulator(cfg)
    acc.update(candidate, baseline)
    return acc.compute()


#: Axion-Sat's Stage 3 threshold: below it an output is "preview-only", not ARS-S v1 certified.
SAR_AGREEMENT_PRODUCTION = 0.6


def sar_agreement(optical: np.ndarray, s1: np.ndarray) -> float:
    """Axion-Sat's Stage 3 grounding check, as their report defines it: the cosine similarity of the
    min-max-normalised Sobel edge magnitudes of the optical luminance (0.2989 R + 0.587 G + 0.114 B)
    and of the mean S1 band, clipped to [0, 1]. No-data (NaN) pixels take the image's mean first."""
    from scipy import ndimage

    def edges(image: np.ndarray) -> np.ndarray:
        image = np.where(np.isfinite(image), image, np.nanmean(image) if np.isfinite(image).any() else 0.0)
        image = (image - image.min()) / (image.max() - image.min() + 1e-8)
        magnitude = np.hypot(ndimage.sobel(image, axis=0), ndimage.sobel(image, axis=1))
        magnitude = (magnitude - magnitude.min()) / (magnitude.max() - magnitude.min() + 1e-8)
        return magnitude.ravel() / (np.linalg.norm(magnitude) + 1e-8)

    luminance = 0.2989 * optical[2] + 0.5870 * optical[1] + 0.1140 * optical[0]
    return float(np.clip(np.dot(edges(luminance), edges(s1.mean(axis=0))), 0.0, 1.0))

