"""Shards: the unit of writing in a tile store (docs/STORE.md).

A shard is a contiguous block of `shard_tiles` tiles. Every image array stores one shard per file or
object (Zarr v3's sharding codec, ZEP 2) with one tile per inner chunk, so a tile still reads alone;
per-tile status, timing and failure reasons live in one small *record* per shard (the `tracking` array,
one element per shard), written after the shard's data. Reading a store's progress therefore costs one
read per written shard, not one per tile, and a 10⁶-tile store is ~10⁴ objects per array, not 10⁶.

A shard has exactly one writer at a time: the pipeline's read tasks hold whole shards and a block
reaches the sink whole (distributed/_datasource.py, _datasink.py); outside a run only the lease holder
writes. So the read-modify-write of a shard (zarr-python #3683) never races.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import numpy as np

#: A shard of the largest image array (4 bands, float32) aims at this many bytes: large enough that a
#: 10⁶-tile AOI is ~10⁴ objects per array, small enough that a Ray block holding every array of a
#: shard (inputs, three outputs, Stage 1's 12-band S2L2A: ~8 such arrays) stays well under Ray Data's
#: 128 MiB target block size, so Ray never splits one.
SHARD_TARGET_BYTES = 8 * 2**20
#: At least this many shards when the store is big enough: a small store still spreads over the
#: actors of a pool (each shard is at most one read task).
MIN_SHARDS = 64
RECORD_VERSION = 1


def choose_shard_tiles(n_tiles: int, height: int, width: int, bands: int = 4) -> int:
    """Tiles per shard: the largest power of two whose 4-band shard fits `SHARD_TARGET_BYTES` and that
    leaves at least `MIN_SHARDS` shards (at least 1). 64 px tiles: 512 per shard (8 MiB); 224 px: 8
    per shard (6.1 MiB); 10⁶ tiles of 64 px: 2,048 shards."""
    per_tile = bands * height * width * 4
    by_size = max(1, SHARD_TARGET_BYTES // per_tile)
    by_count = max(1, n_tiles // MIN_SHARDS)
    limit = min(by_size, by_count)
    return 1 << (int(limit).bit_length() - 1)


def n_shards(n_tiles: int, shard_tiles: int) -> int:
    return -(-n_tiles // shard_tiles)


def shard_groups(tiles: np.ndarray, shard_tiles: int) -> Iterator[tuple[int, np.ndarray]]:
    """(shard, its tiles) for sorted tile indices, in shard order."""
    tiles = np.sort(np.asarray(tiles, dtype=np.int64))
    if tiles.size == 0:
        return
    shards = tiles // shard_tiles
    cuts = np.flatnonzero(np.diff(shards)) + 1
    for part in np.split(tiles, cuts):
        yield int(part[0] // shard_tiles), part


def dense_spans(tiles: np.ndarray, shard_tiles: int) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    """Split sorted, distinct tile indices for reading: `(lo, hi, a, b)` spans, each tiles lo..hi-1 read as one
    region of which positions a..b-1 of `tiles` are wanted, and the positions of the rest.

    A shard joins a span when its requested tiles fill at least half of their range (so a region read
    decodes at most twice what was asked); touching spans merge. zarr's integer selection decodes a
    sharded array's inner chunks one by one — 5x the CPU of a region read of the same 64 tiles,
    measured (bench/RESULTS.md) — so the pipeline's whole-shard reads take the region path."""
    spans: list[tuple[int, int, int, int]] = []
    rest: list[np.ndarray] = []
    pos = 0
    for _, part in shard_groups(tiles, shard_tiles):
        lo, hi = int(part[0]), int(part[-1]) + 1
        if 2 * part.size >= hi - lo:
            if spans and spans[-1][1] == lo:
                spans[-1] = (spans[-1][0], hi, spans[-1][2], pos + part.size)
            else:
                spans.append((lo, hi, pos, pos + part.size))
        else:
            rest.append(np.arange(pos, pos + part.size))
        pos += part.size
    return spans, (np.concatenate(rest) if rest else np.empty(0, np.int64))


def pack_shards(tiles: np.ndarray, shard_tiles: int, min_tiles: int) -> list[np.ndarray]:
    """Whole shards of `tiles` packed, in order, into groups of at least `min_tiles` tiles (the last
    may hold fewer): the pipeline's read tasks. A shard is never split between two groups."""
    groups: list[np.ndarray] = []
    current: list[np.ndarray] = []
    size = 0
    for _, part in shard_groups(tiles, shard_tiles):
        current.append(part)
        size += part.size
        if size >= min_tiles:
            groups.append(np.concatenate(current))
            current, size = [], 0
    if current:
        groups.append(np.concatenate(current))
    return groups


# ---------------------------------------------------------------------- records
class ShardRecord:
    """Per-tile status, processing time and failure reason of every output, for one shard.

    JSON: {"v": 1, "outputs": {"opt_v1": {"status": "0121…", "proc_ms": <base64 float32 LE>,
    "failures": {"<tile within shard>": reason}}}}. An output not in the record is pending everywhere.
    """

    def __init__(self, n: int, outputs: dict[str, dict[str, Any]] | None = None):
        self.n = n
        self._outputs: dict[str, tuple[np.ndarray, np.ndarray, dict[int, str]]] = {}
        for name, raw in (outputs or {}).items():
            status = np.frombuffer(raw["status"].encode("ascii"), np.uint8) - ord("0")
            ms = np.frombuffer(base64.b64decode(raw["proc_ms"]), "<f4").astype(np.float32) if raw.get("proc_ms") \
                else np.full(n, np.nan, np.float32)
            if status.size != n or ms.size != n:
                raise ValueError(f"record of {name} holds {status.size} tiles, expected {n}")
            self._outputs[name] = (status.copy(), ms.copy(), {int(k): str(v) for k, v in raw.get("failures", {}).items()})

    @classmethod
    def decode(cls, n: int, text: str) -> ShardRecord:
        data = json.loads(text) if text else {}
        if data and int(data.get("v", 0)) > RECORD_VERSION:
            raise ValueError(f"record version {data.get('v')} is newer than {RECORD_VERSION}")
        return cls(n, data.get("outputs", {}))

    def encode(self) -> str:
        outputs = {}
        for name, (status, ms, failures) in self._outputs.items():
            outputs[name] = {"status": (status + ord("0")).astype(np.uint8).tobytes().decode("ascii"),
                             "proc_ms": base64.b64encode(ms.astype("<f4").tobytes()).decode("ascii"),
                             "failures": {str(k): v for k, v in sorted(failures.items())}}
        return json.dumps({"v": RECORD_VERSION, "outputs": outputs}, separators=(",", ":"))

    def output(self, name: str) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
        """(status uint8, proc_ms float32, failures by tile within the shard); created pending."""
        if name not in self._outputs:
            self._outputs[name] = (np.zeros(self.n, np.uint8), np.full(self.n, np.nan, np.float32), {})
        return self._outputs[name]

    def has(self, name: str) -> bool:
        return name in self._outputs


def decode_vlen_utf8(raw: bytes) -> str:
    """The one string of a one-element chunk of a Zarr v3 `string` array with the `vlen-utf8` codec and
    no compressor: a little-endian u32 count, then per item a u32 length and the UTF-8 bytes.

    We read the `tracking` chunks' bytes ourselves, not through zarr: zarr's per-chunk machinery costs
    ~200 µs a chunk (4,096 records: 0.8 s), a plain read ~12 µs (measured, bench/store_scale.py)."""
    if len(raw) < 8 or int.from_bytes(raw[:4], "little") != 1:
        raise ValueError(f"not a one-element vlen-utf8 chunk ({len(raw)} bytes)")
    length = int.from_bytes(raw[4:8], "little")
    if len(raw) < 8 + length:
        raise ValueError(f"truncated vlen-utf8 chunk ({len(raw)} bytes, item of {length})")
    return raw[8:8 + length].decode("utf-8")
