"""Stage 1 — TerraMind generation: Sentinel-1 GRD (dB) → optical `opt_v1`.

Contract: `forward(s1)` takes (B, 2, H, W) σ0 in dB [VV, VH] and returns (B, 4, H, W) reflectance in
[0, 1] [B02, B03, B04, B08]. `generate(s1)` returns TerraMind's full 12-band S2L2A in DN, which Stage 3
can use. Inputs are padded (reflect) to a square whose side is a multiple of 32 and the output cropped
back. Sampling is seeded (`seed`), so a run is reproducible for the same batches.
"""

from __future__ import annotations

import torch
from torch import nn

from axion_ray.models.common import pad_to_multiple, seeded
from axion_ray.models.registry import STAGES
from axion_ray.models.s2l2a import TERRAMIND_MULTIPLE, assemble_s2l2a, s2l2a_dn_to_opt
from axion_ray.models.terramind import TerraMindStageBase


class TerraMindStage1(TerraMindStageBase):
    INPUTS = STAGES[1].model_inputs
    OUTPUT = STAGES[1].output

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
        return self.token_loss({"S1GRD": s1}, assemble_s2l2a(truth))
