"""Tile store (Zarr v3), NPZ import/export and synthetic AOIs.

The names below load on first use (PEP 562): a stage actor imports `store.validity` but never opens
a store, and the eager zarr import (~0.2 s) sat on the path to its first tile.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from axion_ray.store.tile_store import OUTPUT_ARRAYS, ArrayCounts, TileStatus, TileStore

__all__ = ["OUTPUT_ARRAYS", "ArrayCounts", "TileStatus", "TileStore"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from axion_ray.store import tile_store

        return getattr(tile_store, name)
    raise AttributeError(f"module 'axion_ray.store' has no attribute {name!r}")
