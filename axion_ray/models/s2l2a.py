"""TerraMind's S2L2A modality and our four bands: the conversions both TerraMind stages share.

TerraMind's S2L2A input needs all 12 bands; Stage 2 refines only B02, B03, B04, B08. We assemble it
deliberately (`assemble_s2l2a`): our four bands always come from the optical input; the other eight
come from Stage 1's own 12-band output when the pipeline carries it, otherwise they are filled by
spectral interpolation — coastal from blue, the red-edge bands between red and NIR along the
vegetation red-edge, narrow NIR and water vapour from B08, and SWIR as TerraMind's pretraining mean
scaled by the pixel's VNIR brightness (SWIR cannot be inferred from VNIR; a neutral value keeps the
standardised input near zero rather than inventing structure).
"""

from __future__ import annotations

import torch

from axion_ray.bands import S2_DN_SCALE, S2L2A_PRETRAIN_MEAN_DN, TERRAMIND_S2L2A_INDEX

# TerraMind: 16-px patches on a square grid, and the S2L2A tokenizer's UNet halves the token grid, so
# the padded side must be a multiple of 32 (measured: 32, 64, 96, 128 run; 16, 48, 80 fail).
TERRAMIND_MULTIPLE = 32

# Red-edge position between B04 (665 nm) and B08 (842 nm) for RE1 705, RE2 740, RE3 783 nm: the
# vegetation red edge rises steeply from ~700 nm and saturates by ~780 nm.
_RED_EDGE_WEIGHTS = (0.20, 0.65, 0.92)
_WATER_VAPOUR_FACTOR = 0.9  # B09 tracks NIR, attenuated by water-vapour absorption


def s2l2a_dn_to_opt(s2l2a: torch.Tensor) -> torch.Tensor:
    """12-band S2L2A DN → our 4 bands as reflectance in [0, 1]."""
    return (s2l2a[:, list(TERRAMIND_S2L2A_INDEX)] / S2_DN_SCALE).clamp(0.0, 1.0)


def assemble_s2l2a(opt_v2: torch.Tensor, s2l2a_v1: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 4, H, W) reflectance [+ Stage 1's (B, 12, H, W) DN] → (B, 12, H, W) S2L2A DN."""
    dn4 = opt_v2.float() * S2_DN_SCALE
    blue, green, red, nir = dn4.unbind(dim=1)
    mean = torch.tensor(S2L2A_PRETRAIN_MEAN_DN, device=opt_v2.device)
    brightness = dn4.mean(dim=1)
    mean_brightness = mean[list(TERRAMIND_S2L2A_INDEX)].mean()
    re1, re2, re3 = (red + w * (nir - red) for w in _RED_EDGE_WEIGHTS)
    swir1 = mean[10] * brightness / mean_brightness
    swir2 = mean[11] * brightness / mean_brightness
    out = torch.stack([blue, blue, green, red, re1, re2, re3, nir, nir, _WATER_VAPOUR_FACTOR * nir, swir1, swir2], 1)
    if s2l2a_v1 is not None:  # Stage 1's bands where it produced them (rows it did not run are NaN)
        carried = s2l2a_v1.float()
        out = torch.where(torch.isfinite(carried), carried, out)
    out[:, list(TERRAMIND_S2L2A_INDEX)] = dn4
    return out


def standardize_s2l2a(s2l2a_dn: torch.Tensor) -> torch.Tensor:
    """(B, 12, H, W) DN standardised with TerraMind's own v1 pretraining statistics (read from
    terratorch, not copied: they are what its encoder's published weights expect)."""
    from terratorch.models.backbones.terramind.model.terramind_register import (
        v1_pretraining_mean,
        v1_pretraining_std,
    )

    mean = s2l2a_dn.new_tensor(v1_pretraining_mean["untok_sen2l2a@224"]).view(1, -1, 1, 1)
    std = s2l2a_dn.new_tensor(v1_pretraining_std["untok_sen2l2a@224"]).view(1, -1, 1, 1)
    return (s2l2a_dn - mean) / std
