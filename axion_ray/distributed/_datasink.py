"""Ray Data datasink into a tile store: per block, every stage's data first, then each shard's record.

Each write task opens the store once and commits every stage's results of its blocks through
`TileStore.commit` (done tiles' data, then one record per shard with status, proc_ms and failure
reasons). A block holds whole read tasks, so whole shards: this task is their only writer. Counts go
to the run's progress tracker, and the task waits for the tracker to have them: a write task whose node
dies after its commit but before the report arrived is then retried, not finished with its tiles
uncounted (seen once in CI's node-loss test: 128 of 144 tiles counted, all 144 done). A retried task
reports again under the same read-task ids, which the tracker counts once. Private: use
`distributed.write_tile_store`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import ray
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink

from axion_ray.distributed.columns import ROW_DONE, ROW_FAILED, ROW_NO_DATA
from axion_ray.models.registry import stage_spec


class TileStoreDatasink(Datasink):
    def __init__(self, store_path: str, stages: tuple[int, ...], tracker: Any, guard: Any = None):
        self._store_path = store_path
        self._stages = tuple(stages)
        self._tracker = tracker
        self._guard = guard  # store.lease.LeaseGuard: the epoch of the run these writes belong to

    def get_name(self) -> str:
        return "AxionRayTileStore"

    def write(self, blocks: Iterable[Block], ctx) -> dict[str, int]:
        from axion_ray.store.tile_store import OutputResult, TileStore

        store = TileStore.open(self._store_path, mode="r+", check=False)  # the driver checked it
        written = 0
        for block in blocks:
            batch = BlockAccessor.for_block(block).to_batch_format("numpy")
            tiles = np.asarray(batch["tile"], dtype=np.int64)
            if self._guard is not None and not self._guard.current():
                # Another run holds the store now (this run's driver died): write nothing, so a
                # lingering worker can never overwrite the work of the run that replaced it.
                ray.get(self._tracker.report.remote(0, {}, refused=int(tiles.size)))
                continue
            whole = _whole_read_tasks(batch)
            if not whole.all():
                # A read task's rows arrived in pieces, so its shards may have a second writer: write
                # none of them (they stay pending for the next run). tile_io sizes blocks so this
                # should never happen; if it does, it is counted, not silently raced.
                ray.get(self._tracker.report.remote(0, {}, split=int((~whole).sum())))
                batch = {k: np.asarray(v)[whole] for k, v in batch.items()}
                tiles = tiles[whole]
                if tiles.size == 0:
                    continue
            report, results = {}, []
            for stage in self._stages:
                status = np.asarray(batch[f"status_{stage}"])
                done, failed, no_data = status == ROW_DONE, status == ROW_FAILED, status == ROW_NO_DATA
                name = stage_spec(stage).output
                reasons = [str(r) for r in np.asarray(batch[f"reason_{stage}"])[failed]]
                results.append(OutputResult(name, done=tiles[done], data=np.asarray(batch[name])[done],
                                            proc_ms=np.asarray(batch[f"ms_{stage}"])[done],
                                            failed=tiles[failed], reasons=reasons, no_data=tiles[no_data]))
                report[stage] = {
                    "done": int(done.sum()), "failed": int(failed.sum()), "no_data": int(no_data.sum()),
                    "failures": {int(t): r for t, r in zip(tiles[failed], reasons)},
                    "devices": sorted({str(d) for d in np.asarray(batch[f"device_{stage}"])[done | failed] if d}),
                    "cpu_fallbacks": int(np.asarray(batch[f"fallback_{stage}"]).sum()),
                    "nodes": {str(n): int(c) for n, c in zip(*np.unique(np.asarray(batch[f"node_{stage}"])[done],
                                                                        return_counts=True)) if n},
                }
            # Every stage's data, then each shard's record once (TileStore.commit).
            store.commit(results)
            written += int(tiles.size)
            read_tasks = sorted({int(t) for t in batch["read_task"]}) if "read_task" in batch else None
            ray.get(self._tracker.report.remote(int(tiles.size), report, read_tasks=read_tasks))
        return {"tiles": written}


def _whole_read_tasks(batch: dict[str, np.ndarray]) -> np.ndarray:
    """Per row: whether every row of its read task is in this block."""
    if "read_task" not in batch:
        return np.ones(len(batch["tile"]), bool)
    tasks = np.asarray(batch["read_task"])
    ids, inverse, counts = np.unique(tasks, return_inverse=True, return_counts=True)
    expected = np.asarray(batch["read_task_rows"])
    return counts[inverse] == expected
