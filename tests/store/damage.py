"""Damaging one tile of a sharded store on disk, as a bad disk or a cut-off copy would."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def damage_inner_chunk(store, array: str, tile: int) -> None:
    """Overwrite `tile`'s inner chunk of `array` with 0xff bytes; the shard's index (at its end, one
    (offset, nbytes) pair per tile and a CRC32C) stays intact, so only that tile fails to decode."""
    per_shard = store.shard_tiles
    shard = Path(store.path) / array / "c" / str(tile // per_shard) / "0" / "0" / "0"
    raw = bytearray(shard.read_bytes())
    index = np.frombuffer(bytes(raw[-(per_shard * 16 + 4):-4]), "<u8").reshape(per_shard, 2)
    offset, nbytes = (int(v) for v in index[tile % per_shard])
    raw[offset:offset + nbytes] = b"\xff" * nbytes
    shard.write_bytes(bytes(raw))
