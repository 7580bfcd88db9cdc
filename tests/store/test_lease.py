"""One run owns a store: a live lease stops a second run with one line; a stale writer writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from axion_ray.config import SynthConfig
from axion_ray.errors import StoreBusyError
from axion_ray.store import TileStore
from axion_ray.store.lease import LEASE_KEY, LeaseGuard, acquire, held
from axion_ray.store.synth import synthesize_aoi


@pytest.fixture
def store(tmp_path):
    return synthesize_aoi(tmp_path / "s.zarr", SynthConfig(rows=2, cols=2, tile_size=16, seed=1))


def test_a_live_lease_stops_a_second_run_and_a_released_one_grows_the_epoch(store):
    first = acquire(store.path, command="infer", ttl_s=30)
    with pytest.raises(StoreBusyError, match=r"in use by run .*pid \d+.*--wait"):
        acquire(store.path, command="infer")
    first.release()
    second = acquire(store.path)
    assert second.epoch == first.epoch + 1
    assert not LeaseGuard(store.path, first.epoch).current() and LeaseGuard(store.path, second.epoch).current()
    second.release()
    assert not LeaseGuard(store.path, second.epoch).current()  # released: nobody writes under it


def test_an_expired_or_dead_owner_gives_the_store_up_and_wait_waits(store):
    stale = acquire(store.path, ttl_s=0.5)  # never heartbeaten
    time.sleep(0.7)
    taker = acquire(store.path, ttl_s=30)
    assert taker.epoch == stale.epoch + 1 and not stale.heartbeat()  # the old owner learns it lost
    taker.release()
    # A dead process on this host holds nothing, whatever its heartbeat says.
    proc = subprocess.run([sys.executable, "-c", f"from axion_ray.store.lease import acquire; acquire({store.path!r})"],
                          check=True)
    assert proc.returncode == 0
    after_dead = acquire(store.path)
    after_dead.release()
    # --wait: a second run waits until the first releases.
    with held(store.path, ttl_s=30):
        started = time.time()
        child = subprocess.Popen([sys.executable, "-c", "from axion_ray.store.lease import acquire; "
                                  f"l = acquire({store.path!r}, wait=True, poll_s=0.2); print(l.epoch)"],
                                 stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert child.poll() is None  # still waiting
    out, _ = child.communicate(timeout=30)
    assert int(out) > after_dead.epoch and time.time() - started >= 1.5
    assert os.path.exists(os.path.join(store.path, LEASE_KEY))
    import xarray
    import zarr

    lease_group = zarr.open_group(store.path, mode="r", use_consolidated=False)["lease"]  # a Zarr group
    assert lease_group.attrs["epoch"] > after_dead.epoch
    xarray.open_zarr(store.path, consolidated=False)  # the store stays a valid Zarr hierarchy


def test_two_infer_runs_on_one_store_the_second_stops_with_one_line(local_ray, tmp_path):
    """Real commands: while one `infer` holds the store, another exits 2 with one line naming it."""
    store = synthesize_aoi(tmp_path / "aoi.zarr", SynthConfig(rows=3, cols=3, tile_size=32, seed=2))
    with held(store.path, command="infer (the first run)", ttl_s=30):
        proc = subprocess.run([sys.executable, "-m", "axion_ray.cli", "infer", store.path, "--stages", "2",
                               "--allow-random-init"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "in use by run" in proc.stderr and "the first run" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert TileStore.open(store.path).counts("opt_v2").done == 0  # the second run wrote nothing


def _marked_dataset(store):
    """A Ray Dataset of every tile of `store` as the stage-2 pool would hand it to the sink: done, 0.25."""
    from axion_ray.distributed.tile_io import read_tile_store

    marker = np.full((store.n_tiles, 4, 16, 16), 0.25, np.float32)
    return read_tile_store(store.path, np.arange(store.n_tiles), ["opt_v1"], (16, 16)).map_batches(
        lambda b: {**b, "opt_v2": marker[:len(b["tile"])], "status_2": np.ones(len(b["tile"]), np.uint8),
                   "reason_2": np.array([""] * len(b["tile"])), "ms_2": np.zeros(len(b["tile"]), np.float32),
                   "device_2": np.array(["cpu"] * len(b["tile"])), "node_2": np.array(["n"] * len(b["tile"])),
                   "fallback_2": np.zeros(len(b["tile"]), np.int32)}, batch_format="numpy")


def test_a_stale_writer_writes_nothing_after_the_store_changed_hands(local_ray, tmp_path):
    """The workers of a killed driver still hold their old epoch: the sink refuses their blocks."""
    import ray

    from axion_ray.distributed.tile_io import write_tile_store
    from axion_ray.pipeline.progress import ProgressTracker

    store = synthesize_aoi(tmp_path / "aoi.zarr", SynthConfig(rows=2, cols=2, tile_size=16, seed=3))
    old = acquire(store.path)
    old.release()  # the killed run's lease; a new run now holds the store
    new = acquire(store.path)
    ds = _marked_dataset(store)
    tracker = ProgressTracker.remote([2])
    write_tile_store(ds, store.path, (2,), tracker, LeaseGuard(store.path, old.epoch))
    assert ray.get(tracker.snapshot.remote())["refused"] == 4  # a write task returns once its report arrived
    assert TileStore.open(store.path).counts("opt_v2").done == 0
    write_tile_store(ds, store.path, (2,), tracker, LeaseGuard(store.path, new.epoch))
    assert TileStore.open(store.path).counts("opt_v2").done == 4
    new.release()
    ray.kill(tracker)


def test_a_retried_write_is_counted_once(local_ray, tmp_path):
    """A write task whose node died after its report arrived is run again on the same read tasks: the
    store holds the same bytes, and the run's count must not grow (CI once counted 128 of 144 tiles)."""
    import ray

    from axion_ray.distributed.tile_io import write_tile_store
    from axion_ray.pipeline.progress import ProgressTracker

    store = synthesize_aoi(tmp_path / "aoi.zarr", SynthConfig(rows=2, cols=3, tile_size=16, seed=4))
    ds = _marked_dataset(store)
    tracker = ProgressTracker.remote([2])
    write_tile_store(ds, store.path, (2,), tracker)
    first = ray.get(tracker.snapshot.remote())
    assert first["tiles"] == 6 and first["per_stage"][2]["done"] == 6 and first["per_stage"][2]["nodes"] == {"n": 6}
    write_tile_store(ds, store.path, (2,), tracker)  # every read task written a second time
    again = ray.get(tracker.snapshot.remote())
    assert again["tiles"] == 6 and again["per_stage"][2]["done"] == 6 and again["per_stage"][2]["nodes"] == {"n": 6}
    assert TileStore.open(store.path).counts("opt_v2").done == 6
    ray.kill(tracker)
