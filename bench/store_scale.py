"""The sharded tile store at AOI scale (issue 18): what grows with the tile count, and the write path.

In one run:
1. At 4,096 / 65,536 / 1,048,576 tiles of 64 px: store creation; `status` through the API
   (`TileStore.summary`) and as a user runs it (`axion-ray status`, a fresh process); resume planning
   for stages 1,2,3 (`plan_tiles` + the shard-whole read tasks) — on a store where every other shard
   is done for all three outputs, so half the tiles are to plan; and one read task's metadata read.
2. The store's write path as the datasink uses it (`TileStore.commit` of one read task's block: data,
   then the shard's record) against a plain sharded Zarr v3 write of the same bytes (zarr's default
   codecs, one shard per write) and `np.save` + fsync per tile — 64 px, 4-band float32 tiles, one writer.
   And the read path as a read task uses it (`TileStore.read` of one shard) against zarr's integer
   selection of the same tiles.
3. Files (local) and objects (moto S3 on 127.0.0.1) per 1,000 tiles written to one output array.

    python bench/store_scale.py [--sizes 4096,65536,1048576] [--write-tiles 4096] [--no-s3]

The last line: `store_scale create_1m_s=… status_1m_s=… plan_1m_s=… write_tiles_s=… write_vs_sharded=…
s3_objects_per_1000_tiles=…`.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TILE = 64


def tiles_like_imagery(n: int, seed: int = 0) -> np.ndarray:
    """Smooth fields plus a little noise and a NaN edge: compresses like reflectance, not like noise."""
    rng = np.random.default_rng(seed)
    base = rng.random((n, 4, 8, 8)).astype(np.float32) * 0.3
    data = np.kron(base, np.ones((1, 1, 8, 8), np.float32)) + 0.01 * rng.random((n, 4, TILE, TILE), dtype=np.float32)
    data[: n // 8, :, :6] = np.nan
    return data


def half_done(store) -> None:
    """Every other shard done for all three outputs: records only (status and planning read no data)."""
    from axion_ray.store.shards import ShardRecord
    from axion_ray.store.tile_store import OUTPUT_ARRAYS

    for shard in range(0, store.n_shards, 2):
        record = ShardRecord(store._shard_size(shard))
        for name in OUTPUT_ARRAYS:
            status, ms, _ = record.output(name)
            status[:] = 1
            ms[:] = 3.0
        store._write_record(shard, record)


def scale_row(n: int, work: Path) -> dict[str, float]:
    from axion_ray.distributed._datasource import TileStoreDatasource
    from axion_ray.pipeline.plan import plan_tiles
    from axion_ray.store import TileStore

    path = work / f"scale_{n}.zarr"
    start = time.perf_counter()
    store = TileStore.create(path, n, TILE)
    create_s = time.perf_counter() - start
    half_done(store)
    store = TileStore.open(path, mode="r")
    start = time.perf_counter()
    summary = store.summary()
    status_s = time.perf_counter() - start
    assert summary["arrays"]["opt_v1"]["done"] + summary["arrays"]["opt_v1"]["pending"] == n
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "axion_ray.cli", "status", str(path)], capture_output=True,
                          text=True, check=True)
    cli_s = time.perf_counter() - start
    assert "opt_v1" in done.stdout
    start = time.perf_counter()
    opened = TileStore.open(path, mode="r")
    tiles, todo, _ = plan_tiles(opened, (1, 2, 3), True)
    source = TileStoreDatasource(opened.path, tiles, ["s1"], (TILE, TILE), flags={"run_1": todo[:, 0]},
                                 shard_tiles=opened.shard_tiles)
    tasks = source.task_positions()
    plan_s = time.perf_counter() - start
    first = tiles[tasks[len(tasks) // 2]]
    start = time.perf_counter()
    opened.tile_meta(first)
    meta_ms = 1000 * (time.perf_counter() - start)
    files = sum(1 for _ in path.rglob("*") if _.is_file())
    shutil.rmtree(path)
    return {"n": n, "create_s": create_s, "status_s": status_s, "cli_status_s": cli_s, "plan_s": plan_s,
            "planned_tiles": int(tiles.size), "tasks": len(tasks), "task_meta_ms": meta_ms,
            "shards": store.n_shards, "shard_tiles": store.shard_tiles, "files": files}


def write_paths(n: int, work: Path) -> dict[str, float]:
    import zarr

    from axion_ray.store import TileStore
    from axion_ray.store.shards import choose_shard_tiles
    from axion_ray.store.tile_store import OutputResult

    data = tiles_like_imagery(n)
    # A store of the shard size a big AOI gets (128 tiles of 64 px = 8 MiB), written block by block as
    # the sink receives them: one read task = one shard.
    store = TileStore.create(work / "w.zarr", 4 * n, TILE, shard_tiles=choose_shard_tiles(1 << 20, TILE, TILE))
    shard = store.shard_tiles
    start = time.perf_counter()
    for lo in range(0, n, shard):
        idx = np.arange(lo, min(n, lo + shard))
        store.commit([OutputResult("opt_v1", done=idx, data=data[idx], proc_ms=np.full(idx.size, 2.0, np.float32))])
    ours = n / (time.perf_counter() - start)
    assert np.array_equal(store.read("opt_v1", np.arange(0, n, 97)), data[::97], equal_nan=True)
    files = sum(1 for d in ("opt_v1", "tracking") for p in (work / "w.zarr" / d).rglob("*")
                if p.is_file() and p.name != "zarr.json")

    plain = zarr.open_group(str(work / "plain.zarr"), mode="w", zarr_format=3).create_array(
        "a", shape=(4 * n, 4, TILE, TILE), chunks=(1, 4, TILE, TILE), shards=(shard, 4, TILE, TILE),
        dtype="float32", fill_value=np.nan)
    start = time.perf_counter()
    for lo in range(0, n, shard):
        plain[lo:lo + shard] = data[lo:lo + shard]
    sharded = n / (time.perf_counter() - start)
    # The same with zarr told to encode a shard's inner chunks in one batch, as the store does.
    with zarr.config.set({"codec_pipeline.batch_size": shard}):
        start = time.perf_counter()
        for lo in range(0, n, shard):
            plain[lo:lo + shard] = data[lo:lo + shard]
        sharded_batched = n / (time.perf_counter() - start)

    # Reads as a read task makes them (one shard per call): the store's path, and zarr's integer
    # selection of the same tiles (the store's path before it read dense shards as regions).
    start = time.perf_counter()
    for lo in range(0, n, shard):
        store.read("opt_v1", np.arange(lo, min(n, lo + shard)))
    read_ours = n / (time.perf_counter() - start)
    array = store.group["opt_v1"]
    with zarr.config.set({"codec_pipeline.batch_size": shard}):
        start = time.perf_counter()
        for lo in range(0, n, shard):
            array.get_orthogonal_selection((np.arange(lo, min(n, lo + shard)),))
        read_integer = n / (time.perf_counter() - start)

    npy = work / "npy"
    npy.mkdir()
    start = time.perf_counter()
    for i in range(n):
        with open(npy / f"{i}.npy", "wb") as handle:
            np.save(handle, data[i])
            handle.flush()
            os.fsync(handle.fileno())
    np_save = n / (time.perf_counter() - start)
    return {"ours": ours, "sharded": sharded, "sharded_batched": sharded_batched, "np_save": np_save,
            "read_ours": read_ours, "read_integer": read_integer,
            "files_per_1000": 1000 * files / n,
            "shard_tiles": shard}


def s3_objects(n: int) -> dict[str, float]:
    from moto.server import ThreadedMotoServer

    from axion_ray.store import TileStore
    from axion_ray.store.shards import choose_shard_tiles
    from axion_ray.store.tile_store import OutputResult

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's per-request log lines
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"})
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")
        # the shard size a 10⁶-tile AOI of 64-px tiles gets
        store = TileStore.create("s3://bench/scale.zarr", 4 * n, TILE, shard_tiles=choose_shard_tiles(1 << 20, TILE, TILE))
        data = tiles_like_imagery(n, seed=1)
        shard = store.shard_tiles
        start = time.perf_counter()
        for lo in range(0, n, shard):
            idx = np.arange(lo, min(n, lo + shard))
            store.commit([OutputResult("opt_v1", done=idx, data=data[idx], proc_ms=np.ones(idx.size, np.float32))])
        rate = n / (time.perf_counter() - start)
        start = time.perf_counter()
        counts = TileStore.open("s3://bench/scale.zarr", mode="r").counts("opt_v1")
        status_s = time.perf_counter() - start
        assert counts.done == n
        objects = [p for d in ("opt_v1", "tracking") for p in fs.find(f"bench/scale.zarr/{d}")
                   if not p.endswith("zarr.json")]
        return {"objects_per_1000": 1000 * len(objects) / n, "write_tiles_s": rate, "status_s": status_s,
                **fsspec_vs_obstore(data, shard, f"http://{host}:{port}")}
    finally:
        server.stop()


def fsspec_vs_obstore(data: np.ndarray, shard: int, endpoint: str) -> dict[str, float]:
    """The same plain sharded write and read-back through zarr's FsspecStore and its ObjectStore
    (obstore, when installed) against the same S3 endpoint."""
    import importlib.util

    import zarr

    stores = {"fsspec": zarr.storage.FsspecStore.from_url("s3://bench/fs.zarr")}
    if importlib.util.find_spec("obstore"):
        from obstore.store import S3Store

        stores["obstore"] = zarr.storage.ObjectStore(S3Store(
            "bench", prefix="ob.zarr", endpoint=endpoint, region="us-east-1", access_key_id="bench",
            secret_access_key="bench", client_options={"allow_http": True}))
    out = {}
    n = data.shape[0]
    for name, store in stores.items():
        array = zarr.create_array(store, shape=data.shape, chunks=(1, *data.shape[1:]), shards=(shard, *data.shape[1:]),
                                  dtype="float32", fill_value=np.nan)
        start = time.perf_counter()
        for lo in range(0, n, shard):
            array[lo:lo + shard] = data[lo:lo + shard]
        out[f"{name}_write_tiles_s"] = n / (time.perf_counter() - start)
        start = time.perf_counter()
        back = array[:]
        out[f"{name}_read_tiles_s"] = n / (time.perf_counter() - start)
        assert np.array_equal(back, data, equal_nan=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="4096,65536,1048576")
    parser.add_argument("--write-tiles", type=int, default=4096)
    parser.add_argument("--no-s3", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="axion-scale-"))
    try:
        print("| tiles | shards × tiles | create s | status (API) s | `axion-ray status` s | plan 1,2,3 s "
              "(tiles, tasks) | one task's metadata ms | files |")
        print("|---|---|---|---|---|---|---|---|")
        rows = {}
        for n in (int(v) for v in args.sizes.split(",")):
            r = rows[n] = scale_row(n, work)
            print(f"| {n:,} | {r['shards']:,} × {r['shard_tiles']} | {r['create_s']:.2f} | {r['status_s']:.2f} | "
                  f"{r['cli_status_s']:.2f} | {r['plan_s']:.2f} ({r['planned_tiles']:,}, {r['tasks']:,}) | "
                  f"{r['task_meta_ms']:.1f} | {r['files']:,} |", flush=True)
        w = write_paths(args.write_tiles, work)
        mb = 4 * 4 * TILE * TILE / 1e6
        print(f"\nwrite path, {args.write_tiles} tiles of {TILE} px (4 bands float32), one writer, shards of "
              f"{w['shard_tiles']} tiles:")
        print("| path | tiles/s | MB/s |")
        print("|---|---|---|")
        for name, key in (("store (`TileStore.commit`, as the sink)", "ours"),
                          ("plain sharded Zarr v3 (default codecs and config)", "sharded"),
                          ("plain sharded Zarr v3, codec_pipeline.batch_size = shard", "sharded_batched"),
                          ("np.save + fsync per tile", "np_save")):
            print(f"| {name} | {w[key]:.0f} | {w[key] * mb:.0f} |")
        print(f"files per 1,000 tiles (opt_v1 shards + tracking records): {w['files_per_1000']:.1f}")
        print(f"read path, one shard per call: store (`TileStore.read`) {w['read_ours']:.0f} tiles/s, zarr's integer "
              f"selection of the same tiles {w['read_integer']:.0f} tiles/s ({w['read_ours'] / w['read_integer']:.1f}x)")
        s3 = {"objects_per_1000": float("nan")}
        if not args.no_s3:
            s3 = s3_objects(min(args.write_tiles, 1024))
            print(f"S3 (moto, loopback): {s3['objects_per_1000']:.1f} objects per 1,000 tiles, "
                  f"{s3['write_tiles_s']:.0f} tiles/s written, counts read in {s3['status_s']:.2f} s")
            for name in ("fsspec", "obstore"):
                if f"{name}_write_tiles_s" in s3:
                    print(f"  plain sharded zarr through {name}: write {s3[f'{name}_write_tiles_s']:.0f} tiles/s, "
                          f"read {s3[f'{name}_read_tiles_s']:.0f} tiles/s")
        big = rows.get(max(rows))
        print(f"store_scale create_1m_s={big['create_s']:.2f} status_1m_s={big['status_s']:.2f} "
              f"plan_1m_s={big['plan_s']:.2f} write_tiles_s={w['ours']:.0f} write_vs_sharded={w['ours'] / w['sharded']:.2f} "
              f"s3_objects_per_1000_tiles={s3['objects_per_1000']:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
