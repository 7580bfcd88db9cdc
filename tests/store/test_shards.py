"""The sharded layout (format 2): shard sizing, shard-whole read tasks, records, migration of format 1."""

import numpy as np
import pytest

from axion_ray.errors import OutputPathError, StoreLayoutError
from axion_ray.store import TileStatus, TileStore
from axion_ray.store.migrate import migrate_store
from axion_ray.store.shards import choose_shard_tiles, dense_spans, pack_shards
from tests.store.damage import damage_inner_chunk
from tests.store.format1 import write_format1_store


def test_shard_size_follows_bytes_and_count():
    assert choose_shard_tiles(1 << 20, 64, 64) == 128            # 8 MiB of 4-band float32 64 px tiles
    assert choose_shard_tiles(1 << 20, 224, 224) == 8
    assert choose_shard_tiles(4096, 64, 64) == 64                 # at least 64 shards
    assert choose_shard_tiles(10, 64, 64) == 1
    assert choose_shard_tiles(10, 4096, 4096) == 1                # a tile bigger than a shard: one per shard


def test_read_tasks_never_split_a_shard():
    # What a partial run leaves pending: scattered tiles; tasks must hold whole shards regardless.
    rng = np.random.default_rng(0)
    tiles = np.sort(rng.choice(1000, 300, replace=False))
    groups = pack_shards(tiles, 32, 16)
    assert np.array_equal(np.concatenate(groups), tiles)
    shard_sets = [set((g // 32).tolist()) for g in groups]
    for a in range(len(shard_sets)):
        for b in range(a + 1, len(shard_sets)):
            assert not shard_sets[a] & shard_sets[b]
    assert all(g.size >= 16 for g in groups[:-1])


def test_dense_shards_read_as_regions_and_scattered_tiles_by_index():
    # shard 0 whole, shard 1 whole (merges with 0), shard 2 a third full (scattered), shard 4 half full
    tiles = np.concatenate([np.arange(0, 32), np.arange(32, 64), [70, 80, 90], np.arange(128, 144)])
    spans, rest = dense_spans(tiles, 32)
    assert spans == [(0, 64, 0, 64), (128, 144, 67, 83)]
    assert rest.tolist() == [64, 65, 66]


def test_any_selection_reads_the_same_tiles_as_zarrs_integer_selection(tmp_path):
    store = TileStore.create(tmp_path / "s.zarr", 200, 8, shard_tiles=16)
    data = np.random.default_rng(3).random((200, 4, 8, 8), dtype=np.float32)
    store.write("opt_v1", np.arange(200), data, proc_ms=1)
    rng = np.random.default_rng(4)
    for idx in (np.arange(16, 48), rng.permutation(200), rng.choice(200, 30, replace=False), np.array([199, 0, 17, 18, 19]),
                np.arange(200)[::-7]):
        np.testing.assert_array_equal(store.read("opt_v1", idx), data[idx])


def test_a_damaged_tile_fails_only_the_reads_that_ask_for_it(tmp_path):
    store = TileStore.create(tmp_path / "s.zarr", 8, 8, shard_tiles=4)
    data = np.random.default_rng(5).random((8, 4, 8, 8), dtype=np.float32)
    store.write("opt_v1", np.arange(8), data, proc_ms=1)
    damage_inner_chunk(store, "opt_v1", 1)
    # tiles 0, 2, 3 fill shard 0's range 0..3 densely: a region read would decode tile 1 too
    np.testing.assert_array_equal(store.read("opt_v1", [3, 0, 2, 5]), data[[3, 0, 2, 5]])
    with pytest.raises(StoreLayoutError, match="opt_v1 .*cannot be read"):
        store.read("opt_v1", [0, 1, 2, 3])


def test_partial_shard_writes_keep_the_shards_other_tiles(tmp_path):
    store = TileStore.create(tmp_path / "s.zarr", 64, 16, shard_tiles=16)
    first = np.random.default_rng(1).random((3, 4, 16, 16), dtype=np.float32)
    store.write("opt_v1", [1, 5, 9], first, proc_ms=[1, 2, 3])
    second = np.random.default_rng(2).random((2, 4, 16, 16), dtype=np.float32)
    store.write("opt_v1", [7, 3], second, proc_ms=4)          # same shard, out of order, not contiguous
    got = store.read("opt_v1", [1, 5, 9, 7, 3])
    np.testing.assert_array_equal(got, np.concatenate([first, second]))
    assert np.isnan(store.read("opt_v1", [0, 2, 4, 6, 8])).all()
    assert store.indices_with_status("opt_v1", TileStatus.DONE).tolist() == [1, 3, 5, 7, 9]
    assert store.proc_ms("opt_v1")[[1, 3, 5, 7, 9]].tolist() == [1, 4, 2, 4, 3]
    # one shard file per array, one record per shard written
    assert sorted(p.name for p in (tmp_path / "s.zarr" / "opt_v1" / "c").iterdir()) == ["0"]
    assert sorted(p.name for p in (tmp_path / "s.zarr" / "tracking" / "c").iterdir()) == ["0"]


def test_creating_a_million_tile_store_writes_no_per_tile_data(tmp_path):
    store = TileStore.create(tmp_path / "big.zarr", 1 << 20, 64)
    files = [p for p in (tmp_path / "big.zarr").rglob("*") if p.is_file()]
    assert all(p.name == "zarr.json" for p in files) and len(files) < 30
    assert store.counts("opt_v1").pending == 1 << 20
    assert store.tile_meta([0, (1 << 20) - 1])["tile_id"].tolist() == ["tile_0000000", "tile_1048575"]


def test_a_format1_store_asks_for_migrate_and_migrates_in_place(tmp_path, capsys):
    from axion_ray.cli import main

    path = tmp_path / "old.zarr"
    written = write_format1_store(path)
    assert main(["status", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"axion-ray migrate {path}" in err

    assert main(["migrate", str(path)]) == 0
    assert (tmp_path / "old.zarr.format1" / "status" / "opt_v1").is_dir()    # the old store is kept
    store = TileStore.open(path)
    np.testing.assert_array_equal(store.read("s1", np.arange(10)), written["data"]["s1"])
    np.testing.assert_array_equal(store.read("s2_truth", np.arange(10)), written["data"]["s2_truth"])
    np.testing.assert_array_equal(store.read("opt_v1", np.arange(4)), written["data"]["opt_v1"])
    assert store.status("opt_v1").tolist() == [1, 1, 1, 1, 0, 2, 0, 0, 0, 3]
    assert store.status("opt_v3").tolist() == [0] * 9 + [3]
    assert store.failures("opt_v1") == {5: "s1 has 3 infinite values"}
    assert store.proc_ms("opt_v1")[:4].tolist() == [1.5, 2.5, 3.5, 4.5]
    meta = store.tile_meta()
    assert meta["tile_id"].tolist() == written["meta"]["tile_id"].tolist()
    assert meta["month"].tolist() == written["meta"]["month"].tolist()
    assert store.provenance("opt_v1")["model"] == "old-model" and store.min_valid == 0.6
    assert store.crs == "EPSG:32633" and store.grid_shape == (2, 5)
    assert store.sidecar_sources()[3] == "t3.npz"

    assert main(["migrate", str(path)]) == 2                                  # already format 2
    assert "nothing to migrate" in capsys.readouterr().err


def test_migrate_to_a_new_place_leaves_the_old_store_alone(tmp_path):
    path = tmp_path / "old.zarr"
    write_format1_store(path)
    before = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    out = migrate_store(path, tmp_path / "new.zarr", say=lambda _: None)
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*")) == before
    assert TileStore.open(out).counts("opt_v1").done == 4
    with pytest.raises(OutputPathError, match="already exists"):
        migrate_store(path, tmp_path / "new.zarr", say=lambda _: None)
    with pytest.raises(StoreLayoutError, match="not a format-1"):
        migrate_store(out.replace("new.zarr", "new.zarr/opt_v1"), tmp_path / "x.zarr", say=lambda _: None)
