import json

import numpy as np
import pytest
import xarray as xr
import zarr

from axion_ray.errors import StoreExistsError, StoreLayoutError, StoreNotFoundError, TileDataError, TileMetadataError
from axion_ray.store import OUTPUT_ARRAYS, TileStatus, TileStore


@pytest.fixture
def store(tmp_path):
    return TileStore.create(tmp_path / "s.zarr", 6, (16, 24), crs="EPSG:32633",
                            transform=(500000.0, 10.0, 0.0, 5200000.0, 0.0, -10.0), overlap=2,
                            grid_shape=(2, 3), with_truth=True)


def rand(n, c=4, h=16, w=24, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


def test_layout_matches_the_contract(store):
    g = zarr.open_group(store.path, mode="r")
    shard = store.shard_tiles
    assert g["s1"].shape == (6, 2, 16, 24) and g["s1"].chunks == (1, 2, 16, 24)
    assert g["s1"].shards == (shard, 2, 16, 24)
    for name in (*OUTPUT_ARRAYS, "s2_truth"):
        assert g[name].shape == (6, 4, 16, 24) and g[name].dtype == np.float32
        assert g[name].chunks == (1, 4, 16, 24) and g[name].shards == (shard, 4, 16, 24)
        assert g[name].metadata.dimension_names == ("tile", "band", "y", "x")
    assert g["s1"].metadata.dimension_names == ("tile", "pol", "y", "x")
    assert g["month"].dtype == np.int8 and g["biome_code"].dtype == np.int8
    assert g["tile_row"].dtype == np.int32 and g["tile_col"].dtype == np.int32
    assert g["tracking"].shape == (store.n_shards,) and g["tracking"].chunks == (1,)
    attrs = dict(g.attrs)
    assert attrs["crs"] == "EPSG:32633" and len(attrs["transform"]) == 6
    assert attrs["tile_size"] == 16 and attrs["overlap"] == 2 and attrs["grid_shape"] == [2, 3]
    assert attrs["format_version"] == 2 and attrs["shard_tiles"] == shard
    assert np.isnan(g["opt_v2"][0]).all()  # NaN = not produced


def test_write_then_read_round_trip_and_status(store):
    data = rand(3)
    store.write("opt_v2", [4, 0, 2], data, proc_ms=[1.0, 2.0, 3.0])
    np.testing.assert_array_equal(store.read("opt_v2", [4, 0, 2]), data)
    assert store.status("opt_v2").tolist() == [1, 0, 1, 0, 1, 0]
    assert store.proc_ms("opt_v2")[[4, 0, 2]].tolist() == [1.0, 2.0, 3.0]
    assert store.counts("opt_v2").done == 3 and store.counts("opt_v2").pending == 3


def test_reopened_store_sees_everything(store):
    store.write("opt_v1", [1], rand(1))
    store.mark_failed("opt_v1", [3], "S1 has NaN values")
    reopened = TileStore.open(store.path, mode="r")
    assert reopened.n_tiles == 6 and (reopened.height, reopened.width) == (16, 24)
    assert reopened.counts("opt_v1").failures == {3: "S1 has NaN values"}
    assert reopened.indices_with_status("opt_v1", TileStatus.DONE).tolist() == [1]


def test_failed_tiles_keep_reasons_and_recover(store):
    store.mark_failed("opt_v3", [0, 5], ["NaN in s1", "all-zero s1"])
    assert store.failures("opt_v3") == {0: "NaN in s1", 5: "all-zero s1"}
    store.write("opt_v3", [0], rand(1))
    assert store.failures("opt_v3") == {5: "all-zero s1"}


def test_data_without_status_stays_pending(store):
    # What a crash between the data write and the status write leaves behind: a pending tile.
    store.write("opt_v1", [2], rand(1), mark_done=False)
    assert store.status("opt_v1")[2] == TileStatus.PENDING


@pytest.mark.parametrize("bad, message", [
    (rand(2, c=3), "needs 4 bands"),
    (rand(2, h=15), "must be 16x24"),
    (rand(2)[:, 0], "must be 4-D"),
    ((rand(2) * 10000).astype(np.uint16), "divide by 10000"),
    (rand(3), "2 tile indices but 3"),
])
def test_wrong_tiles_raise_clear_errors(store, bad, message):
    with pytest.raises(TileDataError, match=message):
        store.write("opt_v2", [0, 1], bad)
    assert store.counts("opt_v2").done == 0


def test_bad_indices_and_arrays(store):
    with pytest.raises(TileDataError, match="0..5"):
        store.read("opt_v1", [6])
    with pytest.raises(TileDataError, match="repeat"):
        store.write("opt_v1", [1, 1], rand(2))
    with pytest.raises(TileDataError, match="no array 'opt_v9'"):
        store.read("opt_v9", [0])
    with pytest.raises(TileDataError, match="not an output array"):
        store.mark_failed("s1", [0], "x")


def test_tile_metadata_is_validated(store):
    store.set_tile_meta(month=[1, 2, 3, 4, 5, 0], biome_code=[0, 1, 2, 3, 4, 15])
    assert store.tile_meta()["month"].tolist() == [1, 2, 3, 4, 5, 0]
    with pytest.raises(TileMetadataError, match="month"):
        store.set_tile_meta(month=[13, 1, 1, 1, 1, 1])
    with pytest.raises(TileMetadataError, match="biome_code"):
        store.set_tile_meta(biome_code=[99, 1, 1, 1, 1, 1])
    with pytest.raises(TileMetadataError, match="6 values"):
        store.set_tile_meta(month=[1, 2])


def test_provenance_is_readable_with_plain_zarr(store):
    store.set_provenance("opt_v2", stage="stage2", model="prithvi_eo_tiny", checkpoint="best.pt",
                         checkpoint_sha256="ab" * 32, timesteps=None, amp=False, device="cpu")
    attrs = zarr.open_group(store.path, mode="r")["opt_v2"].attrs
    for key in ("stage", "model", "checkpoint", "checkpoint_sha256", "timesteps", "amp", "device", "created",
                "axion_ray_version"):
        assert key in attrs
    assert attrs["model"] == "prithvi_eo_tiny"


def test_store_opens_with_xarray(store):
    store.write("opt_v1", [0], rand(1))
    store.set_provenance("opt_v1", stage="stage1", model="m")
    ds = xr.open_zarr(store.path)
    assert ds["opt_v1"].dims == ("tile", "band", "y", "x")
    assert ds["s1"].dims == ("tile", "pol", "y", "x")
    assert ds.sizes["tile"] == 6 and ds.attrs["crs"] == "EPSG:32633"
    assert ds["opt_v1"].attrs["stage"] == "stage1"  # consolidated metadata kept fresh
    np.testing.assert_allclose(ds["opt_v1"][0].values, store.read("opt_v1", [0])[0])
    # the tracking records are plain JSON strings, one per shard, for users' own tools
    record = json.loads(str(ds["tracking"].values[0]))
    assert ds["tracking"].dims == ("shard",) and record["outputs"]["opt_v1"]["status"][0] == "1"


def test_create_refuses_to_overwrite(store):
    with pytest.raises(StoreExistsError):
        TileStore.create(store.path, 2, 8)
    TileStore.create(store.path, 2, 8, overwrite=True)
    assert TileStore.open(store.path).n_tiles == 2


def test_read_only_store_refuses_writes(store):
    ro = TileStore.open(store.path, mode="r")
    with pytest.raises(StoreLayoutError, match="read-only"):
        ro.write("opt_v1", [0], rand(1))


def test_open_errors_name_the_problem(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no tile store"):
        TileStore.open(tmp_path / "missing.zarr")
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(StoreLayoutError, match="is a file"):
        TileStore.open(tmp_path / "file.zarr")
    v2 = zarr.open_group(tmp_path / "v2.zarr", mode="w", zarr_format=2)
    v2.create_array("a", shape=(2,), dtype="f4")
    with pytest.raises(StoreLayoutError, match="Zarr v2"):
        TileStore.open(tmp_path / "v2.zarr")
    other = zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=3)
    other.create_array("temperature", shape=(4,), dtype="f4")
    with pytest.raises(StoreLayoutError, match="not an Axion-Ray tile store"):
        TileStore.open(tmp_path / "other.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreLayoutError, match="not a Zarr v3 group"):
        TileStore.open(tmp_path / "empty")


def test_newer_format_version_is_refused(store):
    zarr.open_group(store.path, mode="r+").attrs["format_version"] = 99
    with pytest.raises(StoreLayoutError, match="upgrade"):
        TileStore.open(store.path)


def test_summary_is_json_ready(store):
    store.mark_failed("opt_v1", [1], "bad")
    summary = json.loads(json.dumps(store.summary()))
    assert summary["arrays"]["opt_v1"] == {"total": 6, "pending": 5, "done": 0, "failed": 1, "no_data": 0,
                                        "failures": {"1": "bad"}}


def test_a_damaged_store_is_one_clear_line_naming_the_array(tmp_path, capsys):
    import json as _json

    from axion_ray.cli import main

    def fresh(name):
        return TileStore.create(tmp_path / name, 3, 16).path

    path = fresh("meta.zarr")
    (tmp_path / "meta.zarr" / "opt_v2" / "zarr.json").write_text("{not json")
    assert main(["status", path]) == 2
    err = capsys.readouterr().err
    assert "opt_v2" in err and len(err.strip().splitlines()) == 1

    path = fresh("shape.zarr")
    meta_file = tmp_path / "shape.zarr" / "opt_v1" / "zarr.json"
    meta = _json.loads(meta_file.read_text())
    meta["shape"] = [3, 3, 16, 16]
    meta_file.write_text(_json.dumps(meta))
    assert main(["status", path]) == 2
    err = capsys.readouterr().err
    assert "opt_v1 has shape (3, 3, 16, 16), expected (3, 4, 16, 16)" in err

    path = fresh("status.zarr")
    TileStore.open(path).mark_failed("opt_v3", [1], "bad")
    record = tmp_path / "status.zarr" / "tracking" / "c" / "1"
    raw = record.read_bytes()
    record.write_bytes(raw.replace(b'"status":"2"', b'"status":"9"'))
    assert main(["status", path]) == 2
    assert "status of opt_v3 holds values outside" in capsys.readouterr().err

    record.write_bytes(raw[:20])  # a torn record (written by hand: our writes are atomic)
    assert main(["status", path]) == 2
    err = capsys.readouterr().err
    assert "tracking record of shard 1 (tiles 1..1) cannot be read" in err and len(err.strip().splitlines()) == 1
