"""Ray Data's door onto tile stores: `read_tile_store()` and `write_tile_store()`.

The datasource and datasink behind them are private (`_datasource.py`, `_datasink.py`); the pipeline
and training use only these two functions.
Stage results travel as columns beside the inputs (`distributed/columns.py`); `write_tile_store`
writes them: per tile the data first, then its status.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from axion_ray.distributed.session import READ_TASK_CPUS


def read_tile_store(store_path: str, tiles: np.ndarray, arrays: list[str], tile_shape: tuple[int, int], *,
                    flags: dict[str, np.ndarray] | None = None, tiles_per_task: int = 16,
                    num_cpus: float = READ_TASK_CPUS, read_errors: bool = False, shard_tiles: int | None = None):
    """A Ray Dataset of the given tiles of a store: one row per tile with `tile`, `month`,
    `biome_code`, the `arrays` and any per-tile `flags` columns; `tiles_per_task` tiles per read task.

    With `read_errors`, a tile whose chunk cannot be read comes back NaN with the reason in a
    `read_error_<array>` column (the pipeline fails that tile alone); without, the read task fails."""
    import ray
    from ray.data import DataContext

    from axion_ray.distributed._datasource import TileStoreDatasource
    from axion_ray.store.tile_store import TileStore

    if shard_tiles is None:  # the caller has no store open: read it from the store's attributes
        shard_tiles = TileStore.open(store_path, mode="r", check=False).shard_tiles
    source = TileStoreDatasource(store_path, tiles, arrays, tile_shape, flags=flags, tiles_per_task=tiles_per_task,
                                 read_errors=read_errors, shard_tiles=shard_tiles)
    # A read task's block must reach the sink whole: no split to fill Ray's default parallelism
    # (`override_num_blocks` = our task count) and no split for size (the target block size raised to
    # hold the largest task; Ray splits blocks above ~1.5x the target).
    ctx = DataContext.get_current()
    ctx.target_max_block_size = max(ctx.target_max_block_size or 0, source.max_task_bytes())
    return ray.data.read_datasource(source, num_cpus=num_cpus,
                                    override_num_blocks=max(1, len(source.task_positions())))


def write_tile_store(ds: Any, store_path: str, stages: tuple[int, ...], tracker: Any, guard: Any = None) -> None:
    """Write every stage's result columns of `ds` into the store; write tasks report to `tracker`.

    `guard` (a `store.lease.LeaseGuard`) fences the writes: a block is written only while the run that
    made it still holds the store's lease.

    Write tasks reserve no CPU (read tasks fill whatever the actors leave; a sink that had to wait for
    a CPU slot would only start after the reads — measured: writes piled up to the end) and retry.
    """
    import warnings

    from axion_ray.distributed._datasink import TileStoreDatasink

    with warnings.catch_warnings():  # Ray 2.60 deprecates ray_remote_args without a named replacement yet
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        ds.write_datasink(TileStoreDatasink(store_path, stages, tracker, guard),
                          ray_remote_args={"num_cpus": 0, "max_retries": -1})
