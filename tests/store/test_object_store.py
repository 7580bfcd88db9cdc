"""Stores in object storage: an `s3://` store served by moto's S3-compatible server on loopback.

The commands run as a user runs them (a fresh process, the endpoint and keys in the environment), so the
local Ray each one starts hands the same environment to its workers.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import rasterio
import zarr
from affine import Affine

from axion_ray.errors import StoreExistsError, StoreLayoutError, StoreNotFoundError
from axion_ray.store import TileStatus, TileStore
from axion_ray.store.location import is_url, resolve_location

BUCKET = "axion-test"


@pytest.fixture(scope="module")
def s3_env():
    """A moto S3 server on 127.0.0.1 and the environment that points s3fs at it."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    yield {**os.environ, **env}, fs
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


def test_locations_resolve_to_absolute_paths_or_unchanged_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_location("a.zarr") == str(tmp_path / "a.zarr")
    assert resolve_location(f"file://{tmp_path}/b.zarr") == str(tmp_path / "b.zarr")
    assert resolve_location("s3://bucket/aoi.zarr/") == "s3://bucket/aoi.zarr"
    assert is_url("gs://b/k") and not is_url("file:///x") and not is_url("C:\\x") and not is_url("a.zarr")
    with pytest.raises(StoreLayoutError, match="fsspec package"):
        TileStore.open("nosuchproto://bucket/aoi.zarr")


def test_a_store_in_s3_writes_reads_and_tracks_status_with_clear_errors(s3_env):
    _, fs = s3_env
    url = f"s3://{BUCKET}/unit.zarr"
    store = TileStore.create(url, 3, 8, with_truth=True)
    assert store.path == url and fs.exists(f"{BUCKET}/unit.zarr/zarr.json")
    data = np.random.default_rng(0).random((2, 4, 8, 8), dtype=np.float32)
    store.write("opt_v1", [0, 2], data, proc_ms=5.0)
    again = TileStore.open(url, mode="r")
    np.testing.assert_array_equal(again.read("opt_v1", [0, 2]), data)
    assert again.status("opt_v1").tolist() == [TileStatus.DONE, TileStatus.PENDING, TileStatus.DONE]
    assert again.summary()["arrays"]["opt_v1"]["done"] == 2
    # One object per tile chunk: concurrent writers never share one, and each PUT is whole or absent.
    assert len(fs.find(f"{BUCKET}/unit.zarr/opt_v1/c")) == 2
    with pytest.raises(StoreExistsError):
        TileStore.create(url, 3, 8)
    with pytest.raises(StoreNotFoundError):
        TileStore.open(f"s3://{BUCKET}/missing.zarr")
    fs.pipe(f"{BUCKET}/v2.zarr/.zgroup", b"{}")
    with pytest.raises(StoreLayoutError, match="Zarr v2"):
        TileStore.open(f"s3://{BUCKET}/v2.zarr")


@pytest.mark.slow
def test_ingest_infer_mosaic_on_an_s3_store_with_no_local_copy(s3_env, tmp_path):
    env, fs = s3_env
    rng = np.random.default_rng(3)
    scene = tmp_path / "s1.tif"
    image = rng.normal(-14, 4, (2, 56, 80)).astype(np.float32)
    with rasterio.open(scene, "w", driver="GTiff", width=80, height=56, count=2, dtype="float32",
                       crs="EPSG:32632", transform=Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5100000.0)) as dst:
        dst.write(image)
    url = f"s3://{BUCKET}/aoi.zarr"
    work = tmp_path / "cwd"
    work.mkdir()

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "axion_ray.cli", *args], env=env, cwd=work,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    cli("ingest", str(scene), url, "--tile-size", "32", "--overlap", "8", "--month", "7", "--biome", "4")
    cli("infer", url, "--stages", "1,2", "--stage1-kind", "regress", "--allow-random-init", "--batch-size", "2")
    status = cli("status", url).splitlines()
    assert status[0].startswith(f"{url}: 6 tiles") and status[2].split() == ["opt_v1", "0", "6", "0", "0"]
    assert "edge" in cli("metrics", url, "--pred", "opt_v2", "--baseline", "opt_v1", "--truth", "none").lower()
    cli("mosaic", url, "--array", "opt_v2", "--out", str(tmp_path / "opt_v2.tif"))
    cli("mosaic", url, "--array", "opt_v2", "--out", f"s3://{BUCKET}/mosaic/opt_v2.zarr")

    store = TileStore.open(url, mode="r")
    assert store.grid_shape == (2, 3)
    for array in ("opt_v1", "opt_v2"):
        assert store.counts(array).done == store.n_tiles == 6
    assert store.provenance("opt_v1")["stage"] and store.provenance("opt_v2")["stage"]
    assert len(fs.find(f"{BUCKET}/aoi.zarr/opt_v2/c")) == store.n_tiles
    assert list(work.iterdir()) == []                                  # nothing staged in the working dir
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "opt_v2.tif", "s1.tif"]
    with rasterio.open(tmp_path / "opt_v2.tif") as src:
        tif = src.read()
        assert tif.shape == (4, 56, 80) and src.crs.to_string() == "EPSG:32632"
    assert np.isfinite(tif).all() and tif.min() >= 0 and tif.max() <= 1
    remote = zarr.open_array(zarr.storage.FsspecStore.from_url(f"s3://{BUCKET}/mosaic/opt_v2.zarr", read_only=True),
                             mode="r")
    np.testing.assert_array_equal(remote[:], tif)
    # The first tile of the mosaic is the first tile of the store outside the blended overlap.
    np.testing.assert_array_equal(tif[:, :24, :24], store.read("opt_v2", [0])[0, :, :24, :24])


def test_a_lease_record_replaced_while_it_is_read_is_read_whole(s3_env, monkeypatch):
    """The owner's heartbeat may replace the lease record while another process reads it. s3fs reads an
    open file by ranges pinned to the ETag it saw first, so that read failed with FileExpired and took a
    pipeline's write task down (seen in the test above); one GET of the whole object reads either record."""
    import json

    from axion_ray.store import lease

    _, fs = s3_env
    store = f"s3://{BUCKET}/leased.zarr"
    lease._write(store, {"owner": "first"})
    real, path = lease.filesystem(store)
    key = f"{path}/{lease.LEASE_KEY}"
    renewed = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"owner": "renewed"}}).encode()

    class HeartbeatDuringRead:
        """The real filesystem, with the record replaced once a read has begun (as a heartbeat may)."""

        def __getattr__(self, name):
            return getattr(real, name)

        def open(self, *args, **kwargs):
            handle = real.open(*args, **kwargs)
            real.pipe(key, renewed)
            return handle

        def cat_file(self, *args, **kwargs):
            real.pipe(key, renewed)
            return real.cat_file(*args, **kwargs)

    monkeypatch.setattr(lease, "filesystem", lambda location: (HeartbeatDuringRead(), path))
    assert lease._read(store) == {"owner": "renewed"}
