"""Planning a pipeline run, before any model is built: which tiles and stages run, with what resources.

`plan_todo` reads the store's status (a stage runs where its output is not done; once a stage runs for
a tile, every later requested stage runs too, since its input changed); `plan_stages` gives each stage
its actors' CPUs/GPUs from the cluster — GPU shares from the stages' measured costs, so the whole chain
fits one GPU — and refuses a plan whose minimum pools cannot all start; `stage_build_kwargs` is what
each actor hands `build_stage`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.config import InferConfig
from axion_ray.distributed.session import READ_TASK_CPUS, cpu_share
from axion_ray.errors import DeviceError
from axion_ray.models.registry import stage_spec
from axion_ray.store.tile_store import TileStatus, TileStore

#: Relative GPU cost per tile of each model family (measured, bench/RESULTS.md: TerraMind generation at
#: 10 timesteps ≈ 75x the Stage 2 refiner on an H100; the regression stages run at the refiner's pace).
GPU_COST = {"terramind": 75.0, "prithvi": 1.0, "regress": 1.0}
#: The smallest GPU share an actor is given: a light stage beside a generating one still needs room.
MIN_GPU_SHARE = 0.05


@dataclass
class StagePlan:
    stage: int
    batch_size: int
    num_cpus: float
    num_gpus: float
    min_actors: int
    max_actors: int
    threads: int          # torch threads per model call
    device: str
    family: str = ""      # the stage model's family (registry): generation carries S2L2A from 1 to 3
    calls_per_actor: int = 1  # batches one actor runs at once, each on `threads` torch threads


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


def plan_stages(cfg: InferConfig, resources: dict[str, float], node_cpus: list[float] | None = None,
                families: dict[int, str] | None = None) -> list[StagePlan]:
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

    def family_of(stage: int) -> str:  # a checkpoint's kind, as the driver read it, else the asked kind
        return (families or {}).get(stage) or stage_spec(stage, cfg.kind(stage)).family

    shares = gpu_shares({s: family_of(s) for s in cfg.stages}, gpus, lo) if use_gpu else {}
    for stage in cfg.stages:
        if use_gpu:
            num_gpus = cfg.num_gpus if cfg.num_gpus is not None else shares[stage]
            num_cpus = cfg.num_cpus if cfg.num_cpus is not None else 1.0
        else:
            num_gpus = 0.0
            share = cpu_share(len(cfg.stages) * lo, cpus=cpus, reserve=READ_TASK_CPUS, per_node=per_node)
            num_cpus = cfg.num_cpus if cfg.num_cpus is not None else share
        cores = max(1, int(round(num_cpus)))
        calls = cpu_calls_per_actor(family_of(stage), cores) if not use_gpu else 1
        plans.append(StagePlan(stage, cfg.batch_size, num_cpus, num_gpus, lo, hi,
                               threads=max(1, cores // calls), device="cuda" if use_gpu else "cpu",
                               family=family_of(stage), calls_per_actor=calls))
    check_fits(plans, cpus, gpus)
    return plans


def cpu_calls_per_actor(family: str, cores: int) -> int:
    """On the CPU an actor runs one batch per core it holds, each on one torch thread: measured here
    (bench/RESULTS.md), two batches on one thread each run the refiner 1.12x faster than one batch on two
    threads (torch's intra-op threads scale sub-linearly on small tiles), at the cost of nothing but a
    second batch in memory — one process and one model build, so start-up is unchanged. Generation
    stays one call at a time: its seeded sampling forks the process-wide RNG (`models.common.seeded`)."""
    return 1 if family == "terramind" else max(1, cores)


def gpu_shares(families: dict[int, str], gpus: float, min_actors: int) -> dict[int, float]:
    """Each stage's GPUs per actor, so that every stage's minimum pool fits the cluster's GPUs at once:
    shares proportional to the stages' measured costs, at least `MIN_GPU_SHARE`, at most one GPU per
    actor (an actor uses one device). On one GPU, a 1,2,3 chain of generating stages asks 0.5 + 0.05 +
    0.5 (Ray Data's actor pool then adds actors up to `--actors MAX` while GPUs are free)."""
    cost = {s: GPU_COST[f] for s, f in families.items()}
    budget = gpus / max(1, min_actors)
    total = sum(cost.values())
    shares = {s: max(MIN_GPU_SHARE, budget * c / total) for s, c in cost.items()}
    scale = min(1.0, budget / sum(shares.values()))  # the floors may overshoot a small budget
    # Rounded down to 1/1000 GPU: a rounded-up share could ask a hair more than the cluster has.
    return {s: math.floor(1000 * min(1.0, max(MIN_GPU_SHARE / 2, v * scale))) / 1000 for s, v in shares.items()}


def check_fits(plans: list[StagePlan], cpus: float, gpus: float) -> None:
    """Every stage's minimum pool must be scheduled at once, or the run waits forever (NeMo Curator's
    hang when stages outnumber resources): a plan that cannot fit is a user error, before any work."""
    asked_gpus = sum(p.num_gpus * p.min_actors for p in plans)
    asked_cpus = sum(p.num_cpus * p.min_actors for p in plans)
    if asked_gpus > gpus + 1e-6 or asked_cpus > cpus + 1e-6:
        detail = ", ".join(f"stage {p.stage}: {p.min_actors} x ({p.num_cpus:g} CPU, {p.num_gpus:g} GPU)" for p in plans)
        raise DeviceError(f"the stage pools cannot all start: they ask {asked_cpus:g} CPUs and {asked_gpus:g} GPUs "
                          f"({detail}); the cluster has {cpus:g} CPUs and {gpus:g} GPUs. Lower --num-gpus, "
                          "--num-cpus or the minimum of --actors")


def stage_build_kwargs(cfg: InferConfig, stage: int) -> dict[str, Any]:
    """`build_stage` keyword arguments for `stage` (also what `stage_provenance` checks on the driver).

    Paths are made absolute: actors do not share the driver's working directory.
    """
    def absolute(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path else None

    return {"preset": cfg.preset, "kind": cfg.kind(stage), "weights": absolute(cfg.weights),
            "allow_random_init": cfg.allow_random_init, "checkpoint": absolute(cfg.checkpoint(stage)),
            "timesteps": cfg.timesteps, "seed": cfg.seed, "tta": cfg.tta}
