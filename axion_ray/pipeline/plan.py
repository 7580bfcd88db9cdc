"""Planning a pipeline run, before any model is built: which tiles and stages run, with what resources.

`plan_todo` reads the store's status (a stage runs where its output is not done; once a stage runs for
a tile, every later requested stage runs too, since its input changed); `plan_stages` gives each stage
its actors' CPUs/GPUs from the cluster; `stage_build_kwargs` is what each actor hands `build_stage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.config import InferConfig
from axion_ray.distributed.session import READ_TASK_CPUS, cpu_share
from axion_ray.errors import DeviceError
from axion_ray.models.registry import stage_spec
from axion_ray.store.tile_store import TileStatus, TileStore

#: GPUs per actor by default: TerraMind generation fills a GPU; the light Stage 2 refiner shares one.
_DEFAULT_GPUS = {"terramind": 1.0, "prithvi": 0.5}


@dataclass
class StagePlan:
    stage: int
    batch_size: int
    num_cpus: float
    num_gpus: float
    min_actors: int
    max_actors: int
    threads: int
    device: str


def plan_todo(store: TileStore, stages: tuple[int, ...], skip_existing: bool) -> tuple[np.ndarray, np.ndarray]:
    """Tiles to schedule and, per tile, which requested stages run.

    A stage runs when its output is not done (or always, without skip_existing); once a stage runs for
    a tile, every later requested stage runs too, since its input changed. A *no data* tile never runs.
    """
    tiles, todo, _ = plan_tiles(store, stages, skip_existing)
    return tiles, todo


def plan_tiles(store: TileStore, stages: tuple[int, ...], skip_existing: bool
               ) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """`plan_todo` plus, per stage, how many tiles are *no data* (one read of each status array)."""
    no_data: dict[int, int] = {}
    todo = np.zeros((store.n_tiles, len(stages)), dtype=bool)
    for j, stage in enumerate(stages):
        output = stage_spec(stage).output
        status = store.status(output)
        pending = status != TileStatus.DONE if skip_existing else np.ones(store.n_tiles, bool)
        todo[:, j] = (pending | (todo[:, j - 1] if j else False)) & (status != TileStatus.NO_DATA)
        no_data[stage] = int((status == TileStatus.NO_DATA).sum())
    tiles = np.flatnonzero(todo.any(axis=1))
    return tiles, todo[tiles], no_data


def plan_stages(cfg: InferConfig, resources: dict[str, float], node_cpus: list[float] | None = None) -> list[StagePlan]:
    """Per-stage resources: fractional CPUs on a CPU-only cluster so pools never starve the reader.

    The CPUs (less a read task's share) are shared by every stage's minimum pool, and no actor may
    take more than its node can spare beside one read task (`distributed.cpu_share`).
    """
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    per_node = min(node_cpus) if node_cpus else cpus
    if cfg.device.startswith("cuda") and gpus == 0:
        raise DeviceError("--device cuda asked for, but the Ray cluster has no GPU; use --device auto or cpu")
    use_gpu = cfg.device != "cpu" and gpus > 0
    lo, hi = cfg.actors
    plans = []
    for stage in cfg.stages:
        if use_gpu:
            default_gpus = _DEFAULT_GPUS[stage_spec(stage).family]
            num_gpus = cfg.num_gpus if cfg.num_gpus is not None else default_gpus
            num_cpus = cfg.num_cpus if cfg.num_cpus is not None else 1.0
        else:
            num_gpus = 0.0
            share = cpu_share(len(cfg.stages) * lo, cpus=cpus, reserve=READ_TASK_CPUS, per_node=per_node)
            num_cpus = cfg.num_cpus if cfg.num_cpus is not None else share
        plans.append(StagePlan(stage, cfg.batch_size, num_cpus, num_gpus, lo, hi,
                               threads=max(1, int(round(num_cpus))), device="cuda" if use_gpu else "cpu"))
    return plans


def stage_build_kwargs(cfg: InferConfig, stage: int) -> dict[str, Any]:
    """`build_stage` keyword arguments for `stage` (also what `stage_provenance` checks on the driver).

    Paths are made absolute: actors do not share the driver's working directory.
    """
    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path else None

    return {"preset": cfg.preset, "weights": absolute(cfg.weights), "allow_random_init": cfg.allow_random_init,
            "checkpoint": absolute(cfg.checkpoint(stage)), "timesteps": cfg.timesteps, "seed": cfg.seed}
