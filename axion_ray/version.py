"""The package version, in a leaf module: the store's metadata and the CLI read it without importing
the package's lazy top level (which would close an import cycle)."""

__version__ = "0.1.0"
