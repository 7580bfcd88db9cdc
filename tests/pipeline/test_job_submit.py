"""`ray job submit` against a real local head started (and stopped) by this test."""

import subprocess
import time
from pathlib import Path

import pytest

from axion_ray.config import SynthConfig
from axion_ray.distributed.local_cluster import BIN, free_port, ray_env, start_ray, stop_session, wait_for
from axion_ray.store import TileStore
from axion_ray.store.synth import synthesize_aoi

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def ray_head(tmp_path):
    port, dashboard = free_port(), free_port()
    env = ray_env()
    # The job agent's ports are fixed by default (52365, ...): a Ray already running in this test
    # session holds them, and the head's agent then never serves jobs ("No available agent").
    agent_ports = [f"--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                        "metrics-export-port", "runtime-env-agent-port")]
    head = start_ray(["--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--dashboard-host",
                      "127.0.0.1", "--dashboard-port", str(dashboard), "--num-cpus", "2", "--include-dashboard", "true",
                      *agent_ports], env)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for(lambda: subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                                        capture_output=True).returncode == 0, "the Ray head's dashboard")
        yield address, env
    finally:
        stop_session(head)


def submit(address: str, env: dict, entrypoint: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the head's job agent is still starting (the dashboard answers
    `job list` a little before its agent accepts jobs: "No available agent to submit job")."""
    deadline = time.time() + 90
    while True:
        result = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", str(REPO),
                                 "--", *entrypoint], env=env, capture_output=True, text=True, timeout=timeout)
        if result.returncode == 0 or "No available agent" not in result.stderr or time.time() > deadline:
            return result
        time.sleep(3)


def test_infer_job_runs_on_a_submitted_cluster(ray_head, tmp_path):
    address, env = ray_head
    store = synthesize_aoi(tmp_path / "aoi.zarr", SynthConfig(rows=2, cols=3, tile_size=32, seed=4))
    result = submit(address, env, ["python", "jobs/infer_aoi.py", str(store.path), "--stages", "2",
                                   "--allow-random-init"])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "succeeded" in result.stdout
    done = TileStore.open(store.path, mode="r")
    assert done.counts("opt_v2").done == 6
    assert done.provenance("opt_v2")["stage"] == "stage2"
