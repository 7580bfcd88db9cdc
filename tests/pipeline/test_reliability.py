"""A run survives a killed stage actor; a killed driver's run resumes without redoing finished tiles."""

import subprocess
import sys
import time

import numpy as np
import pytest
import ray

from axion_ray.config import InferConfig, SynthConfig
from axion_ray.distributed.local_cluster import kill_session
from axion_ray.pipeline import run_pipeline
from axion_ray.pipeline.run import current_tracker
from axion_ray.store import TileStatus, TileStore
from axion_ray.store.synth import synthesize_aoi

pytestmark = pytest.mark.slow


def big_aoi(path):
    return synthesize_aoi(path, SynthConfig(rows=24, cols=24, tile_size=32, seed=5))


def test_a_killed_stage_actor_is_replaced_and_every_tile_completes(local_ray, tmp_path):
    store = big_aoi(tmp_path / "aoi.zarr")
    cfg = InferConfig(stages=(2,), allow_random_init=True, batch_size=1, tiles_per_read_task=2,
                      progress_interval_s=0.2)
    killed = {}

    def say(line):
        # Kill the stage actor once tiles are flowing: from the progress callback, mid-run.
        if "killed" not in killed and "tiles/s" in line:
            for actor in ray.get(current_tracker().stage_actors.remote(2)):
                ray.kill(actor, no_restart=False)
                killed["killed"] = line

    summary = run_pipeline(store.path, cfg, say=say)
    assert killed, "the run finished before an actor could be killed"
    assert int(killed["killed"].split("/")[0].strip()) < store.n_tiles
    final = TileStore.open(store.path)
    assert final.counts("opt_v2").done == store.n_tiles and summary.per_stage[2]["failed"] == 0
    np.testing.assert_array_equal(final.read("opt_v2", range(store.n_tiles)), final.read("opt_v1", range(store.n_tiles)))


def test_a_killed_driver_resumes_without_redoing_done_tiles(tmp_path):
    store = big_aoi(tmp_path / "aoi.zarr")
    cmd = [sys.executable, "-m", "axion_ray.cli", "infer", store.path, "--stages", "2", "--allow-random-init",
           "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            done = int((TileStore.open(store.path, mode="r").status("opt_v2") == TileStatus.DONE).sum())
            if done >= 5:
                break
            time.sleep(0.05)
    finally:
        kill_session(proc)  # the driver and every process of the local Ray it started
    before = TileStore.open(store.path, mode="r")
    done_before = before.indices_with_status("opt_v2", TileStatus.DONE)
    assert 5 <= done_before.size < store.n_tiles, "kill the driver mid-run"
    ms_before = before.proc_ms("opt_v2")[done_before]

    summary = run_pipeline(store.path, InferConfig(stages=(2,), allow_random_init=True, address="local"),
                           say=lambda _: None)
    after = TileStore.open(store.path)
    assert after.counts("opt_v2").done == store.n_tiles
    assert summary.scheduled_tiles == store.n_tiles - done_before.size  # finished tiles not redone
    np.testing.assert_array_equal(after.proc_ms("opt_v2")[done_before], ms_before)
    np.testing.assert_array_equal(after.read("opt_v2", range(store.n_tiles)), after.read("opt_v1", range(store.n_tiles)))
