"""Large AOIs: cut a georeferenced S1 GeoTIFF into overlapping tiles, and blend tiles back into one
seamless GeoTIFF (or Zarr) mosaic. Both stream strip by strip: memory is one strip of tiles, not a scene.

Tiles sit on a regular grid (stride = tile − overlap). The scene is reflect-padded at the bottom and
right up to whole tiles; the mosaic is cropped back to the scene (`scene_shape` attr). Blending uses
feathered weights — a linear ramp across the overlap, 1 in the interior, never 0 — and divides by the
summed weights in float64, so constant tiles mosaic to exactly that constant and a grid cut from an
image puts it back exactly.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import numpy as np

from axion_ray.bands import OPTICAL_BANDS, S1_BANDS
from axion_ray.errors import StoreLayoutError, TileDataError, TileMetadataError
from axion_ray.store.location import filesystem, is_url, resolve_location, zarr_store
from axion_ray.store.tile_store import OUTPUT_ARRAYS, TileStatus, TileStore

OVERVIEW_LEVELS = (2, 4, 8, 16)


def _pad(strip: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Reflect-pad a (C, h, w) strip at the bottom/right to (C, rows, cols) (edge mode if too small)."""
    ph, pw = rows - strip.shape[1], cols - strip.shape[2]
    if ph == 0 and pw == 0:
        return strip
    mode = "reflect" if ph < strip.shape[1] and pw < strip.shape[2] else "edge"
    return np.pad(strip, ((0, 0), (0, ph), (0, pw)), mode=mode)


def ingest_geotiff(scene: str | Path, store_path: str | Path, *, tile_size: int = 256, overlap: int = 32,
                   units: str = "auto", month: int = 0, biome_code: int = 0, overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None) -> TileStore:
    """Cut a 2-band (VV, VH) Sentinel-1 GeoTIFF into a tile store.

    Args:
        units: "db", "linear" (σ0 power, converted to dB) or "auto" (linear when the median lies in (0, 1.5)).
        month, biome_code: the scene's acquisition month (0 = unknown) and biome.

    Raises:
        TileDataError: not a readable raster, fewer than 2 bands, or too small for one tile.
    """
    import rasterio

    scene = Path(scene)
    if not scene.is_file():
        raise TileDataError(f"scene {scene} does not exist")
    if not 0 <= overlap < tile_size // 2 + 1 or tile_size < 16:
        raise TileMetadataError(f"need tile size >= 16 and 0 <= overlap <= tile/2, got {tile_size}/{overlap}")
    if units not in ("auto", "db", "linear"):
        raise TileMetadataError(f"units must be auto, db or linear, got {units!r}")
    try:
        src = rasterio.open(scene)
    except rasterio.errors.RasterioIOError as exc:
        raise TileDataError(f"{scene} is not a readable raster ({exc})") from exc
    with src:
        if src.count < 2:
            raise TileDataError(f"{scene} has {src.count} band(s); an S1 scene needs VV and VH")
        height, width = src.height, src.width
        stride = tile_size - overlap
        rows = max(1, math.ceil((height - overlap) / stride))
        cols = max(1, math.ceil((width - overlap) / stride))
        padded_w = cols * stride + overlap
        store = TileStore.create(
            store_path, rows * cols, tile_size, crs=src.crs.to_string() if src.crs else None,
            transform=src.transform.to_gdal(), overlap=overlap, grid_shape=(rows, cols), overwrite=overwrite,
            attrs={"scene_shape": [height, width], "source": {"format": "geotiff", "path": str(scene.resolve())}})
        grid_rows, grid_cols = np.divmod(np.arange(rows * cols), cols)
        store.set_tile_meta(tile_row=grid_rows, tile_col=grid_cols, month=np.full(rows * cols, month),
                            biome_code=np.full(rows * cols, biome_code))
        convert = None
        for r in range(rows):
            y0 = r * stride
            window = rasterio.windows.Window(0, y0, width, min(tile_size, height - y0))
            strip = src.read([1, 2], window=window, masked=True).astype(np.float32).filled(np.nan)
            if convert is None:
                convert = units == "linear" or (units == "auto" and 0 < np.nanmedian(strip) < 1.5)
            if convert:
                with np.errstate(divide="ignore", invalid="ignore"):
                    strip = 10.0 * np.log10(np.where(strip > 0, strip, np.nan))
            strip = _pad(strip, tile_size, padded_w)
            tiles = np.stack([strip[:, :, c * stride:c * stride + tile_size] for c in range(cols)])
            store.write("s1", np.arange(r * cols, (r + 1) * cols), tiles)
            if progress:
                progress(r + 1, rows)
        store.group["s1"].attrs["converted_from_linear"] = bool(convert)
        store.consolidate()
    return store


def feather_weights(tile: int, overlap: int) -> np.ndarray:
    """1-D blending weights: a ramp over each overlap band, 1 inside, never zero."""
    i = np.arange(tile, dtype=np.float64)
    return np.minimum(np.minimum(i + 1, tile - i), overlap + 1) / (overlap + 1)


def mosaic(store: TileStore, array: str, out: str | Path, *,
           progress: Callable[[int, int], None] | None = None) -> Path | str:
    """Blend every produced tile of `array` into `out` (.tif/.tiff GeoTIFF or .zarr), keeping CRS and transform.

    `out` may be an object-store URL: a Zarr mosaic is written there directly; a GeoTIFF (whose overviews
    need a seekable file) is built in a local temporary file and uploaded as one object. Returns the
    output's Path, or its URL.
    Pixels no produced tile covers are NaN (the GeoTIFF's nodata).
    """
    if not store.has(array):
        raise TileDataError(f"store {store.path} has no array {array!r}")
    out = resolve_location(out)
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
                writer(y0, block[:, :keep, :scene_w].astype(np.float32))
            acc[:, :overlap] = acc[:, stride:stride + overlap]
            wsum[:overlap] = wsum[stride:stride + overlap]
            acc[:, overlap:] = 0.0
            wsum[overlap:] = 0.0
            if progress:
                progress(r + 1, rows)
    finally:
        writer.close()
    return out if is_url(out) else Path(out)


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
        from rasterio.enums import Resampling

        levels = [f for f in OVERVIEW_LEVELS if min(self._dst.height, self._dst.width) // f >= 8]
        if levels:
            self._dst.build_overviews(levels, Resampling.average)
            self._dst.update_tags(ns="rio_overview", resampling="average")
        self._dst.close()
        self._tmp.replace(self._out)  # atomic: a reader never sees half a mosaic
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
