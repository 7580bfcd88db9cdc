"""Stage 3 — TerraMind grounding: S1 (dB) + `opt_v2` → `opt_v3`.

Contract: `forward(s1, opt_v2, s2l2a_v1=None)` takes (B, 2, H, W) dB and (B, 4, H, W) reflectance in
[0, 1] and returns (B, 4, H, W) in [0, 1].

TerraMind's S2L2A input needs all 12 bands; Stage 2 refines only B02, B03, B04, B08. We assemble it
deliberately (`assemble_s2l2a`): our four bands always come from `opt_v2`; the other eight come from
Stage 1's own 12-band output when the pipeline carries it (`s2l2a_v1`), otherwise they are filled from
`opt_v2` by spectral interpolation — coastal from blue, the red-edge bands between red and NIR along
the vegetation red-edge, narrow NIR and water vapour from B08, and SWIR as TerraMind's pretraining
mean scaled by the pixel's VNIR brightness (SWIR cannot be inferred from VNIR; a neutral value keeps the
standardised input near zero rather than inventing structure).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from axion_ray.bands import S2_DN_SCALE, S2L2A_PRETRAIN_MEAN_DN, TERRAMIND_S2L2A_INDEX
from axion_ray.models.common import pad_to_multiple, seeded
from axion_ray.models.terramind import TerraMindStageBase
from axion_ray.models.stage1 import TERRAMIND_MULTIPLE, s2l2a_dn_to_opt

# Red-edge position between B04 (665 nm) and B08 (842 nm) for RE1 705, RE2 740, RE3 783 nm: the
# vegetation red edge rises steeply from ~700 nm and saturates by ~780 nm.
_RED_EDGE_WEIGHTS = (0.20, 0.65, 0.92)
_WATER_VAPOUR_FACTOR = 0.9  # B09 tracks NIR, attenuated by water-vapour absorption


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


class TerraMindStage3(TerraMindStageBase):
    INPUTS = ("s1", "opt_v2")
    OPTIONAL_INPUTS = ("s2l2a_v1",)
    OUTPUT = "opt_v3"

    def __init__(self, generator: nn.Module, *, timesteps: int = 10, standardize: bool = True, seed: int | None = 0):
        super().__init__(generator, timesteps=timesteps, standardize=standardize, seed=seed)

    def generate(self, s1: torch.Tensor, opt_v2: torch.Tensor, s2l2a_v1: torch.Tensor | None = None,
                 timesteps: int | None = None) -> torch.Tensor:
        """Grounded 12-band S2L2A in DN."""
        s2 = assemble_s2l2a(opt_v2, s2l2a_v1)
        both = torch.cat([s1.float(), s2], dim=1)
        padded, (h, w) = pad_to_multiple(both, TERRAMIND_MULTIPLE, square=True)
        with seeded(self.seed):
            out = self.generator({"S1GRD": padded[:, :2], "S2L2A": padded[:, 2:]}, standardize=self.standardize,
                                 timesteps=timesteps or self.timesteps)["S2L2A"]
        return out[..., :h, :w].float()

    def forward(self, s1: torch.Tensor, opt_v2: torch.Tensor, s2l2a_v1: torch.Tensor | None = None,
                timesteps: int | None = None) -> torch.Tensor:
        return s2l2a_dn_to_opt(self.generate(s1, opt_v2, s2l2a_v1, timesteps))

    def training_loss(self, s1: torch.Tensor, opt_v2: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Token objective (see `token_loss`) for S1 + `opt_v2` → the reference image `truth` in [0, 1]."""
        return self.token_loss({"S1GRD": s1, "S2L2A": assemble_s2l2a(opt_v2)}, assemble_s2l2a(truth))


# ----------------------------------------------------------------------------- Axion-Sat API
def build_stage3_model(timesteps: int = 10, standardize: bool = True, pretrained: bool = True, *,
                       preset: str = "tiny", weights: str | None = None, seed: int | None = 0) -> TerraMindStage3:
    """Axion-Sat's `build_stage3_model`; `pretrained=False` asks for random initialisation."""
    from axion_ray.models.builder import build_stage

    return build_stage(3, preset=preset, weights=weights, allow_random_init=not pretrained,
                       timesteps=timesteps, standardize=standardize, seed=seed)


@torch.no_grad()
def stage3_inference(model: TerraMindStage3, s1: torch.Tensor, opt_v2: torch.Tensor,
                     timesteps: int | None = None) -> torch.Tensor:
    """Axion-Sat's `stage3_inference`: (B, 2, H, W) + (B, 4, H, W) → opt_v3 (B, 4, H, W)."""
    device = next(model.parameters()).device
    return model(s1.to(device), opt_v2.to(device), timesteps=timesteps)


@torch.no_grad()
def stage3_batch_inference(model: TerraMindStage3, dataloader: Iterable[Any], timesteps: int | None = None,
                           verbose: bool = False) -> dict[str, torch.Tensor]:
    """Axion-Sat's `stage3_batch_inference`: batches with `s1` and `opt_v2` (dicts or pairs) → all opt_v3."""
    outputs = []
    for i, batch in enumerate(dataloader):
        s1, opt_v2 = (batch["s1"], batch["opt_v2"]) if isinstance(batch, dict) else batch[:2]
        outputs.append(stage3_inference(model, s1, opt_v2, timesteps).cpu())
        if verbose:
            print(f"stage3: batch {i + 1}, {sum(len(o) for o in outputs)} tiles")
    return {"opt_v3": torch.cat(outputs) if outputs else torch.empty(0, 4, 0, 0)}


def compute_stage3_metrics(opt_v3: torch.Tensor, opt_v2: torch.Tensor, s2_truth: torch.Tensor) -> dict[str, float]:
    """Axion-Sat's `compute_stage3_metrics`: MSE/MAE of v3 and v2 against truth and the % improvement."""
    t = s2_truth.float()
    mse_v3, mse_v2 = torch.mean((opt_v3.float() - t) ** 2).item(), torch.mean((opt_v2.float() - t) ** 2).item()
    mae_v3, mae_v2 = torch.mean((opt_v3.float() - t).abs()).item(), torch.mean((opt_v2.float() - t).abs()).item()
    return {
        "mse_v3": mse_v3, "mse_v2": mse_v2,
        "mse_improvement_%": 100.0 * (mse_v2 - mse_v3) / mse_v2 if mse_v2 > 0 else 0.0,
        "mae_v3": mae_v3, "mae_v2": mae_v2,
        "mae_improvement_%": 100.0 * (mae_v2 - mae_v3) / mae_v2 if mae_v2 > 0 else 0.0,
    }
