"""`axion-ray footprints STORE --out tiles.geojson`: every tile's polygon with its status, to open in QGIS.

One GeoJSON Feature per tile (RFC 7946: coordinates in EPSG:4326, the store's CRS named in the
collection's properties), with its index, id, grid position, input valid fraction and, per output
array, its status, failure reason and the valid fraction of its data (read only for done tiles, a
batch at a time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.store.grid import TileGrid
from axion_ray.store.tile_store import OUTPUT_ARRAYS, TileStatus, TileStore
from axion_ray.store.validity import valid_fraction

_BATCH = 64


def tile_features(store: TileStore) -> dict[str, Any]:
    """The store's tiles as a GeoJSON FeatureCollection (a dict)."""
    grid = TileGrid.of(store)
    meta = store.tile_meta()
    props: list[dict[str, Any]] = [
        {"tile": i, "tile_id": str(meta["tile_id"][i]), "row": int(meta["tile_row"][i]),
         "col": int(meta["tile_col"][i]), "month": int(meta["month"][i]), "biome_code": int(meta["biome_code"][i])}
        for i in range(store.n_tiles)]
    fractions = store.valid_fractions()
    for i, f in enumerate(fractions):
        props[i]["valid_fraction_s1"] = None if not np.isfinite(f) else round(float(f), 4)
    for name in OUTPUT_ARRAYS:
        status = store.status(name)
        failures = store.failures(name, status)
        done = np.flatnonzero(status == TileStatus.DONE)
        produced = np.full(store.n_tiles, np.nan)
        for start in range(0, done.size, _BATCH):
            idx = done[start:start + _BATCH]
            produced[idx] = valid_fraction(store.read(name, idx))
        for i in range(store.n_tiles):
            props[i][f"status_{name}"] = TileStatus(int(status[i])).name.lower()
            props[i][f"reason_{name}"] = failures.get(i)
            props[i][f"valid_fraction_{name}"] = None if np.isnan(produced[i]) else round(float(produced[i]), 4)
    features = []
    for i in range(store.n_tiles):
        polygon = grid.footprint(props[i]["row"], props[i]["col"]).to_crs("EPSG:4326")
        features.append({"type": "Feature", "geometry": polygon.json, "properties": props[i]})
    return {"type": "FeatureCollection", "features": features,
            "properties": {"store": store.path, "crs": store.crs, "tile_size": store.tile_size,
                           "overlap": store.overlap}}


def write_footprints(store: TileStore, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write `tile_features` to `out` (.geojson/.json) atomically; an existing file only with `overwrite`."""
    from axion_ray.errors import TileMetadataError
    from axion_ray.store.location import check_output

    out = Path(check_output(out, (store.path,), overwrite=overwrite, what="footprints file"))
    if out.suffix.lower() not in (".geojson", ".json"):
        raise TileMetadataError(f"--out must end in .geojson or .json, got {out.name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    tmp.write_text(json.dumps(tile_features(store)))
    tmp.replace(out)
    return out
