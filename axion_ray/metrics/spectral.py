"""Spectral metrics on [0, 1] reflectance, bands [B02, B03, B04, B08] (docs/ARCHITECTURE.md §6).

Everything is vectorised over a (N, 4, H, W) batch. Over a store, errors pool every pixel of every
tile (`SpectralAccumulator`): one global RMSE, one mean SAM, PSNR from the pooled MSE, SSIM the mean
over tiles. Invalid pixels (NaN in either image; store/validity.py) are left out of every figure: SSIM
is averaged over a tile's valid pixels only. Indices and SAM are a few lines of NumPy; SSIM follows scikit-image's Gaussian-window
implementation exactly (σ = 1.5, truncate 3.5, reflect borders, 5-px crop) so figures agree with it
to 1e-4 — torchmetrics pads borders differently (~1e-3 apart), so it is not the reference here.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from axion_ray.bands import BLUE, NIR, RED

NDVI_EPS = 1e-8
SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # scikit-image: win_size = 2 * int(3.5 * sigma + 0.5) + 1 = 11
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def ndvi(x: np.ndarray) -> np.ndarray:
    """NDVI = (B08 − B04) / (B08 + B04 + 1e-8) over the band axis (axis −3)."""
    x = np.asarray(x, dtype=np.float64)
    red, nir = x[..., RED, :, :], x[..., NIR, :, :]
    return (nir - red) / (nir + red + NDVI_EPS)


def evi(x: np.ndarray) -> np.ndarray:
    """EVI = 2.5 (B08 − B04) / (B08 + 6 B04 − 7.5 B02 + 1) over the band axis (axis −3)."""
    x = np.asarray(x, dtype=np.float64)
    blue, red, nir = x[..., BLUE, :, :], x[..., RED, :, :], x[..., NIR, :, :]
    return 2.5 * (nir - red) / (nir + 6.0 * red - 7.5 * blue + 1.0)


def spectral_angle(pred: np.ndarray, truth: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Per-pixel spectral angle (radians) between two (…, C, H, W) images."""
    a, b = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    dot = (a * b).sum(axis=-3)
    norms = np.sqrt((a * a).sum(axis=-3) * (b * b).sum(axis=-3))
    return np.arccos(np.clip(dot / np.maximum(norms, eps), -1.0, 1.0))


def ssim_per_tile(pred: np.ndarray, truth: np.ndarray, data_range: float = 1.0,
                  valid: np.ndarray | None = None) -> np.ndarray:
    """SSIM of each tile of a (N, C, H, W) batch, mean over bands (scikit-image convention); with a
    (N, H, W) `valid` mask, the mean over the valid pixels of the cropped map only."""
    x, y = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    sigma = (0, 0, SSIM_SIGMA, SSIM_SIGMA)

    def blur(img: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(img, sigma=sigma, truncate=_SSIM_TRUNCATE, mode="reflect")

    ux, uy = blur(x), blur(y)
    vx, vy, vxy = blur(x * x) - ux * ux, blur(y * y) - uy * uy, blur(x * y) - ux * uy
    c1, c2 = (_SSIM_K1 * data_range) ** 2, (_SSIM_K2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = int(_SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    if valid is None:
        return s[..., pad:-pad, pad:-pad].mean(axis=(-3, -2, -1))
    weights = valid[:, None, pad:-pad, pad:-pad].astype(np.float64) * np.ones_like(s[..., pad:-pad, pad:-pad])
    total = weights.sum(axis=(-3, -2, -1))
    sums = (s[..., pad:-pad, pad:-pad] * weights).sum(axis=(-3, -2, -1))
    return sums[total > 0] / total[total > 0]


class SpectralAccumulator:
    """Pools spectral errors over batches so a whole store gives one set of figures."""

    def __init__(self) -> None:
        self._sums = dict.fromkeys(("sq", "abs", "ndvi_sq", "evi_sq", "sam"), 0.0)
        self._n_values = 0
        self._n_pixels = 0
        self._ssim: list[np.ndarray] = []

    def update(self, pred: np.ndarray, truth: np.ndarray) -> None:
        pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
        if pred.shape != truth.shape or pred.ndim != 4:
            raise ValueError(f"pred and truth must be equal (N, C, H, W) batches, got {pred.shape} and {truth.shape}")
        valid = np.isfinite(pred).all(axis=1) & np.isfinite(truth).all(axis=1)
        if not valid.all():
            self._update_valid(pred, truth, valid)
            return
        diff = pred - truth
        self._sums["sq"] += float((diff * diff).sum())
        self._sums["abs"] += float(np.abs(diff).sum())
        self._sums["ndvi_sq"] += float(((ndvi(pred) - ndvi(truth)) ** 2).sum())
        self._sums["evi_sq"] += float(((evi(pred) - evi(truth)) ** 2).sum())
        self._sums["sam"] += float(spectral_angle(pred, truth).sum())
        self._n_values += diff.size
        self._n_pixels += diff.size // diff.shape[1]
        self._ssim.append(ssim_per_tile(pred, truth))

    def _update_valid(self, pred: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> None:
        """`update` over the valid pixels only (a tile with none adds nothing)."""
        keep = valid.any(axis=(1, 2))
        pred, truth, valid = pred[keep], truth[keep], valid[keep]
        if not keep.any():
            return
        pred_f = np.where(valid[:, None], pred, 0.0)
        truth_f = np.where(valid[:, None], truth, 0.0)
        diff = (pred_f - truth_f)
        n_valid = int(valid.sum())
        self._sums["sq"] += float((diff * diff).sum())
        self._sums["abs"] += float(np.abs(diff).sum())
        self._sums["ndvi_sq"] += float(((ndvi(pred) - ndvi(truth)) ** 2)[valid].sum())
        self._sums["evi_sq"] += float(((evi(pred) - evi(truth)) ** 2)[valid].sum())
        self._sums["sam"] += float(spectral_angle(pred_f, truth_f)[valid].sum())
        self._n_values += n_valid * pred.shape[1]
        self._n_pixels += n_valid
        self._ssim.append(ssim_per_tile(pred_f, truth_f, valid=valid))

    @property
    def n_tiles(self) -> int:
        return int(sum(s.size for s in self._ssim))

    def merge(self, other: SpectralAccumulator) -> SpectralAccumulator:
        """Add `other`'s tiles (another worker's share of the same validation set): the figures are
        those of every tile both saw, as one accumulator would have computed them."""
        for key, value in other._sums.items():
            self._sums[key] += value
        self._n_values += other._n_values
        self._n_pixels += other._n_pixels
        self._ssim.extend(other._ssim)
        return self

    def compute(self) -> dict[str, float]:
        """The §6 spectral figures: ndvi_rmse, evi_rmse, sam_rad, mse, mae, rmse, psnr_db, ssim."""
        if self._n_values == 0:
            raise ValueError("no tiles to compute metrics on")
        mse = self._sums["sq"] / self._n_values
        return {
            "ndvi_rmse": float(np.sqrt(self._sums["ndvi_sq"] / self._n_pixels)),
            "evi_rmse": float(np.sqrt(self._sums["evi_sq"] / self._n_pixels)),
            "sam_rad": self._sums["sam"] / self._n_pixels,
            "mse": mse,
            "mae": self._sums["abs"] / self._n_values,
            "rmse": float(np.sqrt(mse)),
            "psnr_db": psnr_from_mse(mse),
            "ssim": float(np.concatenate(self._ssim).mean()),
        }


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range ** 2 / mse))


def spectral_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """All spectral figures of one (N, 4, H, W) batch against its truth."""
    acc = SpectralAccumulator()
    acc.update(pred, truth)
    return acc.compute()
