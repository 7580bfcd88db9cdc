"""Ray Data datasource over a tile store: reads the given tiles' arrays, whole shards per task.

The caller decides which tiles (the pipeline: those some requested stage still has to do; training:
those with a Stage 1 output and a truth) and which arrays. Read tasks hold whole shards
(`store.shards.pack_shards`: the requested tiles of consecutive shards, at least `tiles_per_task`
of them), so after a partial run a task still never shares a shard with another: the pipeline's sink
writes each shard from one block, by one writer (store/shards.py). Each task yields one block with
`tile`, `month`, `biome_code`, the arrays, any per-tile flag columns (the pipeline's `run_<k>`) and
`read_task`/`read_task_rows`, by which the sink checks that the block reached it whole.
Private: use `distributed.read_tile_store`.
"""

from __future__ import annotations

import numpy as np
from ray.data.block import BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from axion_ray.store.shards import pack_shards
from axion_ray.store.tile_store import IMAGE_ARRAYS

_S2L2A_BANDS = 12  # Stage 1's full output, carried in flight to Stage 3


class TileStoreDatasource(Datasource):
    def __init__(self, store_path: str, tiles: np.ndarray, arrays: list[str], tile_shape: tuple[int, int], *,
                 flags: dict[str, np.ndarray] | None = None, tiles_per_task: int = 16, read_errors: bool = False,
                 shard_tiles: int = 1):
        super().__init__()
        self._read_errors = read_errors  # a `read_error_<array>` column per array instead of failing the block
        self._store_path = store_path
        self._tiles = np.asarray(tiles, dtype=np.int64)
        self._arrays = list(arrays)
        self._flags = {k: np.asarray(v, dtype=bool) for k, v in (flags or {}).items()}  # per-tile columns
        self._tile_shape = tile_shape
        self._tiles_per_task = max(1, int(tiles_per_task))
        self._shard_tiles = max(1, int(shard_tiles))
        self._positions: list[np.ndarray] | None = None

    def task_positions(self) -> list[np.ndarray]:
        """Per read task, the positions (into the requested tiles) of its tiles: whole shards each.
        Packed once (the driver asks for the count, the largest task and the tasks themselves)."""
        if self._positions is None:
            order = np.argsort(self._tiles, kind="stable")
            groups = pack_shards(self._tiles[order], self._shard_tiles, self._tiles_per_task)
            bounds = np.cumsum([0] + [g.size for g in groups])
            self._positions = [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        return self._positions

    def get_name(self) -> str:
        return "AxionRayTileStore"

    def _row_bytes(self) -> int:
        h, w = self._tile_shape
        channels = sum(IMAGE_ARRAYS.get(a, _S2L2A_BANDS) for a in self._arrays)
        return channels * h * w * 4 + 64

    def estimate_inmemory_data_size(self) -> int:
        return int(self._tiles.size * self._row_bytes())

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        tasks = []
        for task, part in enumerate(self.task_positions()):
            tiles = self._tiles[part]
            flags = {k: v[part] for k, v in self._flags.items()}
            meta = BlockMetadata(num_rows=int(tiles.size), size_bytes=int(tiles.size * self._row_bytes()),
                                 input_files=None, exec_stats=None)
            tasks.append(ReadTask(self._reader(tiles, flags, task), meta))
        return tasks

    def max_task_bytes(self) -> int:
        """The largest block a read task's rows can grow to in flight: every image array plus Stage 1's
        S2L2A, which the stages add as columns."""
        h, w = self._tile_shape
        row = (sum(IMAGE_ARRAYS.values()) + _S2L2A_BANDS) * h * w * 4 + 256
        return max((p.size for p in self.task_positions()), default=0) * row

    def _reader(self, tiles: np.ndarray, flags: dict[str, np.ndarray], task: int):
        path, arrays, read_errors = self._store_path, self._arrays, self._read_errors

        def read():
            from axion_ray.store.tile_store import TileStore

            store = TileStore.open(path, mode="r", check=False)  # the driver checked it
            meta = store.tile_meta(tiles)
            batch = {"tile": tiles, "month": meta["month"].astype(np.int64),
                     "biome_code": meta["biome_code"].astype(np.int64),
                     "read_task": np.full(tiles.size, task, np.int64),
                     "read_task_rows": np.full(tiles.size, tiles.size, np.int64)}
            batch.update({k: v.copy() for k, v in flags.items()})
            for name in arrays:
                if read_errors:
                    batch[name], batch[f"read_error_{name}"] = _read_each_alone_on_error(store, name, tiles)
                else:
                    batch[name] = store.read(name, tiles)
            yield BlockAccessor.batch_to_block(batch)

        return read


def _read_each_alone_on_error(store, name: str, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tiles of `name`, and per tile why it could not be read ("" when it was). A chunk that cannot
    be read or decoded (truncated, empty, corrupt) fails its own tile, not the block: after a failed
    block read, each tile is read alone and an unreadable one comes back NaN with its reason."""
    errors = np.array([""] * tiles.size, dtype=object)
    try:
        return store.read(name, tiles), errors.astype(str)
    except Exception:  # zarr and numcodecs raise many types for a bad chunk; find out which tile
        data = np.full((tiles.size, store.group[name].shape[1], store.height, store.width), np.nan, np.float32)
        for k, tile in enumerate(tiles):
            try:
                data[k] = store.read(name, [tile])[0]
            except Exception as exc:
                errors[k] = f"{name} chunk of tile {int(tile)} cannot be read ({type(exc).__name__}: {str(exc)[:160]})"
        return data, errors.astype(str)
