"""Shared fixtures: small synthetic stores generated on the fly (never downloaded)."""

from __future__ import annotations

import pytest

from axion_ray.config import SynthConfig
from axion_ray.store.synth import synthesize_aoi


@pytest.fixture(scope="session")
def small_aoi(tmp_path_factory):
    """A 3x3 AOI of 32-px tiles with 4 px overlap; treat as read-only."""
    path = tmp_path_factory.mktemp("aoi") / "small.zarr"
    return synthesize_aoi(path, SynthConfig(rows=3, cols=3, tile_size=32, overlap=4, seed=7))


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray for the pipeline and training tests (never a cluster a previous run left behind)."""
    import ray

    from axion_ray.distributed.session import local_system_config

    if not ray.is_initialized():  # the same Ray settings as `init_ray` gives a local Ray
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING",
                 _system_config=local_system_config())
    yield
    ray.shutdown()
