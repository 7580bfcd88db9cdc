"""Axion-Ray: SAR-to-optical translation and inspection classifiers on Ray.

The small public API; heavy modules (torch, terratorch, ray) load only when used.
"""

from axion_ray.version import __version__

__all__ = ["__version__", "TileStore", "TileStatus"]


def __getattr__(name: str):
    # Lazy: `import axion_ray` must stay cheap for the CLI's --help and status.
    if name in ("TileStore", "TileStatus"):
        from axion_ray.store import tile_store

        return getattr(tile_store, name)
    raise AttributeError(f"module 'axion_ray' has no attribute {name!r}")
