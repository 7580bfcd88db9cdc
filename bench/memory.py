"""Peak memory of a pipeline run over N tiles vs 8N tiles: streaming means it should barely grow.

Samples the resident memory of this driver and every process of its local Ray (raylet, workers,
actors, object store) every 0.2 s during each run; prints both peaks and their ratio (goal <= 1.2).

    python bench/memory.py [--tiles N] [--tile-size 64]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil


def tree_rss() -> int:
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total


def peak_during(fn) -> tuple[int, float]:
    peak, stop = [0], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], tree_rss())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    stop.set()
    sampler.join()
    return peak[0], elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=256)
    parser.add_argument("--tile-size", type=int, default=64)
    args = parser.parse_args()

    import ray

    from axion_ray.config import InferConfig, SynthConfig
    from axion_ray.pipeline import run_pipeline
    from axion_ray.store.synth import synthesize_aoi

    work = Path(tempfile.mkdtemp(prefix="axion-mem-"))
    try:
        ray.init(address="local", include_dashboard=False, logging_level="ERROR")
        cfg = InferConfig(stages=(2,), allow_random_init=True, batch_size=16, tiles_per_read_task=16,
                          progress_interval_s=1.0)
        results = []
        for n in (args.tiles, 8 * args.tiles):
            side = int(round(n ** 0.5))
            store = synthesize_aoi(work / f"{n}.zarr", SynthConfig(rows=side, cols=side, tile_size=args.tile_size))
            peak, elapsed = peak_during(lambda path=store.path: run_pipeline(path, cfg, say=lambda _: None))
            data_mb = store.n_tiles * 8 * args.tile_size ** 2 * 4 / 2 ** 20
            results.append(peak)
            print(f"{store.n_tiles:6d} tiles ({data_mb:7.1f} MiB of opt_v1 + opt_v2): peak RSS {peak / 2**30:.2f} GiB, "
                  f"{elapsed:.1f} s")
        ray.shutdown()
        print(f"peak memory ratio (8x tiles / 1x): {results[1] / results[0]:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
