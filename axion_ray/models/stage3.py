"""Stage 3 — TerraMind grounding: S1 (dB) + `opt_v2` → `opt_v3`.

Contract: `forward(s1, opt_v2, s2l2a_v1=None)` takes (B, 2, H, W) dB and (B, 4, H, W) reflectance in
[0, 1] and returns (B, 4, H, W) in [0, 1]. The 12-band S2L2A input is assembled from `opt_v2` (and
Stage 1's carried bands) by `models.s2l2a.assemble_s2l2a`. Axion-Sat's Stage 3 Python API
(`build_stage3_model`, `stage3_inference`, …) lives in `axion_ray.compat.axion_sat`.
"""

from __future__ import annotations

import torch
from torch import nn

from axion_ray.models.common import pad_to_multiple, seeded
from axion_ray.models.registry import STAGES
from axion_ray.models.s2l2a import TERRAMIND_MULTIPLE, assemble_s2l2a, s2l2a_dn_to_opt
from axion_ray.models.terramind import TerraMindStageBase


class TerraMindStage3(TerraMindStageBase):
    INPUTS = STAGES[3].model_inputs
    OPTIONAL_INPUTS = STAGES[3].optional_inputs
    OUTPUT = STAGES[3].output

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
