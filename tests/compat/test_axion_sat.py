"""Axion-Sat's Stage 3 Python API: `build_stage3_model` (the other three are exercised on the model
fixture in tests/models/test_stage3.py)."""

import pytest

from axion_ray.compat import build_stage3_model
from axion_ray.errors import WeightsNotFoundError
from axion_ray.models.stage3 import TerraMindStage3


def test_build_stage3_model_pretrained_false_is_a_recorded_random_init():
    model = build_stage3_model(timesteps=2, standardize=False, pretrained=False, seed=7)
    assert isinstance(model, TerraMindStage3)
    assert (model.timesteps, model.standardize, model.seed) == (2, False, 7)
    assert model.provenance["random_init"] is True and model.provenance["stage"] == "stage3"
    assert not model.training


def test_build_stage3_model_pretrained_needs_local_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("AXION_RAY_WEIGHTS", str(tmp_path / "empty"))  # nothing there (nor, here, in the HF cache)
    with pytest.raises(WeightsNotFoundError, match="TerraMind_v1_tiny.pt"):
        build_stage3_model(pretrained=True, weights=str(tmp_path / "none"))
