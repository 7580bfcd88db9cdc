"""User-facing errors. Each subclasses a builtin and says how to fix the problem.

The CLI turns any `AxionRayError` into exit code 2 and its message on one line of stderr.
"""

from __future__ import annotations


class AxionRayError(Exception):
    """Marker base: a mistake in the user's input, reported without a traceback."""


class StoreNotFoundError(AxionRayError, FileNotFoundError):
    """The tile store path does not exist."""


class StoreExistsError(AxionRayError, FileExistsError):
    """Refusing to overwrite an existing store."""


class StoreLayoutError(AxionRayError, ValueError):
    """A path is a Zarr store, or not, but not one in the Axion-Ray tile-store layout."""


class TileDataError(AxionRayError, ValueError):
    """Tile data with the wrong shape, dtype, band count or non-finite values."""


class TileMetadataError(AxionRayError, ValueError):
    """A month, biome code or other per-tile field out of range."""


class NpzFormatError(AxionRayError, ValueError):
    """An Axion-Sat NPZ tile directory that cannot be read as documented (docs/ARCHITECTURE.md §4)."""


class ConfigError(AxionRayError, ValueError):
    """A configuration value or file that cannot be used."""


class WeightsNotFoundError(AxionRayError, FileNotFoundError):
    """Pretrained weights are not available locally; nothing is downloaded at run time."""


class CheckpointError(AxionRayError, ValueError):
    """A weights or checkpoint file that exists but cannot be used."""


class DeviceError(AxionRayError, RuntimeError):
    """A device was asked for that this machine does not have."""


class ImageDataError(AxionRayError, ValueError):
    """An image-folder dataset that cannot be used: a missing split, an empty or unknown class."""


class StoreBusyError(AxionRayError, RuntimeError):
    """Another run holds the store's lease (one run owns a store at a time)."""


class UnsafeNameError(AxionRayError, ValueError):
    """A name from the data (a tile id, a sidecar name) that would not be a plain file name."""


class OutputPathError(AxionRayError, ValueError):
    """An output that exists (without --overwrite), or that is, contains or lies inside an input."""
