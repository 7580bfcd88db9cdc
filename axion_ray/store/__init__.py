"""Tile store (Zarr v3), NPZ import/export and synthetic AOIs."""

from axion_ray.store.tile_store import OUTPUT_ARRAYS, ArrayCounts, TileStatus, TileStore

__all__ = ["OUTPUT_ARRAYS", "ArrayCounts", "TileStatus", "TileStore"]
