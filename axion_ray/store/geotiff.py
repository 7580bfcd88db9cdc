"""Large AOIs: blend a store's tiles back into one seamless Cloud-Optimized GeoTIFF (or Zarr) mosaic,
strip by strip (memory is one strip of tiles, not a scene). Ingest lives in `store/ingest.py`.

Tiles sit on a regular grid (stride = tile − overlap); the grid's edge tiles reach past the scene
(NaN there: no data), and the mosaic is cropped back to the scene (`scene_shape` attr). Blending uses
feathered weights — a linear ramp across the overlap, 1 in the interior, never 0 — over valid pixels
only, and divides by the summed weights in float64, so constant tiles mosaic to exactly that constant
and a grid cut from an image puts it back exactly; a pixel is nodata only where no tile has it valid.
`aoi=` clips to a polygon (outside: nodata). A GeoTIFF is written tiled with internal overviews and
then copied into GDAL's COG layout (`copy_src_overviews`), which rio-cogeo's validator accepts.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import numpy as np

from axion_ray.bands import OPTICAL_BANDS, S1_BANDS
from axion_ray.errors import StoreLayoutError, TileDataError, TileMetadataError
from axion_ray.store.location import filesystem, is_url, zarr_store
from axion_ray.store.tile_store import OUTPUT_ARRAYS, TileStatus, TileStore

OVERVIEW_LEVELS = (2, 4, 8, 16)


def ingest_geotiff(scene: str | Path, store_path: str | Path, *, tile_size: int = 256, overlap: int = 32,
                   units: str = "auto", month: int = 0, biome_code: int = 0, overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None, **options: Any) -> TileStore:
    """Cut one S1 GeoTIFF (VV, VH) into a tile store on its own grid: `store.ingest.ingest_scenes` for one
    scene (`options`: aoi, crs, resolution, min_valid)."""
    from axion_ray.store.ingest import ingest_scenes
    from axion_ray.store.scenes import scene_from_geotiff

    return ingest_scenes([scene_from_geotiff(scene)], store_path, tile_size=tile_size, overlap=overlap, units=units,
                         month=month, biome_code=biome_code, overwrite=overwrite, progress=progress, **options)


def feather_weights(tile: int, overlap: int) -> np.ndarray:
    """1-D blending weights: a ramp over each overlap band, 1 inside, never zero."""
    i = np.arange(tile, dtype=np.float64)
    return np.minimum(np.minimum(i + 1, tile - i), overlap + 1) / (overlap + 1)


def mosaic(store: TileStore, array: str, out: str | Path, *, aoi: str | Path | None = None, overwrite: bool = False,
           progress: Callable[[int, int], None] | None = None) -> Path | str:
    """Blend every produced tile of `array` into `out` (.tif/.tiff GeoTIFF or .zarr), keeping CRS and transform.

    `out` may be an object-store URL: a Zarr mosaic is written there directly; a GeoTIFF (whose overviews
    need a seekable file) is built in a local temporary file and uploaded as one object. Returns the
    output's Path, or its URL.
    Pixels no produced tile has valid, and pixels outside `aoi` (a GeoJSON polygon), are NaN (the
    GeoTIFF's nodata). An existing `out` is replaced only with `overwrite`; `out` may never be, contain or
    lie inside the store.
    """
    from axion_ray.store.location import check_output

    if not store.has(array):
        raise TileDataError(f"store {store.path} has no array {array!r}")
    out = check_output(out, (store.path,), overwrite=overwrite, what="mosaic")
    name = PurePosixPath(urlparse(out).path).name  # an absolute path parses as a URL's path too
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in (".tif", ".tiff", ".zarr"):
        raise TileMetadataError(f"--out must end in .tif, .tiff or .zarr, got {name}")
    rows, cols = store.grid_shape
    tile, overlap = store.height, store.overlap
    if store.width != tile:
        raise StoreLayoutError("mosaics need square tiles")
    stride = tile - overlap
    full_h, full_w = rows * stride + overlap, cols * stride + overlap
    scene_h, scene_w = store.attrs.get("scene_shape") or (full_h, full_w)
    bands = list(S1_BANDS if array == "s1" else OPTICAL_BANDS)
    usable = store.status(array) == TileStatus.DONE if array in OUTPUT_ARRAYS else np.ones(store.n_tiles, bool)
    meta = store.tile_meta()
    position = {(int(r), int(c)): i for i, (r, c) in enumerate(zip(meta["tile_row"], meta["tile_col"]))}
    w1d = feather_weights(tile, overlap)
    w2d = np.outer(w1d, w1d)
    clip = _aoi_clipper(store, aoi, scene_w) if aoi is not None else None

    writer = _writer(out, suffix, len(bands), scene_h, scene_w, store, bands, tile)
    acc = np.zeros((len(bands), tile, full_w), np.float64)
    wsum = np.zeros((tile, full_w), np.float64)
    try:
        for r in range(rows):
            indices = [position.get((r, c)) for c in range(cols)]
            present = [i for i in indices if i is not None and usable[i]]
            data = dict(zip(present, store.read(array, present))) if present else {}
            for c, i in enumerate(indices):
                if i in data:
                    tile_data = data[i].astype(np.float64)
                    valid = np.isfinite(tile_data).all(axis=0)
                    weights = np.where(valid, w2d, 0.0)
                    acc[:, :, c * stride:c * stride + tile] += np.where(valid, tile_data, 0.0) * weights
                    wsum[:, c * stride:c * stride + tile] += weights
            final_rows = tile if r == rows - 1 else stride
            with np.errstate(invalid="ignore", divide="ignore"):
                block = np.where(wsum[:final_rows] > 0, acc[:, :final_rows] / wsum[:final_rows], np.nan)
            y0 = r * stride
            keep = max(0, min(final_rows, scene_h - y0))
            if keep:
                block = block[:, :keep, :scene_w]
                if clip is not None:
                    block = np.where(clip(y0, keep), block, np.nan)
                writer(y0, block.astype(np.float32))
            acc[:, :overlap] = acc[:, stride:stride + overlap]
            wsum[:overlap] = wsum[stride:stride + overlap]
            acc[:, overlap:] = 0.0
            wsum[overlap:] = 0.0
            if progress:
                progress(r + 1, rows)
    finally:
        writer.close()
    return out if is_url(out) else Path(out)


def _aoi_clipper(store: TileStore, aoi: str | Path, width: int) -> Callable[[int, int], np.ndarray]:
    """(y0, rows) → the (rows, width) mask of mosaic pixels inside the AOI polygon."""
    from affine import Affine
    from rasterio.features import geometry_mask

    from axion_ray.store.grid import read_aoi

    if not store.crs or not store.transform:
        raise TileDataError(f"store {store.path} has no CRS or transform: it cannot be clipped to a polygon")
    shape = read_aoi(aoi).to_crs(store.crs).geom
    transform = Affine.from_gdal(*store.transform)

    def inside(y0: int, rows: int) -> np.ndarray:
        return geometry_mask([shape], out_shape=(rows, width), transform=transform @ Affine.translation(0, y0),
                             invert=True)

    return inside


def _writer(out: str, suffix: str, count: int, height: int, width: int, store: TileStore, bands: list[str], tile: int):
    if suffix == ".zarr":
        return _ZarrWriter(out, count, height, width, store, bands, tile)
    return _GeoTiffWriter(out, count, height, width, store, bands)


class _GeoTiffWriter:
    def __init__(self, out: str, count: int, height: int, width: int, store: TileStore, bands: list[str]):
        import rasterio
        from affine import Affine

        self._url = out if is_url(out) else None
        local = Path(tempfile.mkdtemp(prefix="axion-mosaic-")) / "mosaic.tif" if self._url else Path(out)
        local.parent.mkdir(parents=True, exist_ok=True)
        profile = {
            "driver": "GTiff", "width": width, "height": height, "count": count, "dtype": "float32",
            "crs": store.crs, "transform": Affine.from_gdal(*store.transform) if store.transform else None,
            "nodata": float("nan"), "tiled": True, "blockxsize": 256, "blockysize": 256,
            "compress": "deflate", "predictor": 3, "BIGTIFF": "IF_SAFER",
        }
        self._tmp = local.with_name(f".{local.name}.partial")
        self._out = local
        self._dst = rasterio.open(self._tmp, "w", **profile)
        for i, name in enumerate(bands, start=1):
            self._dst.set_band_description(i, name)

    def __call__(self, y0: int, block: np.ndarray) -> None:
        import rasterio

        self._dst.write(block, window=rasterio.windows.Window(0, y0, block.shape[2], block.shape[1]))

    def close(self) -> None:
        import rasterio.shutil
        from rasterio.enums import Resampling

        levels = [f for f in OVERVIEW_LEVELS if min(self._dst.height, self._dst.width) // f >= 8]
        if levels:
            self._dst.build_overviews(levels, Resampling.average)
            self._dst.update_tags(ns="rio_overview", resampling="average")
        self._dst.close()
        # The COG layout (header, overviews, then full-resolution tiles in order) is made by a copy that
        # carries the overviews over; rasterio writes a GeoTIFF's overviews after its data otherwise.
        cog = self._tmp.with_name(f".{self._out.name}.cog.partial")
        rasterio.shutil.copy(self._tmp, cog, driver="GTiff", copy_src_overviews=True, tiled=True, blockxsize=256,
                             blockysize=256, compress="deflate", predictor=3, BIGTIFF="IF_SAFER")
        self._tmp.unlink()
        cog.replace(self._out)  # atomic: a reader never sees half a mosaic
        if self._url:  # one PUT: atomic in an object store too
            fs, path = filesystem(self._url)
            fs.put_file(str(self._out), path)
            shutil.rmtree(self._out.parent, ignore_errors=True)


class _ZarrWriter:
    def __init__(self, out: str, count: int, height: int, width: int, store: TileStore, bands: list[str], tile: int):
        import zarr

        self._array = zarr.create_array(
            zarr_store(out), shape=(count, height, width), chunks=(count, tile, tile), dtype="float32",
            fill_value=np.nan, dimension_names=("band", "y", "x"), overwrite=True, zarr_format=3)
        self._array.attrs.update({"crs": store.crs, "transform": list(store.transform) if store.transform else None,
                                  "bands": bands, "source_store": store.path})

    def __call__(self, y0: int, block: np.ndarray) -> None:
        self._array[:, y0:y0 + block.shape[1], :] = block

    def close(self) -> None:
        pass
