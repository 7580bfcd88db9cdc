"""`ray job submit` against a real local head started (and stopped) by this test."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from axion_ray.config import SynthConfig
from axion_ray.store import TileStore
from axion_ray.store.synth import synthesize_aoi

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head(tmp_path):
    port, dashboard = free_port(), free_port()
    # Jobs inherit the head's environment: put this venv's python first on PATH.
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--node-ip-address", "127.0.0.1",
         "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--num-cpus", "2",
         "--include-dashboard", "true", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            probe = subprocess.run([str(BIN / "ray"), "job", "list", "--address", address], env=env,
                                   capture_output=True, text=True)
            if probe.returncode == 0:
                break
            time.sleep(2)
        else:
            pytest.fail(f"the Ray head did not come up: {probe.stderr[-500:]}")
        yield address, env
    finally:
        stop_session(head)


def stop_session(head: subprocess.Popen) -> None:
    """Stop exactly what this test started: every process of the head's session (not `ray stop`)."""
    def members():
        out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout.split("\n")
        return [int(p) for p, s in (line.split() for line in out if line.strip()) if int(s) == head.pid]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in members():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            head.wait(timeout=20)
            break
        except subprocess.TimeoutExpired:
            continue


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
