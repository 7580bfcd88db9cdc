"""A synthetic AOI's Sentinel-1 as real users bring it: several overlapping GeoTIFF scenes in different
CRSs, in linear power with `nodata=0`, each with the diagonal no-data wedge of a GRD product in map
geometry, and an AOI polygon — so `ingest` (reprojection, overlap, no-data) is exercised end to end.

The scenes are cut from the store's own `s1` field (its grid is the truth the ingested mosaic is
compared with). Scene i covers an overlapping band of columns; the first stays on the store's grid,
the others are reprojected (bilinear, in linear power) to their CRS at the same nominal resolution.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from axion_ray.store.grid import TileGrid
from axion_ray.store.tile_store import TileStatus, TileStore

#: The store's own UTM zone, the neighbouring zone and geographic coordinates.
DEFAULT_SCENE_CRS = ("EPSG:32633", "EPSG:32632", "EPSG:4326")
WEDGE_FRACTION = 0.11  # of a scene's pixels, like the wedge of a real GRD scene in map geometry


def store_field(store: TileStore, array: str = "s1") -> np.ndarray:
    """The store's whole grid of `array` (C, H, W), tiles placed at their grid positions."""
    grid = TileGrid.of(store)
    meta = store.tile_meta()
    t, stride = store.tile_size, grid.stride
    out = np.full((store.group[array].shape[1], grid.geobox.shape.y, grid.geobox.shape.x), np.nan, np.float32)
    for i in range(store.n_tiles):
        r, c = int(meta["tile_row"][i]), int(meta["tile_col"][i])
        out[:, r * stride:r * stride + t, c * stride:c * stride + t] = store.read(array, [i])[0]
    return out


def _wedge(shape: tuple[int, int], fraction: float, corner: int) -> np.ndarray:
    """A right-angled triangle of `fraction` of the pixels in one corner (True = no data)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    u, v = (xx / w, yy / h)
    u = u if corner % 2 == 0 else 1 - u
    v = v if corner < 2 else 1 - v
    return u + v < np.sqrt(2 * fraction)


def write_synthetic_scenes(store: TileStore, out_dir: str | Path, *, crss: tuple[str, ...] = DEFAULT_SCENE_CRS,
                           months: tuple[int, ...] = (4, 6, 8), wedge: float = WEDGE_FRACTION) -> dict[str, object]:
    """Write len(crss) overlapping scenes of the store's `s1` and an AOI GeoJSON into `out_dir`.

    Returns {"scenes": [paths], "aoi": path}. Scene i covers columns [i·W/(n+1), (i+2)·W/(n+1)) of the
    grid (neighbours overlap by a third), is written in linear power with nodata 0 and a no-data wedge,
    and carries its acquisition date (`TIFFTAG_DATETIME`, month `months[i]`).
    """
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = TileGrid.of(store)
    field_db = store_field(store)
    linear = np.power(10.0, field_db / 10.0, dtype=np.float64).astype(np.float32)
    h, w = linear.shape[1:]
    n = len(crss)
    paths = []
    for i, crs in enumerate(crss):
        x0, x1 = i * w // (n + 1), min(w, (i + 2) * w // (n + 1))
        part = grid.geobox[0:h, x0:x1]
        data = linear[:, :, x0:x1]
        if crs != str(part.crs):
            transform, width, height = calculate_default_transform(
                str(part.crs), crs, part.shape.x, part.shape.y, *part.extent.boundingbox)
            target = np.full((2, height, width), np.nan, np.float32)
            reproject(data, target, src_transform=part.affine, src_crs=str(part.crs), src_nodata=np.nan,
                      dst_transform=transform, dst_crs=crs, dst_nodata=np.nan, resampling=Resampling.bilinear)
            data = target
        else:
            transform = part.affine
        data = np.where(np.isfinite(data), data, 0.0).astype(np.float32)
        # Each wedge lies where a neighbouring scene covers the ground (the first scene's on its right,
        # the others' on their left or lower right), as overlapping acquisitions fill each other's edges.
        corner = 1 if i == 0 else 2 if i == n - 1 else 3
        data[:, _wedge(data.shape[1:], wedge, corner=corner)] = 0.0
        path = out_dir / f"scene_{i}_{crs.replace(':', '')}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=2,
                           dtype="float32", crs=crs, transform=transform, nodata=0.0, compress="deflate") as dst:
            dst.write(data)
            dst.descriptions = ("VV", "VH")
            dst.update_tags(TIFFTAG_DATETIME=f"2024:{months[i % len(months)]:02d}:15 10:00:00")
        paths.append(path)
    # The AOI: the grid's extent shrunk by a tile's width on each side, as a polygon a user would draw.
    inset = store.tile_size * abs(grid.geobox.affine.a)
    aoi = grid.geobox.extent.buffer(-inset).to_crs("EPSG:4326")
    aoi_path = out_dir / "aoi.geojson"
    aoi_path.write_text(json.dumps({"type": "Feature", "properties": {"name": "synthetic AOI"},
                                    "geometry": aoi.json}))
    return {"scenes": paths, "aoi": aoi_path}


def extent_geojson(store: TileStore, path: str | Path) -> Path:
    """The store's grid extent as a GeoJSON polygon in the store's own CRS (named in the file), so that
    `ingest --aoi` with `--crs` of the store rebuilds exactly the store's grid."""
    extent = TileGrid.of(store).geobox.extent
    path = Path(path)
    path.write_text(json.dumps({"type": "Feature", "properties": {},
                                "crs": {"type": "name", "properties": {"name": store.crs}},
                                "geometry": extent.json}))
    return path


def attach_reference(ingested: TileStore, synthetic: TileStore, arrays: tuple[str, ...] = ("s2_truth", "opt_v1")) -> int:
    """Copy the synthetic AOI's truth and Stage-1 prior onto the tiles of a store ingested from its
    scenes on the same grid (matched by grid position), invalid where the ingested S1 is: the demo's
    and the tests' reference for a store that began as GeoTIFF scenes. Returns the tiles matched."""
    if (ingested.crs, ingested.transform, ingested.tile_size, ingested.overlap) != (
            synthetic.crs, synthetic.transform, synthetic.tile_size, synthetic.overlap):
        raise ValueError("the ingested store is not on the synthetic AOI's grid")
    source = synthetic.tile_meta()
    position = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(source["tile_row"], source["tile_col"]))}
    meta = ingested.tile_meta()
    pairs = [(i, position[(int(r), int(c))]) for i, (r, c) in enumerate(zip(meta["tile_row"], meta["tile_col"]))
             if (int(r), int(c)) in position]
    if "s2_truth" in arrays:
        ingested.add_truth()
    mine, theirs = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    invalid = ~np.isfinite(ingested.read("s1", mine)).all(axis=1, keepdims=True)
    runnable = ingested.status("opt_v1")[mine] != TileStatus.NO_DATA  # no-data tiles keep their status
    # The reference was made for the synthetic tiles' month and biome: carry those over too.
    ingested.set_tile_meta(month=_by_tile(meta["month"], mine, source["month"][theirs]),
                           biome_code=_by_tile(meta["biome_code"], mine, source["biome_code"][theirs]))
    for name in arrays:
        data = np.where(invalid, np.nan, synthetic.read(name, theirs)).astype(np.float32)
        if name == "opt_v1":
            ingested.write(name, mine[runnable], data[runnable])
            ingested.set_provenance(name, **{k: v for k, v in synthetic.provenance(name).items()
                                             if k in ("stage", "model", "device", "note")})
        else:
            ingested.write(name, mine, data)
    return len(pairs)


def _by_tile(current: np.ndarray, tiles: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.array(current, copy=True)
    out[tiles] = values
    return out
