import json

import numpy as np
import pytest

from axion_ray.errors import NpzFormatError, StoreExistsError, TileMetadataError
from axion_ray.store import TileStore
from axion_ray.store.npz import export_npz_dir, import_npz_dir, parse_biome, parse_month


def write_tile(directory, name, sidecar=None, **arrays):
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / f"{name}.npz", **arrays)
    if sidecar is not None:
        (directory / f"{name}.json").write_text(json.dumps(sidecar))


def opt(seed, h=12, w=12):
    return np.random.default_rng(seed).random((4, h, w), dtype=np.float32)


@pytest.mark.parametrize("value, month", [(6, 6), ("jun", 6), ("June", 6), ("JUNE", 6), ("06", 6), (12, 12),
                                          ("sept", 9), ("sep", 9), (0, 0), (3.0, 3)])
def test_parse_month_accepts_numbers_and_names(value, month):
    assert parse_month(value) == month


@pytest.mark.parametrize("value", ["foo", 13, -1, "ju", True, None, 6.5, "13"])
def test_parse_month_rejects_the_rest(value):
    with pytest.raises(TileMetadataError, match="month"):
        parse_month(value, "tile.json")


def test_parse_biome():
    assert parse_biome(0) == 0 and parse_biome("15") == 15
    for bad in (99, 16, -1, "x", 2.5):
        with pytest.raises(TileMetadataError, match="biome_code"):
            parse_biome(bad)


def test_round_trip_preserves_data_month_biome_and_unknown_keys(tmp_path):
    src = tmp_path / "in"
    write_tile(src, "tile_0001", {"month": "jun", "biome_code": 3, "tile_id": "tile_0001", "site": "iowa",
                                  "nested": {"a": [1, 2]}}, opt_v1=opt(1))
    write_tile(src, "tile_0002", {"month": 11, "biome_code": 0, "tile_id": "tile_0002"}, opt_v1=opt(2))
    report = import_npz_dir(src, tmp_path / "s.zarr")
    store = report.store
    assert report.n_tiles == 2 and report.arrays == ["opt_v1"] and report.warnings == []
    assert store.tile_meta()["month"].tolist() == [6, 11]
    assert store.tile_meta()["tile_id"].tolist() == ["tile_0001", "tile_0002"]
    assert store.counts("opt_v1").done == 2 and store.counts("opt_v2").pending == 2

    out = export_npz_dir(TileStore.open(store.path, mode="r"), tmp_path / "out", "opt_v1")
    assert out.written == 2
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "tile_0001.npz")["opt_v1"], opt(1))
    sidecar = json.loads((tmp_path / "out" / "tile_0001.json").read_text())
    assert sidecar["month"] == 6 and sidecar["biome_code"] == 3 and sidecar["tile_id"] == "tile_0001"
    assert sidecar["site"] == "iowa" and sidecar["nested"] == {"a": [1, 2]}
    assert sidecar["stage"] == "stage1_generated"
    assert set(sidecar["processing"]) == {"input_file", "checkpoint", "device", "use_amp", "processing_time_ms"}
    assert sidecar["processing"]["input_file"].endswith("tile_0001.npz")


def test_missing_sidecar_uses_defaults_with_a_warning(tmp_path):
    write_tile(tmp_path / "in", "a", None, opt_v1=opt(0))
    report = import_npz_dir(tmp_path / "in", tmp_path / "s.zarr")
    assert report.store.tile_meta()["month"].tolist() == [6]
    assert report.store.tile_meta()["biome_code"].tolist() == [0]
    assert len(report.warnings) == 1 and "no sidecar" in report.warnings[0]


def test_s1_as_one_array_or_two_polarisations(tmp_path):
    vv, vh = np.full((8, 8), -10.0, np.float32), np.full((8, 8), -17.0, np.float32)
    write_tile(tmp_path / "in", "t1", {"month": 5}, s1_vv=vv, s1_vh=vh)
    write_tile(tmp_path / "in", "t2", {"month": 5}, s1=np.stack([vv, vh]))
    store = import_npz_dir(tmp_path / "in", tmp_path / "s.zarr").store
    s1 = store.read("s1", [0, 1])
    assert s1[:, 0].mean() == -10.0 and s1[:, 1].mean() == -17.0
    assert store.counts("opt_v1").pending == 2  # Stage 1 still to run


def test_export_skips_tiles_not_produced(tmp_path, small_aoi):
    store = TileStore.create(tmp_path / "s.zarr", 3, 8)
    store.write("opt_v2", [1], np.zeros((1, 4, 8, 8), np.float32))
    store.mark_failed("opt_v2", [2], "bad")
    report = export_npz_dir(store, tmp_path / "out", "opt_v2")
    assert report.written == 1 and report.skipped == {"pending": 1, "failed": 1}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tile_0001.json", "tile_0001.npz"]


@pytest.mark.parametrize("make, message", [
    (lambda d: (d / "tile_0001.npz").write_bytes(b"not a zip"), "not a readable .npz"),
    (lambda d: write_tile(d, "t", {"month": "foo"}, opt_v1=opt(0)), "month 'foo'"),
    (lambda d: write_tile(d, "t", {"biome_code": 99}, opt_v1=opt(0)), "biome_code 99"),
    (lambda d: write_tile(d, "t", {}, opt_v1=opt(0)[:3]), r"must be \(4, H, W\)"),
    (lambda d: write_tile(d, "t", {}, opt_v1=np.full((4, 8, 8), np.nan, np.float32)), "NaN/Inf"),
    (lambda d: write_tile(d, "t", {}, image=opt(0)), "holds none of the keys"),
    (lambda d: write_tile(d, "t", {}, opt_v1=(opt(0) * 10000).astype(np.uint16)), "float array"),
    (lambda d: (write_tile(d, "a", {}, opt_v1=opt(0)), write_tile(d, "b", {}, opt_v1=opt(1, h=16))), "differ in size"),
    (lambda d: (write_tile(d, "t", None, opt_v1=opt(0)), (d / "t.json").write_text("{oops")), "not valid JSON"),
    (lambda d: d.mkdir(), "No NPZ tiles found"),
])
def test_bad_directories_fail_clearly_and_write_nothing(tmp_path, make, message):
    src = tmp_path / "in"
    src.mkdir() if "No NPZ" not in message else None
    make(src)
    with pytest.raises((NpzFormatError, TileMetadataError), match=message):
        import_npz_dir(src, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_import_refuses_existing_store(tmp_path):
    write_tile(tmp_path / "in", "t", {}, opt_v1=opt(0))
    import_npz_dir(tmp_path / "in", tmp_path / "s.zarr")
    with pytest.raises(StoreExistsError):
        import_npz_dir(tmp_path / "in", tmp_path / "s.zarr")


def test_no_data_pixels_survive_import_and_export_and_mostly_empty_tiles_are_no_data(tmp_path):
    from axion_ray.store import TileStatus

    s1 = np.random.default_rng(0).normal(-14, 3, (3, 2, 12, 12)).astype(np.float32)
    s1[0, :, :, :3] = np.nan      # a quarter no-data: kept, runs
    s1[1, :, :9] = np.nan         # three quarters no-data: under min_valid
    for i in range(3):
        write_tile(tmp_path / "in", f"t{i}", {"month": 5}, s1=s1[i], opt_v1=np.where(np.isnan(s1[i, :1]), np.nan, opt(i)))
    store = import_npz_dir(tmp_path / "in", tmp_path / "s.zarr").store
    np.testing.assert_array_equal(np.isnan(store.read("s1", [0])), np.isnan(s1[:1]))
    np.testing.assert_allclose(store.valid_fractions(), [0.75, 0.25, 1.0])
    assert store.indices_with_status("opt_v2", TileStatus.NO_DATA).tolist() == [1]
    assert store.status("opt_v1").tolist() == [TileStatus.DONE] * 3  # outputs the directory holds stay done
    export_npz_dir(store, tmp_path / "out", "opt_v1")
    with np.load(tmp_path / "out" / "t0.npz") as npz:
        assert np.isnan(npz["opt_v1"][:, :, :3]).all() and np.isfinite(npz["opt_v1"][:, :, 3:]).all()


def test_a_large_directory_imports_batch_by_batch_into_whole_shards(tmp_path):
    """Pass 2 holds a few tiles at a time; the store is the same as one written in one go."""
    rng = np.random.default_rng(5)
    for i in range(130):
        arrays = {"s1": rng.normal(-12, 3, (2, 8, 8)).astype(np.float32)}
        if i % 3:
            arrays["opt_v1"] = rng.random((4, 8, 8), dtype=np.float32)
        write_tile(tmp_path / "tiles", f"t{i:03d}", {"month": i % 12 + 1, "biome_code": i % 7}, **arrays)
    small = import_npz_dir(tmp_path / "tiles", tmp_path / "small.zarr", batch_tiles=5).store
    whole = import_npz_dir(tmp_path / "tiles", tmp_path / "whole.zarr", batch_tiles=10_000).store
    assert small.shard_tiles == 2
    everything = np.arange(130)
    for name in ("s1", "opt_v1"):
        np.testing.assert_array_equal(small.read(name, everything), whole.read(name, everything))
    assert small.status("opt_v1").tolist() == whole.status("opt_v1").tolist()
    assert small.counts("opt_v1").done == sum(1 for i in range(130) if i % 3)
    assert small.tile_meta()["month"].tolist() == [i % 12 + 1 for i in range(130)]
