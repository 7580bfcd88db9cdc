"""Real multi-node on one machine: a Ray head and a second raylet (both on 127.0.0.1, distinct custom
resources). A pipeline run places stage actors on both nodes; losing the second node mid-run still
finishes every tile exactly once on the head."""

import json
import subprocess
import time

import numpy as np
import pytest

from axion_ray.config import SynthConfig
from axion_ray.distributed.local_cluster import BIN, LocalCluster, stop_session, wait_for
from axion_ray.store import TileStore
from axion_ray.store.synth import synthesize_aoi
from axion_ray.store.tile_store import TileStatus

pytestmark = pytest.mark.slow


@pytest.fixture
def two_nodes():
    cluster = LocalCluster(cpus_per_node=1)
    try:
        yield cluster
    finally:
        cluster.stop()


def _infer(store, address, env, summary):
    # Ray Data starts pool actors asynchronously: on a small store the head's actor could finish every
    # tile before the second node's actor has imported torch (seen once here). Dispatch waits
    # for both actors, so the second node's actor is up before the first block. One task in flight per
    # actor sends a block elsewhere whenever the actor beside the data is busy.
    env = {**env, "RAY_DATA_DEFAULT_WAIT_FOR_MIN_ACTORS_S": "300",
           "RAY_DATA_ACTOR_DEFAULT_MAX_TASKS_IN_FLIGHT_TO_MAX_CONCURRENCY_FACTOR": "1"}
    return subprocess.Popen(
        [str(BIN / "axion-ray"), "infer", str(store), "--stages", "2", "--allow-random-init", "--address", address,
         "--actors", "2:2", "--batch-size", "2", "--json", str(summary)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_stage_actors_run_on_both_nodes_and_survive_losing_one(two_nodes, tmp_path):
    address, env = two_nodes.address, two_nodes.env
    store = synthesize_aoi(tmp_path / "aoi.zarr", SynthConfig(rows=4, cols=6, tile_size=32, seed=6))
    run = _infer(store.path, address, env, tmp_path / "s1.json")
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-3000:]
    first = json.loads((tmp_path / "s1.json").read_text())["per_stage"]["2"]
    assert len(first["actor_nodes"]) == 2                                 # the pool spread over both nodes
    # Which actor writes which block is Ray Data's call: it hands a block to an idle actor on the node
    # that holds it, so when reads are slower than this random-init model the head's actor may take every
    # block (8 of 8 once in CI; 6–18 of 24 tiles on the second node in probes). Placement is ours to test.
    assert set(first["nodes"]) <= set(first["actor_nodes"]) and sum(first["nodes"].values()) == store.n_tiles

    # Second run, on a bigger store: kill the second node once a few tiles are written.
    big = synthesize_aoi(tmp_path / "big.zarr", SynthConfig(rows=12, cols=12, tile_size=64, seed=7))
    run = _infer(big.path, address, env, tmp_path / "s2.json")
    reader = TileStore.open(big.path, mode="r")
    wait_for(lambda: (reader.status("opt_v2") == TileStatus.DONE).sum() >= 8 or run.poll() is not None,
             "the first tiles", timeout=300, every=0.5)
    assert run.poll() is None, "the run finished before the node could be stopped; make the store bigger"
    stop_session(two_nodes.second)
    killed_at = time.time()
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-3000:]
    summary = json.loads((tmp_path / "s2.json").read_text())["per_stage"]["2"]
    status = TileStore.open(big.path, mode="r").status("opt_v2")
    assert (status == TileStatus.DONE).all()                              # none lost
    assert summary["done"] == big.n_tiles and sum(summary["nodes"].values()) == big.n_tiles  # each written once
    assert summary["failed"] == 0 and time.time() - killed_at < 600
    assert np.isfinite(TileStore.open(big.path, mode="r").read("opt_v2", np.arange(big.n_tiles))).all()
