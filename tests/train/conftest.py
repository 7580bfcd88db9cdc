"""One local Ray for the pipeline tests (never a cluster a previous run left behind)."""

from __future__ import annotations

import pytest
import ray


@pytest.fixture(scope="session")
def local_ray():
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
