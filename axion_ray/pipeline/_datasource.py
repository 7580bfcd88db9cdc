"""Ray Data datasource over a tile store: reads only the tiles some requested stage still has to do.

The driver decides per tile which stages run (`todo`, from the store's status arrays); each read task
reads a group of tiles (one Zarr chunk per tile and array) and yields one block with the inputs the
stages need plus `run_<k>` flags. Private: use `pipeline.run_pipeline`.
"""

from __future__ import annotations

import numpy as np
from ray.data.block import BlockAccessor, BlockMetadata
from ray.data.datasource import Datasource, ReadTask



def stage_inputs(stages: tuple[int, ...]) -> list[str]:
    """Store arrays the stage chain reads (upstream outputs come from the store when not recomputed)."""
    arrays = []
    if 1 in stages or 3 in stages:
        arrays.append("s1")
    if 2 in stages:
        arrays.append("opt_v1")
    if 3 in stages:
        arrays.append("opt_v2")
    return arrays


class _TileStoreDatasource(Datasource):
    def __init__(self, store_path: str, stages: tuple[int, ...], tiles: np.ndarray, todo: np.ndarray,
                 tile_shape: tuple[int, int], tiles_per_task: int = 16):
        super().__init__()
        self._store_path = store_path
        self._stages = tuple(stages)
        self._tiles = np.asarray(tiles, dtype=np.int64)
        self._todo = np.asarray(todo, dtype=bool)  # (len(tiles), len(stages))
        self._tile_shape = tile_shape
        self._tiles_per_task = max(1, int(tiles_per_task))
        self._arrays = stage_inputs(self._stages)

    def get_name(self) -> str:
        return "AxionRayTileStore"

    def _row_bytes(self) -> int:
        h, w = self._tile_shape
        channels = sum(2 if a == "s1" else 4 for a in self._arrays)
        return channels * h * w * 4 + 64

    def estimate_inmemory_data_size(self) -> int:
        return int(self._tiles.size * self._row_bytes())

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        tasks = []
        for start in range(0, self._tiles.size, self._tiles_per_task):
            tiles = self._tiles[start:start + self._tiles_per_task]
            todo = self._todo[start:start + self._tiles_per_task]
            meta = BlockMetadata(num_rows=int(tiles.size), size_bytes=int(tiles.size * self._row_bytes()),
                                 input_files=None, exec_stats=None)
            tasks.append(ReadTask(self._reader(tiles, todo), meta))
        return tasks

    def _reader(self, tiles: np.ndarray, todo: np.ndarray):
        path, stages, arrays = self._store_path, self._stages, self._arrays

        def read():
            from axion_ray.store.tile_store import TileStore

            store = TileStore.open(path, mode="r")
            meta = store.tile_meta(tiles)
            batch = {"tile": tiles, "month": meta["month"].astype(np.int64),
                     "biome_code": meta["biome_code"].astype(np.int64)}
            for j, stage in enumerate(stages):
                batch[f"run_{stage}"] = todo[:, j].copy()
            for name in arrays:
                batch[name] = store.read(name, tiles)
            yield BlockAccessor.batch_to_block(batch)

        return read
