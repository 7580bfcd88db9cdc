"""Which pixels are valid, and how invalid ones are filled for a model (docs/DESIGN_NOTES.md, "Validity").

The store records validity in the data itself: a pixel of an image array is valid where every band is
finite; NaN marks no-data (outside the scene, the GRD no-data wedge, a source's nodata value, masked
pixels). A stage's output is NaN exactly where any of its image inputs is invalid, so validity flows
Stage 1 → 2 → 3 without a separate mask array. Each tile's valid fraction of `s1` is recorded at
ingest (`valid_fraction`); a tile under the store's `min_valid` is *no data* and never runs.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: Axion-Sat's tiler keeps a tile when at least half of it is valid.
DEFAULT_MIN_VALID = 0.5


def valid_pixels(*images: np.ndarray) -> np.ndarray:
    """(N, H, W): True where every band of every (N, C, H, W) image is finite."""
    valid = np.isfinite(images[0]).all(axis=1)
    for image in images[1:]:
        valid &= np.isfinite(image).all(axis=1)
    return valid


def valid_fraction(*images: np.ndarray) -> np.ndarray:
    """Per tile, the fraction of valid pixels (N,)."""
    return valid_pixels(*images).mean(axis=(1, 2))


def fill_invalid(images: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A copy of (N, C, H, W) `images` whose invalid pixels take the value of the nearest valid pixel.

    Nearest-valid rather than a constant: a constant would draw a sharp artificial edge along the
    no-data border, which the models (and the edge-keeping losses) would take for a real edge. A tile
    with no valid pixel is filled with zeros (it does not run; this only keeps arithmetic finite).
    """
    out = np.array(images, dtype=np.float32, copy=True)
    for i in np.flatnonzero(~valid.all(axis=(1, 2))):
        if not valid[i].any():
            out[i] = 0.0
            continue
        _, (rows, cols) = ndimage.distance_transform_edt(~valid[i], return_indices=True)
        out[i] = out[i][:, rows, cols]
    return out


def interior(valid: np.ndarray, margin: int = 1) -> np.ndarray:
    """Valid pixels at least `margin` px from any invalid one (a 3x3 filter near the border sees fill)."""
    if valid.all():
        return valid
    structure = np.zeros((1, 3, 3), bool)
    structure[0] = True
    return ndimage.binary_erosion(valid, structure=structure, iterations=margin, border_value=1)
