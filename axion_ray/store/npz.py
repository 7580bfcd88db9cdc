"""Axion-Sat NPZ tile directories, both ways (docs/ARCHITECTURE.md §4).

`tile_0001.npz` holds (C, H, W) float arrays under `s1` (or `s1_vv` + `s1_vh`), `opt_v1`, `opt_v2`,
`opt_v3` or `s2_truth`; `tile_0001.json` beside it holds `month` (1–12 or a month name), `biome_code`
(0–15), `tile_id` and any other keys, which are preserved through a round trip. A missing sidecar means
month 6, biome 0, with a warning. Import validates every file before it creates the store, so a bad
directory leaves nothing half-written behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.bands import DEFAULT_MONTH, MONTH_NAMES, N_BIOMES
from axion_ray.errors import NpzFormatError, StoreExistsError, TileMetadataError
from axion_ray.store.location import location_exists, resolve_location
from axion_ray.store.tile_store import IMAGE_ARRAYS, OUTPUT_ARRAYS, TileStatus, TileStore

#: Sidecar keys we interpret; every other key is carried through untouched.
_KNOWN_SIDECAR_KEYS = ("month", "biome_code", "tile_id")
#: Sidecar keys we write on export (replacing any older values).
_OUTPUT_SIDECAR_KEYS = ("stage", "timestamp", "processing")
STAGE_LABELS = {"opt_v1": "stage1_generated", "opt_v2": "stage2_refined", "opt_v3": "stage3_grounded",
                "s1": "s1_input", "s2_truth": "reference"}


def parse_month(value: Any, source: str = "month") -> int:
    """1–12 from an int, a digit string or a month name/abbreviation ("jun", "June", "sept"); 0 = unknown.

    Raises:
        TileMetadataError: anything else, naming `source`.
    """
    if isinstance(value, bool):
        raise TileMetadataError(f"{source}: month {value!r} is not 1–12 or a month name")
    if isinstance(value, (int, np.integer)) or (isinstance(value, float) and float(value).is_integer()):
        month = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        month = int(value.strip())
    elif isinstance(value, str):
        text = value.strip().lower().rstrip(".")
        matches = [i + 1 for i, name in enumerate(MONTH_NAMES)
                   if len(text) >= 3 and (name.startswith(text) or (text == "sept" and i == 8))]
        if len(matches) != 1:
            raise TileMetadataError(f"{source}: month {value!r} is not 1–12 or a month name")
        month = matches[0]
    else:
        raise TileMetadataError(f"{source}: month {value!r} is not 1–12 or a month name")
    if not 0 <= month <= 12:
        raise TileMetadataError(f"{source}: month {value!r} is not 1–12 (0 = unknown)")
    return month


def parse_biome(value: Any, source: str = "biome_code") -> int:
    """0–15 from an int or digit string.

    Raises:
        TileMetadataError: anything else, naming `source`.
    """
    if isinstance(value, bool):
        raise TileMetadataError(f"{source}: biome_code {value!r} is not an integer 0–{N_BIOMES - 1}")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, (int, np.integer)) or not 0 <= int(value) < N_BIOMES:
        raise TileMetadataError(f"{source}: biome_code {value!r} is not an integer 0–{N_BIOMES - 1}")
    return int(value)


@dataclass
class NpzTile:
    """One tile read from an NPZ + sidecar pair."""

    path: Path
    tile_id: str
    arrays: dict[str, np.ndarray]
    month: int
    biome_code: int
    extra: dict[str, Any]
    had_sidecar: bool
    warnings: list[str] = field(default_factory=list)
    position: tuple[int, int] | None = None   # (row, col) from the sidecar


def read_npz_tile(npz_path: str | Path) -> NpzTile:
    """Read and validate one NPZ tile and its sidecar.

    Raises:
        NpzFormatError: unreadable file, no known array key, wrong rank/band count, non-float or NaN/Inf data.
        TileMetadataError: bad month or biome in the sidecar.
    """
    path = Path(npz_path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            raw = {k: np.asarray(npz[k]) for k in npz.files}
    except Exception as exc:  # zipfile, zlib, numpy's header parser (even SyntaxError) raise many types
        raise NpzFormatError(f"{path} is not a readable .npz file ({type(exc).__name__}: {str(exc)[:200]})") from exc
    arrays: dict[str, np.ndarray] = {}
    try:
        groups = per_band_keys(raw)
    except NpzFormatError as exc:
        raise NpzFormatError(f"{path}: {exc}") from None
    for name, keys in groups.items():
        bands = [raw[k] for k in keys]
        if any(b.ndim != 2 or b.shape != bands[0].shape for b in bands):
            raise NpzFormatError(f"{path}: {', '.join(keys)} must be (H, W) arrays of one shape, got "
                                 f"{[b.shape for b in bands]}")
        arrays[name] = np.stack(bands)
    for key in IMAGE_ARRAYS:
        if key in raw:
            arrays[key] = raw[key]
    if not arrays:
        raise NpzFormatError(f"{path} holds none of the keys {', '.join(IMAGE_ARRAYS)} (found: {', '.join(raw) or 'nothing'})")
    for key, data in arrays.items():
        if data.ndim != 3 or data.shape[0] != IMAGE_ARRAYS[key]:
            raise NpzFormatError(f"{path}: {key} must be ({IMAGE_ARRAYS[key]}, H, W), got shape {data.shape}")
        if not np.issubdtype(data.dtype, np.floating):
            raise NpzFormatError(f"{path}: {key} must be a float array, got {data.dtype}")
        if np.isinf(data).any() or not np.isfinite(data).any():  # NaN pixels are no-data (kept), as Axion-Sat's
            raise NpzFormatError(f"{path}: {key} has NaN/Inf values in every pixel (or infinities): no valid data")
    scales: dict[str, str] = {}
    for key in [k for k in arrays if k != "s1"]:  # DN 0–10000 (Axion-Sat's tiler) or reflectance 0–1
        arrays[key], scales[key] = reflectance_of(arrays[key])
    shapes = {a.shape[1:] for a in arrays.values()}
    if len(shapes) > 1:
        raise NpzFormatError(f"{path}: arrays differ in size {sorted(shapes)}")

    sidecar_path = path.with_suffix(".json")
    meta: dict[str, Any] = {}
    if sidecar_path.exists():
        try:
            meta = json.loads(sidecar_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise NpzFormatError(f"{sidecar_path} is not valid JSON ({exc})") from exc
        if not isinstance(meta, dict):
            raise NpzFormatError(f"{sidecar_path} must hold a JSON object")
    month = parse_month(meta["month"], str(sidecar_path)) if "month" in meta else DEFAULT_MONTH
    biome = parse_biome(meta["biome_code"], str(sidecar_path)) if "biome_code" in meta else 0
    warnings: list[str] = []
    # Month and biome stored in the NPZ (Axion-Sat's create_tiles_from_files writes rasters): they win
    # over the sidecar; a disagreement is named.
    for key, parse in (("month", parse_month), ("biome_code", parse_biome)):
        if key in raw:
            value = parse(tile_value(raw[key], f"{path}: {key}"), f"{path}: {key}")
            side = month if key == "month" else biome
            if key in meta and value != side:
                warnings.append(f"{path.name}: {key} {value} in the NPZ, {side} in its sidecar; using {value}")
            month, biome = (value, biome) if key == "month" else (month, value)
    extra = {k: v for k, v in meta.items() if k not in _KNOWN_SIDECAR_KEYS}
    if any(v == "dn" for v in scales.values()):
        extra["optical_scale"] = "dn"  # recorded: an export can write the user's scale back
    from axion_ray.store.location import safe_file_name

    tile_id = safe_file_name(str(meta.get("tile_id", path.stem)), f"{sidecar_path.name}: tile_id")
    return NpzTile(path, tile_id, {k: v.astype(np.float32) for k, v in arrays.items()},
                   month, biome, extra, bool(meta) or sidecar_path.exists() or "month" in raw, warnings,
                   grid_position(meta))


#: Axion-Sat's per-band optical keys, band order B02, B03, B04, B08.
_BANDS = (2, 3, 4, 8)


def per_band_keys(raw: dict[str, np.ndarray]) -> dict[str, tuple[str, ...]]:
    """Which of our arrays a file's per-band keys make: `s1_vv` + `s1_vh` → s1; `opt_vN_b2…b8` → opt_vN;
    `s2_b2…b8` → s2_truth in a tile that also holds S1 (Axion-Sat's tiler), else opt_v1 (their
    Stage 1 output, `<stem>_opt.npz`, which their Stage 2 reads by those keys)."""
    found: dict[str, tuple[str, ...]] = {}
    if "s1_vv" in raw or "s1_vh" in raw:
        if not ("s1_vv" in raw and "s1_vh" in raw):
            raise NpzFormatError("s1_vv and s1_vh must come together")
        found["s1"] = ("s1_vv", "s1_vh")
    for prefix in ("s2", *OUTPUT_ARRAYS):
        keys = tuple(f"{prefix}_b{b}" for b in _BANDS)
        present = [k for k in keys if k in raw]
        if present and len(present) != len(keys):
            raise NpzFormatError(f"{', '.join(keys)} must come together (found only {', '.join(present)})")
        if present:
            has_s1 = "s1" in raw or "s1" in found
            found["s2_truth" if prefix == "s2" and has_s1 else "opt_v1" if prefix == "s2" else prefix] = keys
    return found


#: Above this, an optical array is DN (reflectance x 10000), not reflectance: reflectance tops out
#: near 1.0–1.6 (bright snow, specular glint), DN of any land cover well above 10.
_DN_THRESHOLD = 5.0


def reflectance_of(optical: np.ndarray) -> tuple[np.ndarray, str]:
    """(reflectance, "dn" | "reflectance"): DN are divided by 10000 (S2_DN_SCALE)."""
    from axion_ray.bands import S2_DN_SCALE

    finite = optical[np.isfinite(optical)]
    if finite.size and float(np.abs(finite).max()) > _DN_THRESHOLD:
        return optical / S2_DN_SCALE, "dn"
    return optical, "reflectance"


def tile_value(values: np.ndarray, source: str) -> float:
    """One value for a tile from a scalar or a raster (Axion-Sat writes month and biome as (H, W)
    rasters): the most common finite value."""
    finite = np.asarray(values, dtype=np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise TileMetadataError(f"{source} has no finite value")
    uniq, counts = np.unique(finite, return_counts=True)
    return float(uniq[counts.argmax()])


def grid_position(meta: dict[str, Any]) -> tuple[int, int] | None:
    """(row, col) of the tile in its grid from a sidecar's `row`/`col` (or `tile_row`/`tile_col`)."""
    for r, c in (("row", "col"), ("tile_row", "tile_col")):
        if r in meta and c in meta:
            try:
                return int(meta[r]), int(meta[c])
            except (TypeError, ValueError):
                raise TileMetadataError(f"sidecar {r}/{c} must be integers, got {meta[r]!r}, {meta[c]!r}") from None
    return None


@dataclass
class ImportReport:
    store: TileStore
    n_tiles: int
    arrays: list[str]
    warnings: list[str] = field(default_factory=list)


def list_npz_tiles(directory: Path) -> list[Path]:
    """The `.npz` tiles of a directory, sorted; a clear error when there are none."""
    if not directory.exists():
        raise NpzFormatError(f"input directory {directory} does not exist")
    if not directory.is_dir():
        raise NpzFormatError(f"{directory} is not a directory")
    files = sorted(directory.glob("*.npz"))
    if not files:
        raise NpzFormatError(f"No NPZ tiles found in {directory}")
    return files


#: Tiles held in memory at once while importing (pass 2 writes them shard-aligned, batch by batch).
IMPORT_BATCH_TILES = 512


def write_npz_batches(store: TileStore, paths: Sequence[Path], read: Callable[[Path], NpzTile],
                      arrays: Sequence[str], batch_tiles: int = IMPORT_BATCH_TILES) -> None:
    """Pass 2 of a two-pass import: tile i of `store` is `paths[i]`, read again (`read`) a batch of
    whole shards at a time; each of `arrays` is written for the tiles that have it."""
    step = max(1, batch_tiles // store.shard_tiles) * store.shard_tiles
    for lo in range(0, len(paths), step):
        batch = {lo + k: read(path).arrays for k, path in enumerate(paths[lo:lo + step])}
        for name in arrays:
            idx = np.array([i for i, held in batch.items() if name in held], dtype=np.int64)
            if idx.size:
                store.write(name, idx, np.stack([batch[i][name] for i in idx]))


def import_npz_dir(directory: str | Path, store_path: str | Path, *, overwrite: bool = False,
                   batch_tiles: int = IMPORT_BATCH_TILES) -> ImportReport:
    """Import an Axion-Sat tile directory into a new tile store.

    Two passes, so memory stays bounded by `batch_tiles` tiles, not the directory (10,000 tiles of
    120 px would otherwise be ~7 GB): every tile is read and validated first, keeping only its
    metadata, and the store is only created once all of them pass; then the tiles are read again and
    written batch by batch, each batch whole shards. Tiles that lack an array the others have keep it
    pending (outputs) or NaN (inputs).

    Raises:
        NpzFormatError, TileMetadataError: naming the offending file; nothing is written.
        StoreExistsError: `store_path` exists and `overwrite` is False.
    """
    from axion_ray.store.validity import valid_fraction

    directory = Path(directory)
    files = list_npz_tiles(directory)
    if not overwrite and location_exists(resolve_location(store_path)):
        raise StoreExistsError(f"{store_path} already exists; choose another path or remove it first")
    tiles, names, fractions, sizes = [], [], [], set()
    for f in files:  # pass 1: validate everything, keep metadata only
        tile = read_npz_tile(f)
        sizes.add(next(iter(tile.arrays.values())).shape[1:])
        names.append(tuple(tile.arrays))
        fractions.append(valid_fraction(tile.arrays["s1"][None])[0] if "s1" in tile.arrays else np.nan)
        tile.arrays = {}
        tiles.append(tile)
    if len(sizes) > 1:
        raise NpzFormatError(f"tiles in {directory} differ in size {sorted(sizes)}; a store holds one tile size")
    ids = [t.tile_id for t in tiles]
    if len(set(ids)) != len(ids):
        raise NpzFormatError(f"tile_id values repeat in {directory}; each tile needs its own id")
    (h, w), = sizes
    present = [a for a in IMAGE_ARRAYS if any(a in n for n in names)]
    store = TileStore.create(store_path, len(tiles), (h, w), with_truth="s2_truth" in present, overwrite=overwrite,
                             attrs={"source": {"format": "axion-sat-npz", "directory": str(directory.resolve())}})
    positions = [t.position for t in tiles]
    rows, cols = (np.array([p[0] for p in positions]), np.array([p[1] for p in positions])) \
        if all(positions) else (np.arange(len(tiles)), np.zeros(len(tiles)))  # sidecar row/col, else a count
    store.set_tile_meta(month=[t.month for t in tiles], biome_code=[t.biome_code for t in tiles], tile_id=ids,
                        tile_row=rows, tile_col=cols)
    store.set_sidecar_extra([t.extra for t in tiles])
    store.set_sidecar_sources([str(t.path) for t in tiles])
    write_npz_batches(store, files, read_npz_tile, present, batch_tiles)  # pass 2: the arrays
    for name in present:
        if name in OUTPUT_ARRAYS:
            store.set_provenance(name, stage="imported", model="unknown (Axion-Sat NPZ)", source=str(directory))
    if "s1" in present:  # validity as at ingest: a tile under min_valid is no data
        fractions_array = np.array(fractions, dtype=np.float32)
        store.set_valid_fraction(fractions_array)
        under = np.flatnonzero(fractions_array < store.min_valid)
        tracking = store.tracking(OUTPUT_ARRAYS)
        for name in OUTPUT_ARRAYS:  # an output the directory already holds stays done
            store.mark_no_data(under[tracking[name].status[under] != TileStatus.DONE], arrays=[name])
    warnings = [w for t in tiles for w in t.warnings]
    no_sidecar = [t.path.name for t in tiles if not t.had_sidecar]
    if no_sidecar:
        shown = ", ".join(no_sidecar[:5]) + (" …" if len(no_sidecar) > 5 else "")
        warnings.append(f"{len(no_sidecar)} tile(s) have no sidecar JSON; used month {DEFAULT_MONTH}, biome 0 ({shown})")
    return ImportReport(store, len(tiles), present, warnings)


@dataclass
class ExportReport:
    directory: Path
    array: str
    written: int
    skipped: dict[str, int]


def atomic_write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz so a reader never sees a half-written file (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # as Axion-Sat's own scripts write them
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def output_sidecar(month: int, biome_code: int, tile_id: str, extra: dict[str, Any], *, stage: str,
                   input_file: str, checkpoint: str | None, device: str, use_amp: bool,
                   processing_time_ms: float | None) -> dict[str, Any]:
    """The Axion-Sat output sidecar: input keys preserved, then stage, timestamp and processing."""
    return {
        "month": int(month), "biome_code": int(biome_code), "tile_id": tile_id,
        **{k: v for k, v in extra.items() if k not in _OUTPUT_SIDECAR_KEYS},
        "stage": stage,
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "processing": {"input_file": input_file, "checkpoint": checkpoint, "device": device,
                       "use_amp": bool(use_amp),
                       "processing_time_ms": None if processing_time_ms is None or np.isnan(processing_time_ms)
                       else round(float(processing_time_ms), 3)},
    }


#: NPZ key layouts of an export: one (4, H, W) array under its name, Axion-Sat's per-band keys, or
#: their Stage 3 output (`opt_final` and its alias `opt_v3`, with a `quality_status` in the sidecar).
EXPORT_LAYOUTS = ("arrays", "bands", "stage3")
#: Optical scales of an export: as imported (`source`: DN where the tile came in as DN), or one for all.
EXPORT_SCALES = ("source", "reflectance", "dn")


def _band_prefix(array: str) -> str:
    """Axion-Sat's per-band key prefix: their Stage 1 output and their tiles' reference are `s2_b*`."""
    return "s2" if array in ("opt_v1", "s2_truth") else array


def _npz_members(array: str, tile: np.ndarray, layout: str, dn: bool) -> dict[str, np.ndarray]:
    from axion_ray.bands import S2_DN_SCALE

    if array != "s1" and dn:
        tile = tile * S2_DN_SCALE
    if layout == "arrays":
        return {array: tile}
    if layout == "stage3":
        return {"opt_final": tile, "opt_v3": tile}
    if array == "s1":
        return {"s1_vv": tile[0], "s1_vh": tile[1]}
    return {f"{_band_prefix(array)}_b{b}": tile[i] for i, b in enumerate(_BANDS)}


def _quality_status(optical: np.ndarray, s1: np.ndarray) -> dict[str, Any]:
    """Axion-Sat's Stage 3 sidecar fields: SAR agreement, production or preview-only, certified."""
    from axion_ray.metrics.geometry import SAR_AGREEMENT_PRODUCTION, sar_agreement

    agreement = sar_agreement(optical, s1)
    production = agreement >= SAR_AGREEMENT_PRODUCTION
    return {"sar_agreement": round(agreement, 4), "quality_status": "production" if production else "preview-only",
            "ars_s_v1_certified": bool(production)}


def _tile_georeference(store: TileStore, row: int, col: int) -> dict[str, Any]:
    """The tile's own GDAL geotransform and CRS, when the store has them (Axion-Sat's sidecars do)."""
    if not store.crs or not store.transform:
        return {}
    x0, px, rx, y0, ry, py = store.transform
    stride = store.height - store.overlap
    return {"crs": store.crs, "geotransform": [x0 + col * stride * px, px, rx, y0 + row * stride * py, ry, py],
            "row": int(row), "col": int(col)}


def export_npz_dir(store: TileStore, directory: str | Path, array: str = "opt_v2", *, overwrite: bool = False,
                   progress: Callable[[int, int], None] | None = None, layout: str = "arrays",
                   scale: str = "source", name_suffix: str = "") -> ExportReport:
    """Write every produced tile of `array` as `<tile_id>.npz` + `<tile_id>.json` in `directory`.

    `layout` "bands" writes Axion-Sat's per-band keys (`s2_b2…s2_b8` for opt_v1 and s2_truth,
    `opt_vN_b*` otherwise, `s1_vv`/`s1_vh`); `scale` "dn" writes optical values x 10000, "source" as
    each tile was imported. Sidecars carry the tile's geotransform, CRS and grid position when the
    store has them. Files are compressed, as Axion-Sat writes them.

    Output arrays export only their done tiles; pending, failed and no-data tiles are counted as
    skipped. File names come from the data (tile ids, source names): each must be a plain file name.
    Files already in `directory` are never replaced unless `overwrite`; the directory may not be, lie
    inside or contain the store.
    """
    from axion_ray.errors import OutputPathError
    from axion_ray.store.location import check_output, safe_file_name

    if not store.has(array):
        raise TileMetadataError(f"store {store.path} has no array {array!r} (it has {', '.join(store.arrays)})")
    if layout not in EXPORT_LAYOUTS or scale not in EXPORT_SCALES:
        raise TileMetadataError(f"layout must be one of {', '.join(EXPORT_LAYOUTS)} and scale one of "
                                f"{', '.join(EXPORT_SCALES)}, got {layout!r}, {scale!r}")
    directory = Path(check_output(directory, (store.path,), overwrite=True, may_contain_inputs=True,
                                  what="export directory"))
    if directory.exists() and not directory.is_dir():
        raise NpzFormatError(f"{directory} exists and is not a directory")
    if array in OUTPUT_ARRAYS:
        status = store.status(array)
        indices = np.flatnonzero(status == TileStatus.DONE)
        skipped = {"pending": int((status == TileStatus.PENDING).sum()), "failed": int((status == TileStatus.FAILED).sum())}
        if (status == TileStatus.NO_DATA).any():
            skipped["no_data"] = int((status == TileStatus.NO_DATA).sum())
        proc_ms = store.proc_ms(array)
    else:
        indices, skipped, proc_ms = np.arange(store.n_tiles), {}, np.full(store.n_tiles, np.nan)
    meta = store.tile_meta()
    sources, extras = store.sidecar_sources(), store.sidecar_extras()
    prov = store.provenance(array)
    names = {int(i): safe_file_name((Path(sources[i]).stem if sources[i] else str(meta["tile_id"][i])) + name_suffix,
                                    f"tile {int(i)}'s name") for i in indices}
    if len(set(names.values())) != len(names):
        raise NpzFormatError(f"tiles of {store.path} share file names; their tile ids must be unique to export")
    clashes = [n for n in names.values() if (directory / f"{n}.npz").exists() or (directory / f"{n}.json").exists()]
    if clashes and not overwrite:
        raise OutputPathError(f"{len(clashes)} file(s) in {directory} would be replaced (e.g. {clashes[0]}.npz); "
                              "export into an empty directory or pass --overwrite")
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for batch_idx, data in store.iter_batches(array, indices):
        for i, tile in zip(batch_idx, data):
            tile_id = str(meta["tile_id"][i])
            name = names[int(i)]  # Axion-Sat keeps the input's file name, else the tile id
            dn = scale == "dn" or (scale == "source" and extras[i].get("optical_scale") == "dn")
            atomic_write_npz(directory / f"{name}.npz", _npz_members(array, tile, layout, dn))
            place = _tile_georeference(store, int(meta["tile_row"][i]), int(meta["tile_col"][i]))
            if layout == "stage3" and store.has("s1"):
                place.update(_quality_status(tile, store.read("s1", [int(i)])[0]))
            sidecar = output_sidecar(
                meta["month"][i], meta["biome_code"][i], tile_id, {**place, **extras[i]},
                stage=STAGE_LABELS[array], input_file=sources[i] or f"{store.path}[{int(i)}]",
                checkpoint=prov.get("checkpoint"), device=prov.get("device", "cpu"),
                use_amp=bool(prov.get("amp", False)), processing_time_ms=float(proc_ms[i]))
            atomic_write_json(directory / f"{name}.json", sidecar)
            written += 1
        if progress:
            progress(written, indices.size)
    return ExportReport(directory, array, written, skipped)
