"""The tile grid of an AOI, on odc-geo's `GeoBox`: one CRS, one resolution, overlapping square tiles.

Tile (r, c) covers pixels [r·stride, r·stride + T) × [c·stride, c·stride + T) of the grid's GeoBox,
stride = T − overlap. odc-geo's `GeoboxTiles` cuts a GeoBox into tiles that do not overlap, so the
overlapping tiles are GeoBox slices (`geobox[y0:y1, x0:x1]`, which odc-geo extends past the edge);
everything else — CRS, affine, extents, reprojecting footprints — is odc-geo's and pyproj's.
A store keeps its grid as `crs`, `transform`, `tile_size`, `overlap` and `grid_shape`; `TileGrid.of`
rebuilds it from those, so tile footprints are derived, never stored twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axion_ray.errors import TileDataError, TileMetadataError


@dataclass(frozen=True)
class TileGrid:
    geobox: Any          # odc.geo GeoBox covering every tile
    tile_size: int
    overlap: int
    rows: int
    cols: int

    @property
    def stride(self) -> int:
        return self.tile_size - self.overlap

    @classmethod
    def covering(cls, geobox: Any, tile_size: int, overlap: int) -> TileGrid:
        """The tiles needed to cover `geobox` (the last row/column may reach past it)."""
        if tile_size < 16 or not 0 <= overlap <= tile_size // 2:
            raise TileMetadataError(f"need tile size >= 16 and 0 <= overlap <= tile/2, got {tile_size}/{overlap}")
        stride = tile_size - overlap
        height, width = geobox.shape.y, geobox.shape.x
        rows = max(1, math.ceil((height - overlap) / stride))
        cols = max(1, math.ceil((width - overlap) / stride))
        full = geobox[0:rows * stride + overlap, 0:cols * stride + overlap]
        return cls(full, tile_size, overlap, rows, cols)

    @classmethod
    def of(cls, store: Any) -> TileGrid:
        """The grid a store was cut on."""
        from affine import Affine
        from odc.geo.geobox import GeoBox

        if not store.crs or not store.transform:
            raise TileDataError(f"store {store.path} has no CRS or transform: its tiles have no place on the map")
        rows, cols = store.grid_shape
        stride = store.tile_size - store.overlap
        shape = (rows * stride + store.overlap, cols * stride + store.overlap)
        return cls(GeoBox(shape, Affine.from_gdal(*store.transform), store.crs), store.tile_size, store.overlap,
                   rows, cols)

    def tile(self, row: int, col: int) -> Any:
        """The GeoBox of tile (row, col)."""
        y0, x0 = row * self.stride, col * self.stride
        return self.geobox[y0:y0 + self.tile_size, x0:x0 + self.tile_size]

    def strip(self, row: int) -> Any:
        """The GeoBox of a whole row of tiles."""
        y0 = row * self.stride
        return self.geobox[y0:y0 + self.tile_size, :]

    def footprint(self, row: int, col: int) -> Any:
        """Tile (row, col)'s polygon (odc-geo Geometry in the grid's CRS)."""
        return self.tile(row, col).extent


def utm_crs_of(lon: float, lat: float) -> str:
    """The UTM zone CRS (WGS 84) containing a point, from pyproj's CRS database."""
    from pyproj.aoi import AreaOfInterest
    from pyproj.database import query_utm_crs_info

    found = query_utm_crs_info(datum_name="WGS 84",
                               area_of_interest=AreaOfInterest(lon, lat, lon, lat))
    if not found:
        raise TileMetadataError(f"no UTM zone contains lon {lon}, lat {lat}")
    # Several zones may touch a point on a zone border; the standard formula breaks the tie.
    zone = int((lon + 180) // 6) % 60 + 1
    code = f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"
    return code if any(f"EPSG:{c.code}" == code for c in found) else f"EPSG:{found[0].code}"


def read_aoi(path: str | Path) -> Any:
    """An AOI polygon from a GeoJSON file (Feature, FeatureCollection or bare geometry; EPSG:4326 unless
    the file names another CRS) as an odc-geo Geometry."""
    import json

    from odc.geo import geom

    path = Path(path)
    if not path.is_file():
        raise TileMetadataError(f"AOI file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise TileMetadataError(f"AOI file {path} is not GeoJSON ({exc})") from exc
    crs = (data.get("crs") or {}).get("properties", {}).get("name", "EPSG:4326") if isinstance(data, dict) else None
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        shapes = [f.get("geometry") for f in data.get("features", [])]
    elif isinstance(data, dict) and data.get("type") == "Feature":
        shapes = [data.get("geometry")]
    else:
        shapes = [data]
    try:
        polygons = [geom.Geometry(s, crs) for s in shapes if s]
    except Exception as exc:  # shapely raises several types for a malformed geometry
        raise TileMetadataError(f"AOI file {path} holds no valid geometry ({exc})") from exc
    polygons = [p for p in polygons if p.geom.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty]
    if not polygons:
        raise TileMetadataError(f"AOI file {path} holds no polygon")
    return geom.unary_union(polygons) if len(polygons) > 1 else polygons[0]
