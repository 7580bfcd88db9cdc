"""A Ray cluster that declares GPUs this machine does not have: the plan's actor requests fit the
declared GPUs, the actors are scheduled on them, and each runs on the CPU instead of failing."""

import pytest

from axion_ray.config import InferConfig, SynthConfig
from axion_ray.pipeline import run_pipeline
from axion_ray.store import TileStore
from axion_ray.store.synth import synthesize_aoi


@pytest.fixture(scope="module")
def ray_with_a_declared_gpu():
    import ray

    was_up = ray.is_initialized()  # the session's shared local Ray (tests/conftest.py): put it back after
    if was_up:
        ray.shutdown()
    ray.init(address="local", num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
    if was_up:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")


def test_actors_on_a_declared_gpu_fall_back_to_the_cpu(ray_with_a_declared_gpu, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a real GPU")
    store = synthesize_aoi(tmp_path / "aoi.zarr", SynthConfig(rows=2, cols=2, tile_size=32, seed=1))
    cfg = InferConfig(stages=(2,), allow_random_init=True, num_cpus=0.5, batch_size=4)
    summary = run_pipeline(store.path, cfg, say=lambda _: None)
    stats = summary.per_stage[2]
    assert stats["done"] == 4 and stats["failed"] == 0
    assert stats["devices"] == ["cpu"]  # scheduled on the GPU resource, ran on the CPU, and says so
    assert TileStore.open(store.path).provenance("opt_v2")["device"] == "cpu"
