"""`axion-ray ingest`: Sentinel-1 scenes (GeoTIFFs or STAC items, any CRS and resolution) → one tile store.

The target grid (`store/grid.py`): `--crs`, else the UTM zone of the AOI's centroid (a single scene
without `--aoi`/`--crs`/`--resolution` keeps its own grid, as before); `--resolution`, else 10 m
(a single scene on its own grid keeps its pixel size). It covers the AOI polygon's bounds (default:
the scenes' union) and only tiles that intersect the polygon are created.

Scenes are read window by window (up to 8 tiles of one row at a time: memory does not grow with the
scene).
A scene on the grid itself is read as it is; any other is reprojected with GDAL (`rasterio.warp`,
bilinear) **in linear power**, never in dB. Where scenes overlap, the valid linear powers are averaged
(a pixel one scene covers keeps that scene's value exactly). A pixel is valid where both polarisations
are; the rest is NaN. A tile whose valid fraction is under `min_valid` is *no data*. Each tile's month
is the acquisition month of the scene that covers most of it, where scenes carry a date, else `month`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.errors import TileDataError, TileMetadataError
from axion_ray.store.grid import TileGrid, read_aoi, utm_crs_of
from axion_ray.store.scenes import BandSource, Scene
from axion_ray.store.tile_store import TileStore
from axion_ray.store.validity import DEFAULT_MIN_VALID

DEFAULT_RESOLUTION_M = 10.0
# GDAL's block cache defaults to 5 % of RAM and would fill with every block of a scene read once;
# a strip is re-read only at tile overlaps, so a small cache keeps ingest streaming (bench/ingest_scale.py).
_GDAL_CACHE = 64 * 2**20  # bytes: rasterio sets it with GDALSetCacheMax64
_TILES_PER_WINDOW = 8  # tiles of one row read, combined and written together
COMBINE_RULE = "mean of valid linear power where scenes overlap"
_UNIT_SAMPLE = 256  # px per side of each of the five windows whose median decides dB or linear


class _Band:
    """An open raster band and how to bring it onto the grid."""

    def __init__(self, source: BandSource, units: str):
        import rasterio

        self.source = source
        self.ds = rasterio.open(source.href)
        self.linear = self._is_linear(units)

    def _is_linear(self, units: str) -> bool:
        if units != "auto":
            return units == "linear"
        from rasterio.windows import Window

        # Five windows (centre and quadrant centres), not a decimated read of the whole scene: a
        # decimated read decompresses every block, which is a full read of a large scene.
        h, w = self.ds.height, self.ds.width
        side_y, side_x = min(h, _UNIT_SAMPLE), min(w, _UNIT_SAMPLE)
        samples = []
        for fy, fx in ((0.5, 0.5), (0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)):
            window = Window(max(0, int(fx * w) - side_x // 2), max(0, int(fy * h) - side_y // 2), side_x, side_y)
            samples.append(self.ds.read(self.source.band, window=window, masked=True).astype(np.float64).filled(np.nan))
        sample = np.concatenate([s.ravel() for s in samples])
        finite = sample[np.isfinite(sample)]
        return bool(finite.size) and 0 < float(np.median(finite)) < 1.5

    def on_grid(self, strip: Any) -> tuple[np.ndarray, np.ndarray | None]:
        """This band on the strip's pixels in linear power (NaN where invalid) and, for a dB band already
        on the grid, its values as stored (so that a pixel one scene covers keeps them exactly)."""
        import rasterio
        from rasterio.warp import Resampling, reproject
        from rasterio.windows import Window, from_bounds

        h, w = strip.shape.y, strip.shape.x
        out = np.full((h, w), np.nan, np.float32)
        aligned = self._aligned_offset(strip)
        if aligned is not None:  # same grid: a plain (boundless) window read, no resampling
            col, row = aligned
            window = Window(col, row, w, h)
            data = self.ds.read(self.source.band, window=window, boundless=True, masked=True)
            data = data.astype(np.float32).filled(np.nan)
            linear = self._to_linear(data)
            return linear, None if self.linear else np.where(np.isfinite(linear), data, np.nan)
        bounds = strip.extent.to_crs(str(self.ds.crs)).boundingbox
        window = from_bounds(*bounds, transform=self.ds.transform)
        window = Window(math.floor(window.col_off) - 2, math.floor(window.row_off) - 2,
                        math.ceil(window.width) + 5, math.ceil(window.height) + 5)
        try:
            window = window.intersection(Window(0, 0, self.ds.width, self.ds.height))
        except rasterio.errors.WindowError:
            return out, None  # the scene does not reach this strip
        data = self.ds.read(self.source.band, window=window, masked=True).astype(np.float32).filled(np.nan)
        reproject(self._to_linear(data), out, src_transform=self.ds.window_transform(window), src_crs=self.ds.crs,
                  src_nodata=np.nan, dst_transform=strip.affine, dst_crs=str(strip.crs), dst_nodata=np.nan,
                  resampling=Resampling.bilinear)
        return out, None

    def _aligned_offset(self, strip: Any) -> tuple[int, int] | None:
        from rasterio.crs import CRS

        t, a = self.ds.transform, strip.affine
        if CRS.from_user_input(str(strip.crs)) != self.ds.crs or (t.a, t.b, t.d, t.e) != (a.a, a.b, a.d, a.e):
            return None
        col, row = ~t @ (a.c, a.f)
        if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
            return None
        return int(round(col)), int(round(row))

    def _to_linear(self, data: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", over="ignore"):
            linear = data if self.linear else np.power(10.0, data / 10.0, dtype=np.float32)
            return np.where(linear > 0, linear, np.nan).astype(np.float32)

    def close(self) -> None:
        self.ds.close()


def _grid_for(scenes: Sequence[Scene], bands: list[tuple[_Band, _Band]], aoi: Any, crs: str | None,
              resolution: float | None, tile_size: int, overlap: int) -> tuple[TileGrid, Any, bool]:
    """(grid, AOI polygon in the grid's CRS, whether the grid is the single scene's own)."""
    from odc.geo import geom
    from odc.geo.geobox import GeoBox

    footprints = [geom.box(*ds.bounds, str(ds.crs)) for vv, vh in bands for ds in (vv.ds, vh.ds)]
    native = len(scenes) == 1 and aoi is None and crs is None and resolution is None
    if native:
        ds = bands[0][0].ds
        geobox = GeoBox((ds.height, ds.width), ds.transform, str(ds.crs))
        return TileGrid.covering(geobox, tile_size, overlap), geobox.extent, True
    area = aoi if aoi is not None else geom.unary_union([f.to_crs("EPSG:4326") for f in footprints])
    centroid = area.to_crs("EPSG:4326").centroid.points[0]
    target = crs or utm_crs_of(*centroid)
    res = float(resolution or DEFAULT_RESOLUTION_M)
    if res <= 0:
        raise TileMetadataError(f"--resolution must be a positive number of metres, got {resolution}")
    area = area.to_crs(target)
    geobox = GeoBox.from_bbox(area.boundingbox, target, resolution=res)
    return TileGrid.covering(geobox, tile_size, overlap), area, False


def ingest_scenes(scenes: Sequence[Scene], store_path: str | Path, *, aoi: str | Path | None = None,
                  crs: str | None = None, resolution: float | None = None, tile_size: int = 256, overlap: int = 32,
                  units: str = "auto", month: int = 0, biome_code: int = 0, min_valid: float = DEFAULT_MIN_VALID,
                  overwrite: bool = False, progress: Callable[[int, int], None] | None = None) -> TileStore:
    """Cut S1 scenes onto one grid into a new tile store; a failure leaves no store behind.

    Raises:
        TileDataError / TileMetadataError: unreadable scenes, bad options, an AOI no scene covers.
    """
    if not scenes:
        raise TileDataError("no scene to ingest: give GeoTIFF paths or --stac ITEMS.json")
    if units not in ("auto", "db", "linear"):
        raise TileMetadataError(f"units must be auto, db or linear, got {units!r}")
    if not 0 <= int(month) <= 12:
        raise TileMetadataError(f"--month must be 1–12 (0 = unknown), got {month}")
    if not 0 <= int(biome_code) <= 15:
        raise TileMetadataError(f"--biome must be 0–15 (0 = unknown), got {biome_code}")
    if not 0 < float(min_valid) <= 1:
        raise TileMetadataError(f"--min-valid must lie in (0, 1], got {min_valid}")
    TileGrid.covering(_probe_geobox(), tile_size, overlap)  # tile size / overlap checks before any I/O
    polygon = read_aoi(aoi) if aoi is not None else None
    import rasterio

    opened: list[tuple[_Band, _Band]] = []
    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE):
        try:
            for scene in scenes:
                opened.append((_Band(scene.vv, units), _Band(scene.vh, units)))
            grid, area, native = _grid_for(scenes, opened, polygon, crs, resolution, tile_size, overlap)
            return _cut(scenes, opened, grid, area, native, store_path, month=int(month), biome_code=int(biome_code),
                        min_valid=float(min_valid), aoi=polygon, overwrite=overwrite, progress=progress)
        finally:
            for pair in opened:
                for band in pair:
                    band.close()


def _probe_geobox() -> Any:
    from affine import Affine
    from odc.geo.geobox import GeoBox

    return GeoBox((64, 64), Affine(10, 0, 0, 0, -10, 0), "EPSG:32633")


def _cut(scenes: Sequence[Scene], bands: list[tuple[_Band, _Band]], grid: TileGrid, area: Any, native: bool,
         store_path: str | Path, *, month: int, biome_code: int, min_valid: float, aoi: Any, overwrite: bool,
         progress: Callable[[int, int], None] | None) -> TileStore:
    from axion_ray.store.location import filesystem, is_url, location_exists, resolve_location

    keep = [(r, c) for r in range(grid.rows) for c in range(grid.cols) if grid.footprint(r, c).intersects(area)]
    if not keep:
        raise TileDataError("no tile of the grid intersects the AOI: do the scenes and the AOI overlap?")
    path = resolve_location(store_path)
    existed = location_exists(path)
    scene_shape = [grid.geobox.shape.y, grid.geobox.shape.x]
    if native:
        ds = bands[0][0].ds
        scene_shape = [ds.height, ds.width]
    store = TileStore.create(
        path, len(keep), grid.tile_size, crs=str(grid.geobox.crs), transform=grid.geobox.affine.to_gdal(),
        overlap=grid.overlap, grid_shape=(grid.rows, grid.cols), overwrite=overwrite,
        attrs={"scene_shape": scene_shape, "min_valid": min_valid, "combine": COMBINE_RULE,
               "aoi": aoi.to_crs("EPSG:4326").json if aoi is not None else None,
               "source": {"format": "geotiff" if all(s.vv.href == s.vh.href for s in scenes) else "stac",
                          "scenes": [s.to_dict() for s in scenes],
                          "path": scenes[0].vv.href if len(scenes) == 1 else None}})
    try:
        _fill(store, scenes, bands, grid, keep, extent=scene_shape, month=month, biome_code=biome_code,
              min_valid=min_valid, progress=progress)
    except BaseException:
        if not existed:  # nothing half-made: the store this call created goes
            if is_url(path):
                fs, key = filesystem(path)
                fs.rm(key, recursive=True)
            else:
                import shutil

                shutil.rmtree(path, ignore_errors=True)
        raise
    return store


def _fill(store: TileStore, scenes: Sequence[Scene], bands: list[tuple[_Band, _Band]], grid: TileGrid,
          keep: list[tuple[int, int]], *, extent: list[int], month: int, biome_code: int, min_valid: float,
          progress: Callable[[int, int], None] | None) -> None:
    """Read, combine and write window by window: a window is up to `_TILES_PER_WINDOW` tiles of one tile
    row, so memory stays the same however wide or tall the scene. A tile's valid fraction counts only its
    pixels inside the grid's extent (`extent` = the scene's or AOI box's size): the padding that makes
    whole tiles at the far edges is not the user's no-data, and counting it would drop edge tiles full
    of valid data."""
    index = {rc: i for i, rc in enumerate(keep)}
    n = len(keep)
    fraction = np.zeros(n, np.float32)
    months = np.full(n, month, np.int64)
    best_cover = np.zeros(n, np.int64)
    t, stride = grid.tile_size, grid.stride
    converted: list[bool] = []
    for r in range(grid.rows):
        in_row = [c for c in range(grid.cols) if (r, c) in index]
        for start in range(0, len(in_row), _TILES_PER_WINDOW):
            cols = in_row[start:start + _TILES_PER_WINDOW]
            x0 = cols[0] * stride
            window = grid.geobox[r * stride:r * stride + t, x0:cols[-1] * stride + t]
            s1, cover = _combine(scenes, bands, window, converted)
            idx = np.array([index[(r, c)] for c in cols])
            tiles = np.stack([s1[:, :, c * stride - x0:c * stride - x0 + t] for c in cols])
            inside_rows = max(1, min(t, extent[0] - r * stride))
            for k, c in enumerate(cols):
                inside_cols = max(1, min(t, extent[1] - c * stride))
                fraction[idx[k]] = np.isfinite(tiles[k, :, :inside_rows, :inside_cols]).all(axis=0).mean()
                for scene_month, valid in cover:  # the month of the scene covering most of the tile
                    covered = int(valid[..., c * stride - x0:c * stride - x0 + t].sum())
                    if covered > best_cover[idx[k]]:
                        best_cover[idx[k]], months[idx[k]] = covered, scene_month
            store.write("s1", idx, tiles)
        if progress:
            progress(r + 1, grid.rows)
    store.set_tile_meta(tile_row=np.array([r for r, _ in keep], np.int32),
                        tile_col=np.array([c for _, c in keep], np.int32), month=months,
                        biome_code=np.full(n, biome_code))
    store.set_valid_fraction(fraction)
    store.mark_no_data(np.flatnonzero(fraction < min_valid))
    store.group["s1"].attrs["converted_from_linear"] = bool(converted) and all(converted)
    store.consolidate()


def _combine(scenes: Sequence[Scene], bands: list[tuple[_Band, _Band]], window: Any, converted: list[bool]
             ) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """S1 in dB on `window` from every scene: a pixel one scene covers keeps its value, several are
    averaged in linear power; plus, for each dated scene, (month, its valid mask)."""
    shape = (window.shape.y, window.shape.x)
    total = np.zeros((2, *shape), np.float64)
    count = np.zeros(shape, np.int32)
    single = np.full((2, *shape), np.nan, np.float32)
    cover: list[tuple[int, np.ndarray]] = []
    for scene, (vv, vh) in zip(scenes, bands):
        (vv_lin, vv_db), (vh_lin, vh_db) = vv.on_grid(window), vh.on_grid(window)
        linear = np.stack([vv_lin, vh_lin])
        valid = np.isfinite(linear).all(axis=0)
        if not valid.any():
            continue
        converted.append(vv.linear)
        total += np.where(valid, linear, 0.0)
        count += valid
        if vv_db is not None and vh_db is not None:
            db = np.stack([vv_db, vh_db])  # exact values, no round trip through linear
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                db = (10.0 * np.log10(linear)).astype(np.float32)
        single = np.where(valid, db, single)
        if scene.acquired is not None:
            cover.append((scene.month, valid))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_db = (10.0 * np.log10(total / np.maximum(count, 1))).astype(np.float32)
    return np.where(count == 1, single, np.where(count > 1, mean_db, np.nan)).astype(np.float32), cover
