"""`axion-ray migrate STORE`: a format-1 tile store (one file per tile per array, per-tile status
arrays) converted to the sharded format 2 (store/tile_store.py, docs/STORE.md).

The new store is written beside the old one and only then put in its place; the old one is kept, renamed
`STORE.format1`, so nothing the user had is lost (delete it once the new one serves). An object-store
URL cannot be renamed: give `--to` a new URL instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from axion_ray.errors import OutputPathError, StoreLayoutError, StoreNotFoundError
from axion_ray.store.location import check_output, is_url, location_has, resolve_location, zarr_store
from axion_ray.store.shards import ShardRecord, shard_groups
from axion_ray.store.tile_store import _TILE_META, FORMAT_VERSION, IMAGE_ARRAYS, OUTPUT_ARRAYS, TileStatus, TileStore

#: Root attributes the new store sets itself.
_OWN_ATTRS = ("format_version", "shard_tiles", "tile_size", "tile_shape", "overlap", "grid_shape", "crs",
              "transform", "created", "axion_ray_version")


def migrate_store(path: str | Path, to: str | Path | None = None, *, batch_tiles: int | None = None,
                  say: Callable[[str], None] = print) -> str:
    """Convert the format-1 store at `path`; returns where the format-2 store now is.

    Raises:
        StoreNotFoundError / StoreLayoutError: nothing at `path`, or not a format-1 tile store.
        OutputPathError: `to` (or the place the old store would move to) exists.
    """
    src = resolve_location(path)
    if not location_has(src, "zarr.json"):
        raise StoreNotFoundError(f"no tile store at {src}")
    try:
        old = zarr.open_group(zarr_store(src, read_only=True), mode="r", zarr_format=3, use_consolidated=False)
    except Exception as exc:  # an array, or unreadable metadata: zarr raises several types
        raise StoreLayoutError(f"{src} is not a format-1 Axion-Ray tile store ({type(exc).__name__}: {exc})") from exc
    version = int(old.attrs.get("format_version", 0))
    if version == FORMAT_VERSION:
        raise StoreLayoutError(f"{src} is already a format-{FORMAT_VERSION} store; nothing to migrate")
    if version != 1 or "s1" not in old:
        raise StoreLayoutError(f"{src} is not a format-1 Axion-Ray tile store (format_version {version or 'missing'})")
    if to is None and is_url(src):
        raise OutputPathError(f"{src} is in object storage and cannot be renamed; give --to a new URL for the "
                              "converted store")
    backup = f"{src}.format1"
    if to is None:
        check_output(backup, (src,), what="the old store's new name")
        dest = check_output(f"{src}.migrating-{os.getpid()}", (src,), what="the converted store")
    else:
        dest = check_output(to, (src,), what="the converted store")

    n, bands, h, w = (int(v) for v in old["s1"].shape)
    attrs = dict(old.attrs)
    new = TileStore.create(dest, n, (h, w), crs=attrs.get("crs"), transform=attrs.get("transform"),
                           overlap=int(attrs.get("overlap", 0)), grid_shape=tuple(attrs["grid_shape"]),
                           with_truth="s2_truth" in old,
                           attrs={k: v for k, v in attrs.items() if k not in _OWN_ATTRS})
    step = int(batch_tiles or max(new.shard_tiles, 256))
    for name in IMAGE_ARRAYS:
        if name not in old:
            continue
        new.group[name].attrs.update(dict(old[name].attrs))  # provenance of the outputs
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            new._write_tiles(name, np.arange(lo, hi), old[name][lo:hi])
    meta = {k: old[k][:] for k in _TILE_META if k in old}
    if "tile_id" in old:
        meta["tile_id"] = np.array([str(t) for t in old["tile_id"][:]])
    new.set_tile_meta(**meta)
    if "valid_fraction" in old:
        new.set_valid_fraction(old["valid_fraction"][:])
    for name in ("extra", "source"):
        if f"sidecar/{name}" in old:
            new.group[f"sidecar/{name}"][:] = np.array([str(t) for t in old[f"sidecar/{name}"][:]])
    _migrate_tracking(old, new)
    new.consolidate()
    if to is None:
        os.rename(src, backup)
        os.rename(dest, src)
        dest = src
        say(f"converted {src} to format {FORMAT_VERSION} ({n} tiles, {new.n_shards} shards of {new.shard_tiles}); "
            f"the format-1 store is kept at {backup}")
    else:
        say(f"converted {src} to format {FORMAT_VERSION} at {dest} ({n} tiles, {new.n_shards} shards of "
            f"{new.shard_tiles}); {src} is unchanged")
    return dest


def _migrate_tracking(old: zarr.Group, new: TileStore) -> None:
    """Per-tile status, proc_ms and failure arrays → one record per shard that has any non-pending tile."""
    columns = {}
    for name in OUTPUT_ARRAYS:
        if f"status/{name}" not in old:
            continue
        status = np.asarray(old[f"status/{name}"][:], np.uint8)
        if (status > max(TileStatus)).any():
            raise StoreLayoutError(f"status/{name} of the format-1 store holds values outside "
                                   f"{[int(s) for s in TileStatus]}; the store is damaged")
        ms = np.asarray(old[f"proc_ms/{name}"][:], np.float32) if f"proc_ms/{name}" in old else None
        failed = np.flatnonzero(status == TileStatus.FAILED)
        reasons = old[f"failure/{name}"].get_orthogonal_selection((failed,)) if failed.size and \
            f"failure/{name}" in old else [""] * failed.size
        columns[name] = (status, ms, dict(zip(failed.tolist(), (str(r) for r in reasons))))
    busy = np.flatnonzero(np.any([c[0] != TileStatus.PENDING for c in columns.values()], axis=0)) if columns \
        else np.zeros(0, np.int64)
    for shard, _ in shard_groups(busy, new.shard_tiles):
        lo = shard * new.shard_tiles
        size = new._shard_size(shard)
        record = ShardRecord(size)
        for name, (status, ms, failures) in columns.items():
            if not (status[lo:lo + size] != TileStatus.PENDING).any():
                continue
            r_status, r_ms, r_failures = record.output(name)
            r_status[:] = status[lo:lo + size]
            if ms is not None:
                r_ms[:] = ms[lo:lo + size]
            r_failures.update({i - lo: failures[i] or "unknown" for i in range(lo, lo + size) if i in failures})
        new._write_record(shard, record)
