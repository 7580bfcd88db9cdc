"""Progress and per-stage accounting of a pipeline run, gathered by one tiny Ray actor.

Write tasks report what they wrote; the driver polls and prints `done/total, tiles/s, ETA`; stage
actors register themselves so an operator (or a test) can find the actor serving a stage.
"""

from __future__ import annotations

import time
from typing import Any

import ray


@ray.remote(num_cpus=0, max_restarts=-1)
class ProgressTracker:
    def __init__(self, stages: list[int]):
        self.tiles = 0
        self.first_tile_at: float | None = None
        self.per_stage: dict[int, dict[str, Any]] = {
            s: {"done": 0, "failed": 0, "no_data": 0, "failures": {}, "devices": set(), "cpu_fallbacks": 0,
                "nodes": {}, "actor_nodes": {}}
            for s in stages}
        self.actors: dict[int, list[Any]] = {s: [] for s in stages}
        self.startup: dict[int, dict[str, float]] = {}  # per stage, its first actor's start-up times
        self.timeline: list[tuple[float, int]] = []  # (time, tiles written so far)
        self.refused = 0  # tiles a write task would not write: the store's lease had moved on
        self.split = 0  # tiles not written: their read task reached the sink in pieces
        self.reported: set[int] = set()  # read tasks whose writes are counted: a retried write counts once

    def report(self, tiles: int, per_stage: dict[int, dict[str, Any]], refused: int = 0, split: int = 0,
               read_tasks: list[int] | None = None) -> bool:
        """Count one write; False (and nothing counted) when its read tasks were counted already: the
        write task was retried after its first report arrived (its node died before it returned)."""
        if read_tasks:
            if self.reported.issuperset(read_tasks):
                return False
            self.reported.update(read_tasks)
        self.refused += refused
        self.split += split
        if self.first_tile_at is None and tiles:
            self.first_tile_at = time.time()
        self.tiles += tiles
        self.timeline.append((time.time(), self.tiles))
        for stage, r in per_stage.items():
            acc = self.per_stage[stage]
            acc["done"] += r["done"]
            acc["failed"] += r["failed"]
            acc["no_data"] += r.get("no_data", 0)
            acc["failures"].update(r["failures"])
            acc["devices"].update(r["devices"])
            acc["cpu_fallbacks"] += r["cpu_fallbacks"]
            for node, count in r.get("nodes", {}).items():  # tiles written per Ray node
                acc["nodes"][node] = acc["nodes"].get(node, 0) + count
        return True

    def register_actor(self, stage: int, handle: Any, startup: dict[str, float] | None = None,
                       node: str | None = None) -> None:
        self.actors[stage].append(handle)
        if node:  # actors started per Ray node (a restarted actor counts again): where the pool ran
            nodes = self.per_stage[stage]["actor_nodes"]
            nodes[node] = nodes.get(node, 0) + 1
        if startup and stage not in self.startup:
            self.startup[stage] = startup

    def stage_actors(self, stage: int) -> list[Any]:
        return list(self.actors[stage])

    def snapshot(self) -> dict[str, Any]:
        return {"tiles": self.tiles, "first_tile_at": self.first_tile_at, "timeline": list(self.timeline),
                "refused": self.refused, "split": self.split, "startup": dict(self.startup),
                "per_stage": {s: {**v, "devices": sorted(v["devices"])} for s, v in self.per_stage.items()}}


def progress_line(done: int, total: int, elapsed_s: float, first_tile_s: float | None) -> str:
    """`done/total (pct), tiles/s, ETA` — rate measured from the first finished tile (start-up excluded)."""
    pct = 100.0 * done / total if total else 100.0
    if done and first_tile_s is not None and elapsed_s > first_tile_s:
        rate = done / max(elapsed_s - first_tile_s, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        return f"{done}/{total} tiles ({pct:.0f}%), {rate:.2f} tiles/s, ETA {eta:.0f}s"
    return f"{done}/{total} tiles ({pct:.0f}%), starting up ({elapsed_s:.0f}s)"


def steady_rate(timeline: list[tuple[float, int]], warmup_fraction: float = 0.1) -> float | None:
    """Tiles/s after the first `warmup_fraction` of tiles: blocks that queued up behind a starting
    actor pool would otherwise inflate a rate measured from the first finished tile."""
    if len(timeline) < 2:
        return None
    total = timeline[-1][1]
    t0, n0 = next((t, n) for t, n in timeline if n >= warmup_fraction * total)
    t1, n1 = timeline[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 and n1 > n0 else None
