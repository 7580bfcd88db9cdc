"""Tile-store I/O on its own, and the Ray object store's share of a pipeline run (docs/SCALING.md inputs).

1. Zarr write and read throughput of output tiles through `TileStore.write` (the tiles' data, then
   their shard's record), one tile per call and a 16-tile block per call, with 1 and 2 writer threads
   (each owning whole shards): to a local store, and to an `s3://`
   store on moto's S3 server on 127.0.0.1. moto is a single Python process holding objects in memory on
   the same cores as the client, so its figure bounds the client path from below; it is not S3's.
2. Peak Ray object-store memory in use during a Stage 2 run (sampled from the cluster's resources), set
   against the bytes of the tiles in flight.

    python bench/store_throughput.py [--tiles 256] [--tile-size 64] [--no-s3 | --s3-url URL] [--no-pipeline]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def write_read(location: str, n: int, tile: int, writers: int, per_call: int) -> dict[str, float]:
    from axion_ray.store import TileStore

    store = TileStore.create(location, n, tile, overwrite=True)
    data = np.random.default_rng(0).random((n, 4, tile, tile), dtype=np.float32)
    # Writers own whole shards (the store's one-writer-per-shard contract, store/shards.py).
    shards = np.arange(n) // store.shard_tiles
    chunks = [np.flatnonzero(shards % writers == k) for k in range(writers)]

    def write(idx: np.ndarray) -> None:
        # `per_call` tiles per write, as the datasink writes a block: zarr sends their chunks concurrently.
        for begin in range(0, idx.size, per_call):
            part = idx[begin:begin + per_call]
            store.write("opt_v2", part, data[part], proc_ms=1.0)

    start = time.perf_counter()
    with ThreadPoolExecutor(writers) as pool:
        list(pool.map(write, chunks))
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    back = TileStore.open(location, mode="r").read("opt_v2", np.arange(n))
    read_s = time.perf_counter() - start
    assert np.array_equal(back, data), "read back differs from what was written"
    mb = data.nbytes / 1e6
    return {"tiles_per_s_write": n / write_s, "mb_per_s_write": mb / write_s,
            "tiles_per_s_read": n / read_s, "mb_per_s_read": mb / read_s}


def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}"})
    import s3fs

    s3fs.S3FileSystem().mkdir("bench")
    return server


def object_store_peak(n: int, tile: int, work: Path) -> dict[str, float]:
    import ray
    from pipeline_vs_loop import make_checkpoint, make_store

    from axion_ray.config import InferConfig
    from axion_ray.pipeline import run_pipeline

    store = make_store(work / "pipe.zarr", n, tile)
    ckpt = make_checkpoint(work / "stage2.pt")
    ray.init(address="local", logging_level="ERROR", include_dashboard=False)
    total = ray.cluster_resources()["object_store_memory"]
    peak, stop = [0.0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            used = total - ray.available_resources().get("object_store_memory", total)
            peak[0] = max(peak[0], used)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    summary = run_pipeline(store.path, InferConfig(stages=(2,), stage2_checkpoint=str(ckpt), batch_size=8),
                           say=lambda _: None)
    stop.set()
    sampler.join()
    ray.shutdown()
    # A block in flight carries each tile's inputs (s1, opt_v1) and its output (opt_v2) as float32.
    per_tile = (2 + 4 + 4) * 4 * tile * tile
    return {"object_store_total_mb": total / 1e6, "peak_used_mb": peak[0] / 1e6, "bytes_per_tile": per_tile,
            "peak_tiles_equivalent": peak[0] / per_tile, "tiles_per_s": summary.steady_tiles_per_s or 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=256)
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--no-s3", action="store_true")
    parser.add_argument("--s3-url", help="a real bucket to measure (credentials from AWS_*), instead of moto")
    parser.add_argument("--no-pipeline", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="axion-io-"))
    mb_tile = 4 * 4 * args.tile_size ** 2 / 1e6
    print(f"{args.tiles} tiles of {args.tile_size} px, {mb_tile:.3f} MB per opt_v* tile (float32)")
    targets = [("local", str(work / "io.zarr"))]
    server = None
    if args.s3_url:
        targets.append(("s3", args.s3_url))
    elif not args.no_s3:
        server = moto_server()
        targets.append(("s3 (moto, loopback)", "s3://bench/io.zarr"))
    print("| store | writers | tiles per write | write tiles/s | write MB/s | read tiles/s | read MB/s |")
    print("|---|---|---|---|---|---|---|")
    try:
        for name, location in targets:
            for writers, per_call in ((1, 1), (2, 1), (1, 16), (2, 16)):
                r = write_read(location, args.tiles, args.tile_size, writers, per_call)
                print(f"| {name} | {writers} | {per_call} | {r['tiles_per_s_write']:.0f} | {r['mb_per_s_write']:.1f} | "
                      f"{r['tiles_per_s_read']:.0f} | {r['mb_per_s_read']:.1f} |", flush=True)
    finally:
        if server is not None:
            server.stop()
    if not args.no_pipeline:
        r = object_store_peak(args.tiles, args.tile_size, work)
        print(f"\nRay object store during a Stage 2 run ({args.tiles} tiles, {r['tiles_per_s']:.1f} tiles/s steady): "
              f"peak {r['peak_used_mb']:.1f} MB in use of {r['object_store_total_mb']:.0f} MB "
              f"(= {r['peak_tiles_equivalent']:.0f} tiles in flight at {r['bytes_per_tile'] / 1e3:.0f} KB each)")


if __name__ == "__main__":
    main()
