"""A format-1 tile store (one file per tile per array, per-tile status arrays), written with plain
zarr as axion-ray up to format 1 wrote it: what users' existing stores look like on disk."""

from __future__ import annotations

import numpy as np
import zarr


def write_format1_store(path, n: int = 10, size: int = 16, *, seed: int = 0) -> dict:
    """A format-1 store with s1, s2_truth, opt_v1 done on tiles 0–3, tile 5 failed, tile 9 no data;
    returns what was written, to compare after migration."""
    rng = np.random.default_rng(seed)
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    data = {}
    for name, bands in (("s1", 2), ("opt_v1", 4), ("opt_v2", 4), ("opt_v3", 4), ("s2_truth", 4)):
        dims = ("tile", "pol", "y", "x") if name == "s1" else ("tile", "band", "y", "x")
        g.create_array(name, shape=(n, bands, size, size), chunks=(1, bands, size, size), dtype="float32",
                       fill_value=np.nan, dimension_names=dims)
    data["s1"] = rng.normal(-12, 3, (n, 2, size, size)).astype(np.float32)
    data["s2_truth"] = rng.random((n, 4, size, size), dtype=np.float32)
    data["opt_v1"] = rng.random((4, 4, size, size), dtype=np.float32)
    g["s1"][:] = data["s1"]
    g["s2_truth"][:] = data["s2_truth"]
    g["opt_v1"][:4] = data["opt_v1"]
    g["opt_v1"].attrs.update({"stage": "stage1", "model": "old-model"})
    meta = {"month": np.arange(n) % 12 + 1, "biome_code": np.arange(n) % 5, "tile_row": np.arange(n) // 5,
            "tile_col": np.arange(n) % 5}
    for name, dtype in (("month", "int8"), ("biome_code", "int8"), ("tile_row", "int32"), ("tile_col", "int32")):
        g.create_array(name, shape=(n,), chunks=(n,), dtype=dtype, fill_value=0, dimension_names=("tile",))
        g[name][:] = meta[name]
    g.create_array("tile_id", shape=(n,), chunks=(n,), dtype=str, dimension_names=("tile",))
    meta["tile_id"] = np.array([f"old_{i}" for i in range(n)])
    g["tile_id"][:] = meta["tile_id"]
    g.create_array("valid_fraction", shape=(n,), chunks=(n,), dtype="float32", fill_value=np.nan,
                   dimension_names=("tile",))
    g["valid_fraction"][:] = np.linspace(0.5, 1.0, n, dtype=np.float32)
    for sub in ("status", "proc_ms", "failure"):
        g.require_group(sub)
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        g["status"].create_array(name, shape=(n,), chunks=(1,), dtype="uint8", fill_value=0, compressors=None,
                                 dimension_names=("tile",))
        g["proc_ms"].create_array(name, shape=(n,), chunks=(1,), dtype="float32", fill_value=np.nan,
                                  compressors=None, dimension_names=("tile",))
        g["failure"].create_array(name, shape=(n,), chunks=(1,), dtype=str, dimension_names=("tile",))
        g[f"status/{name}"][9] = 3
    g["status/opt_v1"][:4] = 1
    g["proc_ms/opt_v1"][:4] = np.array([1.5, 2.5, 3.5, 4.5], np.float32)
    g["status/opt_v1"][5] = 2
    g["failure/opt_v1"][5] = "s1 has 3 infinite values"
    sidecar = g.require_group("sidecar")
    for name in ("extra", "source"):
        sidecar.create_array(name, shape=(n,), chunks=(n,), dtype=str, dimension_names=("tile",))
    g["sidecar/source"][:] = np.array([f"t{i}.npz" for i in range(n)])
    g.attrs.update({"format_version": 1, "crs": "EPSG:32633", "transform": [500000.0, 10.0, 0.0, 5200000.0, 0.0, -10.0],
                    "tile_size": size, "tile_shape": [size, size], "overlap": 0, "grid_shape": [2, 5],
                    "created": "2026-01-01T00:00:00+00:00", "axion_ray_version": "0.9", "min_valid": 0.6})
    return {"data": data, "meta": meta}
