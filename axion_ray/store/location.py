"""Where a tile store lives: a local directory or an object-store URL (`s3://`, `gs://`, `az://`, …).

One home for "path or URL": every command that takes a store passes it through `resolve_location`, and
`TileStore` opens it with `zarr_store`. Local paths (and `file://` URLs) use Zarr's LocalStore, whose
chunk writes are atomic (temp file + rename); URLs use Zarr's FsspecStore directly — no local staging
copy — where each chunk is one object PUT, atomic by the object store's own semantics.

Credentials and endpoints come from the usual places, so nothing secret sits in a command line: the
provider's environment (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL_S3`, `GOOGLE_APPLICATION_CREDENTIALS`,
instance roles) or fsspec's own configuration (`FSSPEC_S3='{"endpoint_url": …}'`). On a cluster, put
them in the job's `runtime_env` so every worker sees the same store.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

import zarr

from axion_ray.errors import StoreLayoutError

LOCAL_SCHEMES = ("", "file", "local")


def is_url(location: str | Path) -> bool:
    """True for a remote URL (`s3://b/k`), False for a local path or a `file://` URL."""
    scheme = urlparse(str(location)).scheme
    # A one-letter scheme is a Windows drive ("C:\\…"), not a protocol.
    return "://" in str(location) and len(scheme) > 1 and scheme not in LOCAL_SCHEMES


def resolve_location(location: str | Path) -> str:
    """A store location every Ray worker can open: an absolute local path, or the URL unchanged.

    Absolute because Ray workers (Train workers especially) do not share the driver's working directory.
    """
    text = str(location)
    if is_url(text):
        return text.rstrip("/")
    if text.startswith("file://"):
        parsed = urlparse(text)
        text = unquote(parsed.netloc + parsed.path)
    return str(Path(text).resolve())


def _protocol_error(url: str, exc: Exception) -> StoreLayoutError:
    scheme = urlparse(url).scheme
    return StoreLayoutError(f"cannot open {url}: {exc} (object stores need the fsspec package for "
                            f"'{scheme}://', e.g. `pip install s3fs` or `pip install gcsfs`)")


def filesystem(url: str):
    """(fsspec filesystem, path) for `url`; a clear error for an unknown protocol or a missing package."""
    import fsspec

    try:
        return fsspec.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # an unknown protocol, or its package (s3fs, gcsfs…) missing
        raise _protocol_error(url, exc) from exc


def location_exists(location: str) -> bool:
    """Whether anything (a directory or objects under the prefix) is at `location`."""
    if not is_url(location):
        return Path(location).exists()
    fs, path = filesystem(location)
    return bool(fs.exists(path))


def location_has(location: str, key: str) -> bool:
    """Whether the store at `location` holds the object/file `key` (e.g. "zarr.json")."""
    if not is_url(location):
        return (Path(location) / key).exists()
    fs, path = filesystem(location)
    return bool(fs.exists(f"{path}/{key}"))


def location_is_file(location: str) -> bool:
    if not is_url(location):
        return Path(location).is_file()
    fs, path = filesystem(location)
    return bool(fs.isfile(path))


def zarr_store(location: str, *, read_only: bool = False) -> zarr.abc.store.Store:
    """The Zarr store object for `location` (already resolved)."""
    if not is_url(location):
        return zarr.storage.LocalStore(location, read_only=read_only)
    try:
        return zarr.storage.FsspecStore.from_url(location, read_only=read_only)
    except (ImportError, ValueError) as exc:
        raise _protocol_error(location, exc) from exc


def safe_file_name(name: str, what: str) -> str:
    """`name` when it is a plain file name (no directory parts, not `.`/`..`, no NUL, not hidden by a
    leading dash); a name that comes from data never becomes a path unchecked."""
    from axion_ray.errors import UnsafeNameError

    text = str(name)
    if (not text or text in (".", "..") or "/" in text or "\\" in text or "\x00" in text or text.startswith("-")
            or len(text) > 200 or text != text.strip()):
        raise UnsafeNameError(f"{what} {text!r} is not a plain file name (no '/', '\\', '..', leading '-' or "
                              "surrounding spaces); rename it in the data")
    return text


def check_output(out: str | Path, inputs: tuple[str | Path, ...] = (), *, overwrite: bool = False,
                 may_contain_inputs: bool = False, what: str = "output") -> str:
    """Resolve an output location and refuse what would destroy data: an output that is, contains or
    lies inside an input; one under a file; and one that exists, unless `overwrite`.

    `may_contain_inputs`: the output is a directory that only gains new files of its own (an NPZ
    export), so an input below it is safe; being or lying inside an input is still refused."""
    from axion_ray.errors import OutputPathError

    resolved = resolve_location(out)
    for source in inputs:
        src = resolve_location(source)
        a, b = resolved.rstrip("/"), src.rstrip("/")
        if a == b or a.startswith(b + "/") or (b.startswith(a + "/") and not may_contain_inputs):
            raise OutputPathError(f"{what} {resolved} is, contains or lies inside the input {src}; choose another path")
    if not is_url(resolved):
        path = Path(resolved)
        for parent in path.parents:
            if parent.exists() and not parent.is_dir():
                raise OutputPathError(f"{what} {resolved} lies under {parent}, which is a file")
    if not overwrite and location_exists(resolved):
        raise OutputPathError(f"{what} {resolved} already exists; choose another path or pass --overwrite")
    return resolved
