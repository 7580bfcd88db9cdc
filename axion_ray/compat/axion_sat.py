"""Axion-Sat's Stage 3 Python API (`axs_lib` names and signatures) over our models.

Their users call these from their own scripts; each is a thin door onto `build_stage` and the Stage 3
model, kept out of the model files so that the models never import the builder.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from axion_ray.models.builder import build_stage
from axion_ray.models.stage3 import TerraMindStage3


def build_stage3_model(timesteps: int = 10, standardize: bool = True, pretrained: bool = True, *,
                       preset: str = "tiny", weights: str | None = None, seed: int | None = 0) -> TerraMindStage3:
    """Axion-Sat's `build_stage3_model`; `pretrained=False` asks for random initialisation."""
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
