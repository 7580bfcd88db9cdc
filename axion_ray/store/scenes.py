"""What `axion-ray ingest` reads: Sentinel-1 scenes as VV and VH rasters, with their acquisition date.

A scene comes from a 2-band GeoTIFF (bands VV, VH in that order, or named so in the band descriptions)
or from a STAC Item whose assets hold VV and VH (`pystac`; asset keys `vv`/`vh`, or titles, or
`sar:polarizations`); hrefs are paths or URLs GDAL can open. Every raster must say its CRS: a scene
that cannot be placed on the map cannot share a grid with others.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from axion_ray.errors import TileDataError

_POLARISATIONS = ("VV", "VH")
# GeoTIFF tags that may carry an acquisition date, in order of trust.
_DATE_TAGS = ("ACQUISITION_START_TIME", "ACQUISITION_DATE", "DATETIME", "datetime", "TIFFTAG_DATETIME")


@dataclass(frozen=True)
class BandSource:
    """One polarisation: a raster GDAL can open and the (1-based) band in it."""

    href: str
    band: int


@dataclass(frozen=True)
class Scene:
    name: str
    vv: BandSource
    vh: BandSource
    acquired: _dt.datetime | None = None

    @property
    def month(self) -> int:
        """1–12 from the acquisition date; 0 when the date is unknown."""
        return self.acquired.month if self.acquired else 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "vv": f"{self.vv.href}#{self.vv.band}", "vh": f"{self.vh.href}#{self.vh.band}",
                "acquired": self.acquired.isoformat() if self.acquired else None}


def parse_date(text: str) -> _dt.datetime | None:
    """An ISO-8601 or TIFF (`YYYY:MM:DD HH:MM:SS`) date, or None."""
    text = str(text).strip()
    tiff = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})", text)
    if tiff:
        text = "{}-{}-{}T{}:{}:{}".format(*tiff.groups())
    try:
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _open(href: str, what: str):
    import rasterio

    try:
        return rasterio.open(href)
    except rasterio.errors.RasterioIOError as exc:
        raise TileDataError(f"{what} {href} is not a readable raster ({exc})") from exc


def scene_from_geotiff(path: str | Path) -> Scene:
    """A 2-band S1 GeoTIFF (VV, VH); a third band is accepted only when band descriptions name VV and VH."""
    href = str(path)
    if "://" not in href and not Path(href).is_file():
        raise TileDataError(f"scene {href} does not exist")
    with _open(href, "scene") as src:
        if src.crs is None:
            raise TileDataError(f"scene {href} has no CRS: it cannot be placed on a grid (georeference it, "
                                "e.g. `gdal_edit.py -a_srs EPSG:32633`)")
        names = [(d or "").upper() for d in src.descriptions]
        if all(p in names for p in _POLARISATIONS):
            bands = [names.index(p) + 1 for p in _POLARISATIONS]
        elif src.count == 2:
            bands = [1, 2]
        else:
            raise TileDataError(f"scene {href} has {src.count} band(s); an S1 scene needs VV and VH (2 bands, or "
                                "band descriptions naming VV and VH)")
        tags = src.tags()
        acquired = next((d for k in _DATE_TAGS if k in tags and (d := parse_date(tags[k]))), None)
    return Scene(Path(href).name, BandSource(href, bands[0]), BandSource(href, bands[1]), acquired)


def scenes_from_stac(path: str | Path) -> list[Scene]:
    """Every Item of a STAC Item or ItemCollection JSON file that has VV and VH assets."""
    import pystac

    path = Path(path)
    if not path.is_file():
        raise TileDataError(f"STAC file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise TileDataError(f"STAC file {path} is not JSON ({exc})") from exc
    try:
        if data.get("type") == "FeatureCollection":
            items = list(pystac.ItemCollection.from_file(str(path)))
        else:
            items = [pystac.Item.from_file(str(path))]
    except Exception as exc:  # pystac raises several types for a malformed document
        raise TileDataError(f"{path} is not a STAC Item or ItemCollection ({exc})") from exc
    scenes = [_scene_from_item(item, path) for item in items]
    if not scenes:
        raise TileDataError(f"STAC file {path} holds no items")
    return scenes


def _scene_from_item(item: Any, source: Path) -> Scene:
    found: dict[str, str] = {}
    for key, asset in item.assets.items():
        pols = [p.upper() for p in asset.extra_fields.get("sar:polarizations", [])]
        for pol in _POLARISATIONS:
            if key.upper() == pol or (asset.title or "").upper() == pol or pols == [pol]:
                href = asset.get_absolute_href() or asset.href
                if "://" not in href and not Path(href).is_absolute():
                    href = str((source.parent / href).resolve())
                found.setdefault(pol, href)
    missing = [p for p in _POLARISATIONS if p not in found]
    if missing:
        raise TileDataError(f"STAC item {item.id} in {source} has no {' or '.join(missing)} asset "
                            f"(assets: {', '.join(item.assets)})")
    for pol in _POLARISATIONS:
        with _open(found[pol], f"STAC item {item.id} asset {pol}") as src:
            if src.crs is None:
                raise TileDataError(f"STAC item {item.id} asset {pol} ({found[pol]}) has no CRS")
    return Scene(item.id, BandSource(found["VV"], 1), BandSource(found["VH"], 1), item.datetime)
