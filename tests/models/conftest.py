"""Model fixtures: each TerraMind tiny (~300 M parameters, ~2.3 GB) is built once per session."""

from __future__ import annotations

import pytest
import torch

from axion_ray.models import build_stage


def wake_up(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give zero-initialised parameters small random values.

    A randomly initialised TerraMind has zero-initialised output layers, so its decoder returns the
    pretraining mean whatever the input or the sampling; tests of seeding and input dependence need a
    model whose output actually depends on both (as a pretrained one does).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.abs().max() == 0:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
    return model


@pytest.fixture(scope="session")
def stage1_model():
    return wake_up(build_stage(1, "tiny", allow_random_init=True, timesteps=1, seed=0))


@pytest.fixture(scope="session")
def stage3_model():
    return wake_up(build_stage(3, "tiny", allow_random_init=True, timesteps=1, seed=0), seed=1)


@pytest.fixture(scope="session")
def stage2_model():
    return build_stage(2, "tiny", allow_random_init=True)
