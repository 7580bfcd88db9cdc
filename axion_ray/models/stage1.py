"""Stage 1 — TerraMind generation: Sentinel-1 GRD (dB) → optical `opt_v1`.

Contract: `forward(s1)` takes (B, 2, H, W) σ0 in dB [VV, VH] and returns (B, 4, H, W) reflectance in
[0, 1] [B02, B03, B04, B08]. `generate(s1)` returns TerraMind's full 12-band S2L2A in DN, which Stage 3
can use for the bands Stage 2 does not refine. TerraMind needs a square input whose side is a multiple of 32: any H, W is padded to one
and the output cropped back. Sampling is seeded (`seed`), so a run is reproducible for the same batches.
"""

from __future__ import annotations

import torch
from torch import nn

from axion_ray.bands import S2_DN_SCALE, TERRAMIND_S2L2A_INDEX
from axion_ray.models.common import pad_to_multiple, seeded
from axion_ray.models.terramind import TerraMindStageBase

# TerraMind: 16-px patches on a square grid, and the S2L2A tokenizer's UNet halves the token grid, so
# the padded side must be a multiple of 32 (measured: 32, 64, 96, 128 run; 16, 48, 80 fail).
TERRAMIND_MULTIPLE = 32


def s2l2a_dn_to_opt(s2l2a: torch.Tensor) -> torch.Tensor:
    """12-band S2L2A DN → our 4 bands as reflectance in [0, 1]."""
    return (s2l2a[:, list(TERRAMIND_S2L2A_INDEX)] / S2_DN_SCALE).clamp(0.0, 1.0)


class TerraMindStage1(TerraMindStageBase):
    INPUTS = ("s1",)
    OUTPUT = "opt_v1"

    def __init__(self, generator: nn.Module, *, timesteps: int = 10, standardize: bool = True, seed: int | None = 0):
        super().__init__(generator, timesteps=timesteps, standardize=standardize, seed=seed)

    def generate(self, s1: torch.Tensor, timesteps: int | None = None) -> torch.Tensor:
        """(B, 2, H, W) dB → (B, 12, H, W) S2L2A DN."""
        padded, (h, w) = pad_to_multiple(s1.float(), TERRAMIND_MULTIPLE, square=True)
        with seeded(self.seed):
            out = self.generator({"S1GRD": padded}, standardize=self.standardize,
                                 timesteps=timesteps or self.timesteps)["S2L2A"]
        return out[..., :h, :w].float()

    def forward(self, s1: torch.Tensor) -> torch.Tensor:
        return s2l2a_dn_to_opt(self.generate(s1))

    def training_loss(self, s1: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        """Token objective (see `token_loss`) for S1 → the reference image `truth` (B, 4, H, W) in [0, 1]."""
        from axion_ray.models.stage3 import assemble_s2l2a

        return self.token_loss({"S1GRD": s1}, assemble_s2l2a(truth))
