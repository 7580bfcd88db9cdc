"""Ingest at scale: peak memory for a scene and one 4x larger (streaming: the ratio should stay <= 1.2),
and the ingest rate beside a bare rasterio read of the same file, in one run.

Each ingest runs in a fresh process whose resident memory is sampled every 50 ms; the bare read reads
the same GeoTIFF strip by strip with rasterio. Scenes are S1-like (linear power, nodata 0, a no-data
wedge), written here. A third case ingests the large scene reprojected (to EPSG:4326 and back onto a
UTM grid) to show what GDAL's warping costs.

    python bench/ingest_scale.py [--side 2048] [--tile-size 256] [--overlap 32]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil


def write_scene(path: Path, side: int, crs: str = "EPSG:32633") -> Path:
    import rasterio
    from affine import Affine

    rng = np.random.default_rng(side)
    profile = {"driver": "GTiff", "width": side, "height": side, "count": 2, "dtype": "float32", "crs": crs,
               "transform": Affine(10, 0, 500000, 0, -10, 5200000), "nodata": 0.0, "tiled": True,
               "blockxsize": 256, "blockysize": 256, "compress": "deflate"}
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, side, 256):
            h = min(256, side - y0)
            yy, xx = np.mgrid[y0:y0 + h, 0:side]
            block = rng.gamma(4.0, 0.05 / 4.0, (2, h, side)).astype(np.float32)
            block[:, (xx / side + yy / side) < 0.47] = 0.0  # the GRD wedge, ~11 %
            dst.write(block, window=rasterio.windows.Window(0, y0, side, h))
    return path


def _ingest(scene: str, out: str, tile: int, overlap: int, crs: str | None, queue) -> None:
    from axion_ray.store.ingest import ingest_scenes
    from axion_ray.store.scenes import scene_from_geotiff

    start = time.perf_counter()
    store = ingest_scenes([scene_from_geotiff(scene)], out, tile_size=tile, overlap=overlap, crs=crs,
                          resolution=10.0 if crs else None)
    queue.put((time.perf_counter() - start, store.n_tiles))


def ingest_measured(scene: Path, out: Path, tile: int, overlap: int, crs: str | None = None) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_ingest, args=(str(scene), str(out), tile, overlap, crs, queue))
    proc.start()
    ps, peak = psutil.Process(proc.pid), 0
    while proc.is_alive():
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    proc.join()
    elapsed, tiles = queue.get(timeout=10)
    mb = scene.stat().st_size / 2**20
    raw_mb = 2 * 4 * _side(scene) ** 2 / 2**20
    return {"peak_mib": peak / 2**20, "seconds": elapsed, "tiles": tiles, "tiles_per_s": tiles / elapsed,
            "raw_mb_per_s": raw_mb / elapsed, "file_mb": mb}


def _side(scene: Path) -> int:
    import rasterio

    with rasterio.open(scene) as src:
        return src.width


def bare_read(scene: Path) -> float:
    """Raw MB/s of reading both bands strip by strip with rasterio (the floor of any ingest)."""
    import rasterio

    start = time.perf_counter()
    with rasterio.open(scene) as src:
        for y0 in range(0, src.height, 256):
            src.read(window=rasterio.windows.Window(0, y0, src.width, min(256, src.height - y0)), masked=True)
        raw_mb = 2 * 4 * src.width * src.height / 2**20
    return raw_mb / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=2048, help="side of the small scene in px (the large is 2x)")
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="axion-ingest-bench-"))
    try:
        small, large = write_scene(work / "small.tif", args.side), write_scene(work / "large.tif", 2 * args.side)
        rows = []
        for name, scene, crs in (("1x", small, None), ("4x", large, None), ("4x reprojected", large, "EPSG:32632")):
            r = ingest_measured(scene, work / f"{name.replace(' ', '_')}.zarr", args.tile_size, args.overlap, crs)
            r["bare_read_mb_per_s"] = bare_read(scene)
            rows.append((name, r))
            print(f"{name:15s} {r['tiles']:5d} tiles  {r['seconds']:6.1f} s  {r['tiles_per_s']:6.1f} tiles/s  "
                  f"ingest {r['raw_mb_per_s']:6.1f} MB/s  (bare rasterio read {r['bare_read_mb_per_s']:6.1f} MB/s)  "
                  f"peak {r['peak_mib']:6.0f} MiB")
        ratio = rows[1][1]["peak_mib"] / rows[0][1]["peak_mib"]
        print(f"ingest_scale peak_ratio_4x={ratio:.2f} (goal <= 1.2) tiles_per_s={rows[1][1]['tiles_per_s']:.1f} "
              f"ingest_mb_s={rows[1][1]['raw_mb_per_s']:.1f} bare_read_mb_s={rows[1][1]['bare_read_mb_per_s']:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
