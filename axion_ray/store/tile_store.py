"""The Zarr v3 tile store: the hub every stage reads from and writes back to (docs/ARCHITECTURE.md §3).

Layout (contract; format 2, docs/STORE.md)::

    s1            float32 (N, 2, H, W)  dims (tile, pol, y, x)   sigma-0 dB [VV, VH]
    opt_v1..3     float32 (N, 4, H, W)  dims (tile, band, y, x)  reflectance [B02,B03,B04,B08], NaN = not produced
    s2_truth      float32 (N, 4, H, W)  optional reference
    month         int8 (N,)   biome_code int8 (N,)   tile_row/tile_col int32 (N,)   tile_id str (N,)
    valid_fraction float32 (N,) fraction of valid s1 pixels (NaN = not recorded; store/validity.py)
    sidecar/extra str (N,)    JSON of NPZ sidecar keys we do not interpret (preserved on export)
    sidecar/source str (N,)   file a tile was imported from
    tracking      str (n_shards,)  per shard, one JSON record: status (0 pending, 1 done, 2 failed,
                                   3 no data), proc_ms and failure reasons of every tile and output

Shards (store/shards.py): image arrays use Zarr v3's sharding codec, a shard = `shard_tiles`
consecutive tiles in one file/object and one tile per inner chunk (a tile reads alone); the per-tile
1-D arrays are chunked one shard per chunk, so a read task reads only its own tiles' metadata. A tile
id left empty is its default `tile_<i>`, so creating a store writes no per-tile data at all.

Validity: NaN marks invalid pixels in every image array; a stage's output is NaN exactly where its
inputs are. A tile whose valid fraction is under the store's `min_valid` attr has status *no data* for
every output: not pending, not failed, never run (store/validity.py).

Safety: a shard has one writer at a time (shard-aligned read tasks within a run, the store's lease
across runs). Data is written before the shard's record: a crash leaves a tile pending, never "done"
with missing data. Zarr's LocalStore writes each file atomically (temp file + rename); in an object
store (`s3://…`, store/location.py) each shard and record is one object PUT, atomic by the store's
semantics. Format-1 stores (one file per tile) are converted by `axion-ray migrate` (store/migrate.py).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from axion_ray.bands import N_BIOMES, OPTICAL_BANDS, S1_BANDS
from axion_ray.errors import (
    AxionRayError,
    StoreExistsError,
    StoreLayoutError,
    StoreNotFoundError,
    TileDataError,
    TileMetadataError,
)
from axion_ray.store.location import (
    filesystem,
    is_url,
    location_exists,
    location_has,
    location_is_file,
    resolve_location,
    zarr_store,
)
from axion_ray.store.shards import (
    ShardRecord,
    choose_shard_tiles,
    decode_vlen_utf8,
    dense_spans,
    n_shards,
    shard_groups,
)
from axion_ray.version import __version__

FORMAT_VERSION = 2  # 2: sharded image arrays, per-shard tracking records (1: one file per tile)
OUTPUT_ARRAYS: tuple[str, ...] = ("opt_v1", "opt_v2", "opt_v3")
IMAGE_ARRAYS: dict[str, int] = {"s1": len(S1_BANDS), "opt_v1": 4, "opt_v2": 4, "opt_v3": 4, "s2_truth": 4}
# s1 gets its own band dimension name: xarray needs one size per dimension name in a Dataset.
_IMAGE_DIMS = {"s1": ("tile", "pol", "y", "x")}
_OPTICAL_DIMS = ("tile", "band", "y", "x")
_TILE_META = {"month": "int8", "biome_code": "int8", "tile_row": "int32", "tile_col": "int32"}
_REQUIRED_ROOT_ATTRS = ("format_version", "tile_size", "grid_shape")
#: Inner chunks of the image shards: LZ4 through Blosc with byte shuffle. Float reflectance barely
#: compresses (~10 % with any codec), and LZ4 decodes ~10 % faster than zarr's default zstd (measured,
#: bench/store_scale.py); the pipeline's write path is what it must not slow down.
_IMAGE_CODECS = {"compressors": zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")}
_SLASH_KEYS = {"name": "default", "separator": "/"}  # tracking/c/<shard>: the key the raw reader expects


class TileStatus(IntEnum):
    PENDING = 0
    DONE = 1
    FAILED = 2
    NO_DATA = 3  # under the store's min_valid: never run


@dataclass
class Tracking:
    """One output's per-tile status (uint8, N), proc_ms (float32, N) and failure reasons by tile."""

    status: np.ndarray
    proc_ms: np.ndarray
    failures: dict[int, str]


_NONE = np.zeros(0, np.int64)


@dataclass
class OutputResult:
    """What happened to some tiles of one output array: `TileStore.commit`'s unit."""

    array: str
    done: np.ndarray = field(default_factory=lambda: _NONE)
    data: np.ndarray | None = None               # (len(done), 4, H, W)
    proc_ms: np.ndarray | None = None            # (len(done),)
    failed: np.ndarray = field(default_factory=lambda: _NONE)
    reasons: Sequence[str] = ()                  # one per failed tile
    no_data: np.ndarray = field(default_factory=lambda: _NONE)

    def __post_init__(self) -> None:
        self.done, self.failed, self.no_data = (np.asarray(p, dtype=np.int64).reshape(-1)
                                                for p in (self.done, self.failed, self.no_data))


@dataclass(frozen=True)
class ArrayCounts:
    """Per-array progress, as `axion-ray status` shows it."""

    array: str
    total: int
    pending: int
    done: int
    failed: int
    failures: dict[int, str]
    no_data: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total, "pending": self.pending, "done": self.done, "failed": self.failed,
            "no_data": self.no_data,
            "failures": {str(k): v for k, v in sorted(self.failures.items())},
        }


class TileStore:
    """A tile store on disk or in object storage. Create with `TileStore.create`, open with `TileStore.open`."""

    def __init__(self, group: zarr.Group, path: str, read_only: bool):
        self._group = group
        self.path = path
        self.read_only = read_only
        attrs = group.attrs
        self.n_tiles = int(group["s1"].shape[0])
        self.shard_tiles = int(attrs.get("shard_tiles", 1))
        self.n_shards = n_shards(self.n_tiles, self.shard_tiles)
        self.height, self.width = (int(v) for v in group["s1"].shape[2:])
        self.tile_size = int(attrs["tile_size"])
        self.overlap = int(attrs.get("overlap", 0))
        self.grid_shape = tuple(int(v) for v in attrs["grid_shape"])
        self.crs = attrs.get("crs")
        self.transform = tuple(attrs["transform"]) if attrs.get("transform") else None

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(
        cls,
        path: str | Path,
        n_tiles: int,
        tile_size: int | tuple[int, int],
        *,
        crs: str | None = None,
        transform: Sequence[float] | None = None,
        overlap: int = 0,
        grid_shape: tuple[int, int] | None = None,
        with_truth: bool = False,
        overwrite: bool = False,
        attrs: dict[str, Any] | None = None,
        shard_tiles: int | None = None,
    ) -> TileStore:
        """Create an empty store for `n_tiles` tiles of `tile_size` pixels.

        Args:
            path: directory of the new Zarr v3 group, or an object-store URL (`s3://bucket/aoi.zarr`).
            n_tiles: number of tiles N.
            tile_size: H (square) or (H, W).
            crs: CRS of the AOI mosaic ("EPSG:32633" or WKT); None when unknown (NPZ imports).
            transform: GDAL-order affine (6 floats) of the AOI mosaic's top-left pixel grid.
            overlap: pixels shared by neighbouring tiles.
            grid_shape: (rows, cols) of the tile grid; defaults to (N, 1).
            with_truth: also create `s2_truth`.
            overwrite: replace an existing store instead of refusing.
            shard_tiles: tiles per shard; by default `shards.choose_shard_tiles` (a few MB a shard).

        Raises:
            StoreExistsError: `path` exists and `overwrite` is False.
            TileDataError: sizes that cannot make a store.
        """
        path = resolve_location(path)
        h, w = (tile_size, tile_size) if isinstance(tile_size, int) else tuple(tile_size)
        if n_tiles < 1 or h < 1 or w < 1:
            raise TileDataError(f"a store needs at least one tile of at least 1x1 px, got N={n_tiles}, {h}x{w}")
        if not overwrite and location_exists(path):
            raise StoreExistsError(f"{path} already exists; choose another path or remove it first")
        if transform is not None and len(transform) != 6:
            raise TileDataError(f"transform must be 6 GDAL-order floats, got {len(transform)}")
        grid_shape = tuple(grid_shape or (n_tiles, 1))
        shard = int(shard_tiles or choose_shard_tiles(n_tiles, h, w))
        if shard < 1:
            raise TileDataError(f"shard_tiles must be at least 1, got {shard}")
        group = zarr.open_group(zarr_store(path), mode="w", zarr_format=3)
        names = ["s1", *OUTPUT_ARRAYS] + (["s2_truth"] if with_truth else [])
        for name in names:
            cls._create_image_array(group, name, n_tiles, h, w, shard)
        per_tile = {"shape": (n_tiles,), "chunks": (min(shard, n_tiles),), "dimension_names": ("tile",)}
        for name, dtype in _TILE_META.items():
            group.create_array(name, dtype=dtype, fill_value=0, **per_tile)
        group.create_array("tile_id", dtype=str, **per_tile)
        group.create_array("valid_fraction", dtype="float32", fill_value=np.nan, **per_tile)
        sidecar = group.require_group("sidecar")
        for name in ("extra", "source"):
            sidecar.create_array(name, dtype=str, **per_tile)
        # One uncompressed record per shard: a write is one small atomic file/object, never a torn one.
        group.create_array("tracking", shape=(n_shards(n_tiles, shard),), chunks=(1,), dtype=str,
                           compressors=None, chunk_key_encoding=_SLASH_KEYS, dimension_names=("shard",))
        group.attrs.update({
            "format_version": FORMAT_VERSION,
            "shard_tiles": shard,
            "crs": crs,
            "transform": [float(v) for v in transform] if transform is not None else None,
            "tile_size": int(h),
            "tile_shape": [int(h), int(w)],
            "overlap": int(overlap),
            "grid_shape": [int(v) for v in grid_shape],
            "created": _now(),
            "axion_ray_version": __version__,
            **(attrs or {}),
        })
        store = cls(group, path, read_only=False)
        store.consolidate()
        return store

    @staticmethod
    def _create_image_array(group: zarr.Group, name: str, n_tiles: int, h: int, w: int, shard: int) -> None:
        bands = IMAGE_ARRAYS[name]
        group.create_array(
            name, shape=(n_tiles, bands, h, w), chunks=(1, bands, h, w), shards=(min(shard, n_tiles), bands, h, w),
            dtype="float32", fill_value=np.nan, dimension_names=_IMAGE_DIMS.get(name, _OPTICAL_DIMS),
            **_IMAGE_CODECS)
        group[name].attrs.update({"bands": list(S1_BANDS), "units": "dB"} if name == "s1" else
                                 {"bands": list(OPTICAL_BANDS), "units": "reflectance"})

    @classmethod
    def open(cls, path: str | Path, mode: str = "r+", *, check: bool = True) -> TileStore:
        """Open an existing store; `mode` is "r" (read only) or "r+".

        `check` validates every array's metadata against the contract (`check_layout`); the Ray read
        and write tasks, which open a store the driver has already checked, skip it (each metadata read
        is a request in object storage).

        Raises:
            StoreNotFoundError: nothing at `path`.
            StoreLayoutError: `path` is not an Axion-Ray tile store (e.g. Zarr v2, or missing arrays).
        """
        path = resolve_location(path)
        # One probe on the way in (every read and write task opens the store; in object storage each
        # probe is a request); the others only to explain a store that is not there.
        if not location_has(path, "zarr.json"):
            if not location_exists(path):
                raise StoreNotFoundError(f"no tile store at {path}; create one with `axion-ray synth`, "
                                         "`axion-ray import-npz` or `axion-ray ingest`")
            if location_is_file(path):
                raise StoreLayoutError(f"{path} is a file, not a Zarr tile store directory")
            hint = " (it looks like Zarr v2; Axion-Ray stores are Zarr v3)" if location_has(path, ".zgroup") else ""
            raise StoreLayoutError(f"{path} is not a Zarr v3 group{hint}")
        try:
            group = zarr.open_group(zarr_store(path, read_only=(mode == "r")), mode=mode, zarr_format=3,
                                    use_consolidated=False)
        except Exception as exc:  # zarr raises several types for unreadable metadata
            raise StoreLayoutError(f"{path} cannot be opened as a Zarr v3 group: {exc}") from exc
        missing_attrs = [a for a in _REQUIRED_ROOT_ATTRS if a not in group.attrs]
        if not missing_attrs and int(group.attrs["format_version"]) < FORMAT_VERSION:
            raise StoreLayoutError(f"{path} is a format-{group.attrs['format_version']} tile store (one file per "
                                   f"tile); convert it once with `axion-ray migrate {path}`")
        missing = []
        for name in ("s1", *OUTPUT_ARRAYS, *_TILE_META, "tracking"):
            try:
                if name not in group:
                    missing.append(name)
            except Exception as exc:  # a member whose zarr.json cannot be parsed
                raise StoreLayoutError(f"{path}: array {name} cannot be opened ({type(exc).__name__}: {exc}); "
                                       "the store is damaged") from exc
        if missing_attrs or missing:
            raise StoreLayoutError(
                f"{path} is a Zarr group but not an Axion-Ray tile store "
                f"(missing {', '.join(missing_attrs + missing)})")
        if int(group.attrs["format_version"]) > FORMAT_VERSION:
            raise StoreLayoutError(f"{path} has format_version {group.attrs['format_version']}; this "
                                   f"axion-ray ({__version__}) reads up to {FORMAT_VERSION}: upgrade axion-ray")
        try:
            store = cls(group, path, read_only=(mode == "r"))
        except StoreLayoutError:
            raise
        except Exception as exc:  # unreadable metadata of s1, or attrs of the wrong type
            raise StoreLayoutError(f"{path}: array s1 or the store's attributes cannot be read ({type(exc).__name__}: "
                                   f"{exc})") from exc
        if check:
            store.check_layout()
        return store

    @contextlib.contextmanager
    def _reading(self, name: str) -> Iterator[None]:
        """Turn a failure to read or decode `name` (a truncated chunk, bad metadata) into one clear error."""
        try:
            yield
        except (AxionRayError, KeyboardInterrupt):
            raise
        except Exception as exc:  # zarr, numcodecs and the codecs raise many types for damaged data
            raise StoreLayoutError(f"{self.path}: {name} cannot be read ({type(exc).__name__}: {str(exc)[:200]}); "
                                   "the store is damaged") from exc

    @contextlib.contextmanager
    def _whole_shards(self) -> Iterator[None]:
        """Let zarr encode or decode a shard's inner chunks in one batch instead of one at a time
        (`codec_pipeline.batch_size`, default 1): measured 1.4-1.5x on whole-shard writes and reads of
        128-tile shards (bench/RESULTS.md). Scoped to our calls, since zarr's config is process-global;
        the sharding codec reads it when it encodes, so it must be set around the call, not the open."""
        with zarr.config.set({"codec_pipeline.batch_size": max(1, self.shard_tiles)}):
            yield

    def _member(self, name: str) -> zarr.Array:
        try:
            return self._group[name]
        except Exception as exc:  # zarr raises several types for a missing or corrupt zarr.json
            raise StoreLayoutError(f"{self.path}: array {name} cannot be opened ({type(exc).__name__}: {exc}); "
                                   "the store is damaged") from exc

    def check_layout(self) -> None:
        """Every array against the store contract (rank, shape, dtype, one tile per chunk, dims).

        Raises:
            StoreLayoutError: naming the array and what is wrong.
        """
        n, h, w = self.n_tiles, self.height, self.width
        if len(self._group["s1"].shape) != 4:
            raise StoreLayoutError(f"{self.path}: array s1 has rank {len(self._group['s1'].shape)}, expected 4")
        for name, bands in IMAGE_ARRAYS.items():
            if name == "s2_truth" and not self.has(name):
                continue
            array = self._member(name)
            expected = (n, bands, h, w)
            if tuple(array.shape) != expected:
                raise StoreLayoutError(f"{self.path}: array {name} has shape {tuple(array.shape)}, expected {expected} "
                                       "(tiles, bands, y, x)")
            if array.dtype != np.float32:
                raise StoreLayoutError(f"{self.path}: array {name} has dtype {array.dtype}, expected float32")
            shards = (min(self.shard_tiles, n), bands, h, w)
            if tuple(array.chunks) != (1, bands, h, w) or tuple(array.shards or ()) != shards:
                raise StoreLayoutError(f"{self.path}: array {name} is chunked {tuple(array.chunks)} in shards "
                                       f"{array.shards}; the contract is one tile per chunk {(1, bands, h, w)} in "
                                       f"shards of {shards}")
        for name in (*_TILE_META, "tile_id"):
            if tuple(self._member(name).shape) != (n,):
                raise StoreLayoutError(f"{self.path}: array {name} has shape {tuple(self._member(name).shape)}, "
                                       f"expected ({n},)")
        tracking = self._member("tracking")
        if tuple(tracking.shape) != (self.n_shards,) or tuple(tracking.chunks) != (1,):
            raise StoreLayoutError(f"{self.path}: array tracking is {tuple(tracking.shape)} in chunks "
                                   f"{tuple(tracking.chunks)}, expected ({self.n_shards},) in chunks of (1,)")

    # ------------------------------------------------------------------ metadata
    @property
    def group(self) -> zarr.Group:
        """The underlying Zarr group, for users' own tools."""
        return self._group

    @property
    def arrays(self) -> tuple[str, ...]:
        return tuple(n for n in IMAGE_ARRAYS if n in self._group)

    def has(self, array: str) -> bool:
        with self._reading(array):
            return array in IMAGE_ARRAYS and array in self._group

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._group.attrs)

    def tile_meta(self, indices: Sequence[int] | np.ndarray | None = None) -> dict[str, np.ndarray]:
        """month, biome_code, tile_row, tile_col and tile_id for `indices` (all tiles when None)."""
        idx = np.arange(self.n_tiles) if indices is None else self._check_indices(indices)
        out = {}
        for name in (*_TILE_META, "tile_id"):
            with self._reading(name):
                out[name] = self._group[name][:] if indices is None else \
                    self._group[name].get_orthogonal_selection((idx,))
        ids = np.asarray(out["tile_id"], dtype=object)
        empty = np.flatnonzero(ids == "")
        if empty.size:  # never set: the default id, computed (a new store writes no per-tile data)
            ids[empty] = [self.default_tile_id(int(i)) for i in idx[empty]]
        out["tile_id"] = ids.astype(str)
        return out

    def default_tile_id(self, index: int) -> str:
        return f"tile_{index:0{max(4, len(str(self.n_tiles)))}d}"

    def set_tile_meta(self, **fields: Sequence[Any] | np.ndarray) -> None:
        """Set whole per-tile metadata columns (month, biome_code, tile_row, tile_col, tile_id).

        Raises:
            TileMetadataError: a length other than N, a month outside 0–12 or a biome outside 0–15.
        """
        for name, values in fields.items():
            if name not in (*_TILE_META, "tile_id"):
                raise TileMetadataError(f"unknown per-tile field {name!r}")
            values = np.asarray(values)
            if values.shape != (self.n_tiles,):
                raise TileMetadataError(f"{name} needs {self.n_tiles} values, got shape {values.shape}")
            if name == "month" and ((values < 0) | (values > 12)).any():
                bad = sorted(set(values[(values < 0) | (values > 12)].tolist()))
                raise TileMetadataError(f"month must be 1–12 (0 = unknown), got {bad}")
            if name == "biome_code" and ((values < 0) | (values >= N_BIOMES)).any():
                bad = sorted(set(values[(values < 0) | (values >= N_BIOMES)].tolist()))
                raise TileMetadataError(f"biome_code must be 0–{N_BIOMES - 1} (0 = unknown), got {bad}")
            self._group[name][:] = values.astype(str) if name == "tile_id" else values.astype(_TILE_META[name])

    @classmethod
    def pool_inputs(cls, sources: Sequence[TileStore], path: str | Path, *, batch: int = 256) -> TileStore:
        """A new store at `path` holding the inputs of every store in `sources` one after another —
        tile metadata, validity, `s1`, `s2_truth` — and none of their outputs: where a training chain
        writes its own stage outputs, never into the users' stores (which may hold another opt_v1).

        One source keeps its grid and georeferencing; a pool of several AOIs has neither (its tiles'
        ids say which AOI each came from). Tile sizes must agree.
        """
        sizes = {(s.height, s.width) for s in sources}
        if len(sizes) != 1:
            raise TileDataError(f"stores to pool must share one tile size, got {sorted(sizes)}")
        first = sources[0]
        single = len(sources) == 1
        n = sum(s.n_tiles for s in sources)
        out = cls.create(path, n, (first.height, first.width), crs=first.crs if single else None,
                         transform=first.attrs.get("transform") if single else None,
                         overlap=first.overlap if single else 0,
                         grid_shape=tuple(first.grid_shape) if single else None,
                         with_truth=all(s.has("s2_truth") for s in sources),
                         attrs={k: v for k, v in first.attrs.items() if k == "min_valid"})
        metas = [s.tile_meta() for s in sources]
        meta = {k: np.concatenate([m[k] for m in metas]) for k in _TILE_META}
        # zarr's variable-length strings → plain str; pooled ids say which AOI a tile came from
        meta["tile_id"] = [str(t) if single else f"aoi{i}_{t}" for i, m in enumerate(metas) for t in m["tile_id"]]
        out.set_tile_meta(**meta)
        out.set_valid_fraction(np.concatenate([s.valid_fractions() for s in sources]))
        offset = 0
        for source in sources:
            for name in ("s1", "s2_truth") if out.has("s2_truth") else ("s1",):
                for start in range(0, source.n_tiles, batch):
                    idx = np.arange(start, min(start + batch, source.n_tiles))
                    out.write(name, idx + offset, source.read(name, idx))
            out.mark_no_data(offset + np.flatnonzero(source.status(OUTPUT_ARRAYS[0]) == TileStatus.NO_DATA))
            offset += source.n_tiles
        return out

    def sidecar_extras(self) -> list[dict[str, Any]]:
        """Per tile, the NPZ sidecar keys we carry through untouched."""
        with self._reading("sidecar/extra"):
            return [json.loads(raw) if raw else {} for raw in self._group["sidecar/extra"][:]]

    def sidecar_sources(self) -> list[str]:
        """Per tile, the file it was imported from ("" when it was not imported)."""
        with self._reading("sidecar/source"):
            return [str(s) for s in self._group["sidecar/source"][:]]

    def set_sidecar_extra(self, extras: Sequence[dict[str, Any]]) -> None:
        if len(extras) != self.n_tiles:
            raise TileMetadataError(f"sidecar extras need {self.n_tiles} entries, got {len(extras)}")
        self._group["sidecar/extra"][:] = np.array([json.dumps(e) if e else "" for e in extras])

    def set_sidecar_sources(self, sources: Sequence[str]) -> None:
        if len(sources) != self.n_tiles:
            raise TileMetadataError(f"sidecar sources need {self.n_tiles} entries, got {len(sources)}")
        self._group["sidecar/source"][:] = np.array([str(s) for s in sources])

    def add_truth(self) -> None:
        """Create an empty `s2_truth` array in a store made without one (a reference attached later)."""
        self._check_writable()
        if "s2_truth" in self._group:
            return
        self._create_image_array(self._group, "s2_truth", self.n_tiles, self.height, self.width, self.shard_tiles)
        self.consolidate()

    @property
    def min_valid(self) -> float:
        """The valid fraction under which a tile is no data (the store's `min_valid` attr)."""
        from axion_ray.store.validity import DEFAULT_MIN_VALID

        return float(self._group.attrs.get("min_valid", DEFAULT_MIN_VALID))

    def valid_fractions(self) -> np.ndarray:
        """Per tile, the recorded fraction of valid `s1` pixels (NaN where not recorded)."""
        with self._reading("valid_fraction"):
            return self._group["valid_fraction"][:]

    def set_valid_fraction(self, fractions: Sequence[float] | np.ndarray) -> None:
        """Record every tile's valid fraction (one writer: ingest or import)."""
        self._check_writable()
        values = np.asarray(fractions, dtype=np.float32)
        if values.shape != (self.n_tiles,):
            raise TileMetadataError(f"valid fractions need {self.n_tiles} values, got shape {values.shape}")
        self._group["valid_fraction"][:] = values

    def mark_no_data(self, indices: Sequence[int] | np.ndarray, arrays: Sequence[str] = OUTPUT_ARRAYS) -> None:
        """Record tiles as no data for `arrays` (every output by default): they will never run."""
        self._check_writable()
        idx = self._check_indices(indices)
        for array in arrays:
            self._check_output(array)
        self.commit([OutputResult(array, no_data=idx) for array in arrays])

    def provenance(self, array: str) -> dict[str, Any]:
        self._check_array(array)
        with self._reading(f"{array} attributes"):
            return dict(self._group[array].attrs)

    def set_provenance(self, array: str, *, stage: str, model: str, checkpoint: str | None = None,
                       checkpoint_sha256: str | None = None, timesteps: int | None = None,
                       amp: bool = False, device: str = "cpu", **extra: Any) -> None:
        """Record who produced `array` (docs/ARCHITECTURE.md §3 provenance attrs)."""
        self._check_writable()
        self._check_array(array)
        self._group[array].attrs.update({
            "stage": stage, "model": model, "checkpoint": checkpoint, "checkpoint_sha256": checkpoint_sha256,
            "timesteps": timesteps, "amp": bool(amp), "device": device, "created": _now(),
            "axion_ray_version": __version__, **extra,
        })
        self.consolidate()

    def consolidate(self) -> None:
        """Refresh consolidated metadata so `xarray.open_zarr` opens without a warning.

        Our own opens never use it (`use_consolidated=False`), so stale metadata cannot mislead us.
        """
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Consolidated metadata")
            zarr.consolidate_metadata(self._group.store, zarr_format=3)

    # ------------------------------------------------------------------ tiles
    def read(self, array: str, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Read tiles `indices` of `array` as float32 (k, C, H, W)."""
        self._check_array(array)
        idx = self._check_indices(indices)
        if idx.size == 0:
            c = IMAGE_ARRAYS[array]
            return np.empty((0, c, self.height, self.width), dtype=np.float32)
        with self._reading(f"{array} (tiles {idx[:5].tolist()}{' …' if idx.size > 5 else ''})"), self._whole_shards():
            return self._read_tiles(self._group[array], idx)

    def _read_tiles(self, target: zarr.Array, idx: np.ndarray) -> np.ndarray:
        """Tiles `idx` (distinct, any order) of `target`: region reads where the tiles are dense
        in their shards, one integer selection for the rest (`shards.dense_spans`).

        A region also decodes the tiles between the wanted ones; when it cannot be read, the wanted
        tiles are read alone, so a damaged tile never fails a read that did not ask for it."""
        order = np.argsort(idx, kind="stable")
        ordered = idx[order]
        spans, rest = dense_spans(ordered, self.shard_tiles)
        out = np.empty((idx.size, *target.shape[1:]), dtype=target.dtype)
        for lo, hi, a, b in spans:
            try:
                out[order[a:b]] = target[lo:hi][ordered[a:b] - lo]
            except Exception:  # zarr and the codecs raise many types for damaged data; see above
                if hi - lo == b - a:
                    raise
                out[order[a:b]] = target.get_orthogonal_selection((ordered[a:b],))
        if rest.size:
            out[order[rest]] = target.get_orthogonal_selection((ordered[rest],))
        return out

    def iter_batches(self, array: str, indices: Sequence[int] | np.ndarray, batch_size: int = 64
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (indices, data) batches of `array` over `indices`."""
        idx = np.asarray(indices, dtype=np.int64)
        for start in range(0, idx.size, batch_size):
            chunk = idx[start:start + batch_size]
            yield chunk, self.read(array, chunk)

    def write(self, array: str, indices: Sequence[int] | np.ndarray, data: np.ndarray, *,
              proc_ms: float | Sequence[float] | None = None, mark_done: bool = True) -> None:
        """Write tiles and then, for output arrays, flip their status to done.

        Raises:
            TileDataError: wrong dtype, band count, tile shape or batch length.
        """
        self._check_writable()
        self._check_array(array)
        idx = self._check_indices(indices)
        data = self.validate_tiles(array, data, n=idx.size)
        if array in OUTPUT_ARRAYS and mark_done:
            ms = None if proc_ms is None else np.broadcast_to(np.asarray(proc_ms, dtype=np.float32), idx.shape)
            self.commit([OutputResult(array, done=idx, data=data, proc_ms=ms)])
        else:
            self._write_tiles(array, idx, data)

    def commit(self, results: Sequence[OutputResult]) -> None:
        """Write every result's done tiles' data, then each touched shard's record once: the sink's
        one call per block (all stages), and the door every status change goes through.

        Data before record: a crash in between leaves the tiles pending, never done without data."""
        self._check_writable()
        for result in results:
            self._check_output(result.array)
            if result.done.size:
                data = self.validate_tiles(result.array, result.data, n=result.done.size)
                self._write_tiles(result.array, self._check_indices(result.done), data)
        # Each part is split by shard once; then each touched shard's record is read and written once.
        changes: dict[int, list[tuple[str, np.ndarray, int, np.ndarray | None]]] = {}
        for result in results:
            ms = None if result.proc_ms is None else np.asarray(result.proc_ms, dtype=np.float32)
            for part, code, values in ((result.done, TileStatus.DONE, ms),
                                       (result.failed, TileStatus.FAILED, np.asarray(list(result.reasons), dtype=object)),
                                       (result.no_data, TileStatus.NO_DATA, None)):
                order = np.argsort(part, kind="stable")
                values = None if values is None else values[order]
                pos = 0
                for shard, tiles in shard_groups(part[order], self.shard_tiles):
                    mine = None if values is None else values[pos:pos + tiles.size]
                    pos += tiles.size
                    changes.setdefault(shard, []).append((result.array, tiles - shard * self.shard_tiles, code, mine))
        for shard in sorted(changes):
            record = self._record(shard)
            for array, local, code, values in changes[shard]:
                status, ms, failures = record.output(array)
                status[local] = code
                for k in local.tolist():
                    failures.pop(k, None)
                if code == TileStatus.DONE and values is not None:
                    ms[local] = values
                if code == TileStatus.FAILED:
                    failures.update(zip(local.tolist(), (str(r) for r in values)))
            self._write_record(shard, record)

    def _write_tiles(self, array: str, idx: np.ndarray, data: np.ndarray) -> None:
        """Write tiles shard by shard: one region write per shard (zarr-python 3.1 cannot set integer
        selections on a sharded array); where the tiles do not fill their span, the span is read and
        merged first — this task is the shard's only writer (store/shards.py)."""
        if idx.size == 0:
            return
        order = np.argsort(idx, kind="stable")
        idx, data = idx[order], data[order]
        target = self._group[array]
        pos = 0
        with self._whole_shards():
            for _, part in shard_groups(idx, self.shard_tiles):
                chunk = data[pos:pos + part.size]
                pos += part.size
                lo, hi = int(part[0]), int(part[-1]) + 1
                if hi - lo == part.size:
                    target[lo:hi] = chunk
                else:
                    with self._reading(f"{array} (tiles {lo}..{hi - 1})"):
                        region = target[lo:hi]
                    region[part - lo] = chunk
                    target[lo:hi] = region

    def mark_failed(self, array: str, indices: Sequence[int] | np.ndarray, reasons: str | Sequence[str]) -> None:
        """Record tiles as failed with a reason each; their data is left as it was."""
        self._check_writable()
        self._check_output(array)
        idx = self._check_indices(indices)
        reasons = [reasons] * idx.size if isinstance(reasons, str) else list(reasons)
        if len(reasons) != idx.size:
            raise TileDataError(f"{idx.size} tiles but {len(reasons)} failure reasons")
        self.commit([OutputResult(array, failed=idx, reasons=reasons)])

    def reset(self, array: str, indices: Sequence[int] | np.ndarray | None = None) -> None:
        """Mark tiles pending again (status only: data stays until overwritten)."""
        self._check_writable()
        self._check_output(array)
        if indices is None:  # every written shard, decoded in one read
            shards: dict[int, tuple[ShardRecord, np.ndarray | None]] = {s: (r, None) for s, r in self._records().items()}
        else:
            idx = self._check_indices(indices)
            shards = {s: (self._record(s), part) for s, part in shard_groups(idx, self.shard_tiles)}
        for shard, (record, part) in shards.items():
            if not record.has(array):
                continue
            status, ms, failures = record.output(array)
            local = slice(None) if part is None else part - shard * self.shard_tiles
            status[local] = TileStatus.PENDING
            ms[local] = np.nan
            for k in (list(failures) if part is None else local.tolist()):
                failures.pop(k, None)
            self._write_record(shard, record)

    # ------------------------------------------------------------------ tracking records
    def _shard_size(self, shard: int) -> int:
        return min(self.shard_tiles, self.n_tiles - shard * self.shard_tiles)

    def _record(self, shard: int) -> ShardRecord:
        with self._reading(f"tracking record of shard {shard}"):
            return ShardRecord.decode(self._shard_size(shard), str(self._group["tracking"][shard]))

    def _write_record(self, shard: int, record: ShardRecord) -> None:
        self._group["tracking"][shard:shard + 1] = np.array([record.encode()])

    def _records(self) -> dict[int, ShardRecord]:
        """Every written shard's record: one plain read each (a store's progress costs O(written
        shards)); shards never written have no record and are pending everywhere."""
        raw = self._raw_records()
        out = {}
        for shard, data in raw.items():
            if shard >= self.n_shards:
                continue
            try:
                out[shard] = ShardRecord.decode(self._shard_size(shard), decode_vlen_utf8(data))
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
                raise StoreLayoutError(f"{self.path}: the tracking record of shard {shard} (tiles "
                                       f"{shard * self.shard_tiles}..{shard * self.shard_tiles + self._shard_size(shard) - 1}) "
                                       f"cannot be read ({exc}); the store is damaged") from exc
        return out

    def _raw_records(self) -> dict[int, bytes]:
        if not is_url(self.path):
            folder = Path(self.path) / "tracking" / "c"
            out = {}
            if folder.is_dir():
                for entry in os.scandir(folder):
                    if entry.name.isdigit():
                        with open(entry.path, "rb") as handle:
                            out[int(entry.name)] = handle.read()
            return out
        fs, root = filesystem(self.path)
        prefix = f"{root}/tracking/c"
        try:
            paths = [p for p in fs.ls(prefix, detail=False) if p.rsplit("/", 1)[-1].isdigit()]
        except FileNotFoundError:
            return {}
        return {int(p.rsplit("/", 1)[-1]): data for p, data in fs.cat(paths).items()} if paths else {}

    def tracking(self, arrays: Sequence[str] = OUTPUT_ARRAYS) -> dict[str, Tracking]:
        """Status, proc_ms and failure reasons of every tile for `arrays`, in one read of the records."""
        for array in arrays:
            self._check_output(array)
        out = {a: Tracking(np.zeros(self.n_tiles, np.uint8), np.full(self.n_tiles, np.nan, np.float32), {})
               for a in arrays}
        for shard, record in self._records().items():
            lo = shard * self.shard_tiles
            for array in arrays:
                if record.has(array):
                    status, ms, failures = record.output(array)
                    out[array].status[lo:lo + status.size] = status
                    out[array].proc_ms[lo:lo + ms.size] = ms
                    out[array].failures.update({lo + k: v for k, v in failures.items()})
        for array, t in out.items():
            bad = np.flatnonzero(t.status > max(TileStatus))
            if bad.size:
                raise StoreLayoutError(f"{self.path}: the status of {array} holds values outside "
                                       f"{[int(s) for s in TileStatus]} (tiles {bad[:5].tolist()}); the store is damaged")
        return out

    def status(self, array: str) -> np.ndarray:
        """Status code of every tile for output `array` (uint8, N)."""
        return self.tracking([array])[array].status

    def proc_ms(self, array: str) -> np.ndarray:
        return self.tracking([array])[array].proc_ms

    def indices_with_status(self, array: str, status: TileStatus) -> np.ndarray:
        return np.flatnonzero(self.status(array) == status)

    def failures(self, array: str, status: np.ndarray | None = None) -> dict[int, str]:
        """Reason of every tile currently failed for `array`."""
        t = self.tracking([array])[array]
        return _failed_reasons(t.status if status is None else status, t.failures)

    def counts(self, array: str, tracking: Tracking | None = None) -> ArrayCounts:
        t = tracking or self.tracking([array])[array]
        status = t.status
        return ArrayCounts(
            array=array, total=self.n_tiles,
            pending=int((status == TileStatus.PENDING).sum()), done=int((status == TileStatus.DONE).sum()),
            failed=int((status == TileStatus.FAILED).sum()),
            failures=_failed_reasons(status, t.failures),
            no_data=int((status == TileStatus.NO_DATA).sum()),
        )

    def summary(self) -> dict[str, Any]:
        """Everything `axion-ray status` shows, as JSON-ready data (one read of the records)."""
        tracking = self.tracking()
        return {
            "path": self.path, "n_tiles": self.n_tiles, "tile_shape": [self.height, self.width],
            "overlap": self.overlap, "grid_shape": list(self.grid_shape), "crs": self.crs,
            "shard_tiles": self.shard_tiles, "n_shards": self.n_shards,
            "inputs": [a for a in ("s1", "s2_truth") if self.has(a)],
            "arrays": {name: self.counts(name, tracking[name]).to_dict() for name in OUTPUT_ARRAYS},
        }

    # ------------------------------------------------------------------ validation
    def validate_tiles(self, array: str, data: np.ndarray, n: int | None = None) -> np.ndarray:
        """Check a (k, C, H, W) batch against this store and return it as float32.

        Raises:
            TileDataError: naming what is wrong and what was expected.
        """
        if not isinstance(data, np.ndarray):
            data = np.asarray(data)
        if not np.issubdtype(data.dtype, np.floating):
            hint = " (Sentinel-2 DN? divide by 10000)" if np.issubdtype(data.dtype, np.integer) and array != "s1" else ""
            raise TileDataError(f"{array} needs floating-point data, got dtype {data.dtype}{hint}")
        bands = IMAGE_ARRAYS[array]
        expected = (n if n is not None else data.shape[0] if data.ndim else 0, bands, self.height, self.width)
        if data.ndim != 4:
            raise TileDataError(f"{array} batch must be 4-D (tiles, bands, H, W) = {expected}, got shape {data.shape}")
        if data.shape[1] != bands:
            raise TileDataError(f"{array} needs {bands} bands {list(S1_BANDS if array == 's1' else OPTICAL_BANDS)}, "
                                f"got {data.shape[1]}")
        if data.shape[2:] != (self.height, self.width):
            raise TileDataError(f"{array} tiles must be {self.height}x{self.width} px, got {data.shape[2]}x{data.shape[3]}")
        if n is not None and data.shape[0] != n:
            raise TileDataError(f"{n} tile indices but {data.shape[0]} tiles of {array} data")
        return data.astype(np.float32, copy=False)

    def _check_array(self, array: str) -> None:
        if not self.has(array):
            known = ", ".join(self.arrays)
            raise TileDataError(f"store {self.path} has no array {array!r} (it has {known})")

    def _check_output(self, array: str) -> None:
        if array not in OUTPUT_ARRAYS:
            raise TileDataError(f"{array!r} is not an output array; outputs are {', '.join(OUTPUT_ARRAYS)}")

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreLayoutError(f"store {self.path} was opened read-only")

    def _check_indices(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_tiles):
            raise TileDataError(f"tile indices must lie in 0..{self.n_tiles - 1}, got {idx.min()}..{idx.max()}")
        if np.unique(idx).size != idx.size:
            raise TileDataError("tile indices must not repeat within one read or write")
        return idx

    def __repr__(self) -> str:
        return f"TileStore({self.path!r}, n_tiles={self.n_tiles}, tile={self.height}x{self.width})"


def _failed_reasons(status: np.ndarray, failures: dict[int, str]) -> dict[int, str]:
    """Reason of every tile whose status is failed ("unknown" where none was recorded)."""
    return {int(i): failures.get(int(i)) or "unknown" for i in np.flatnonzero(status == TileStatus.FAILED)}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
