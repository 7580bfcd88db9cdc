"""`run_pipeline`: stream every pending tile of a store through one actor pool per stage, on Ray Data.

read (our Zarr datasource, pending tiles only) → [stage 1 pool] → [stage 2 pool] → [stage 3 pool] →
write (our datasink: data, then status). One streaming, back-pressured plan; each pool elastic
(`ActorPoolStrategy(min, max)`); actors restart and their tasks retry if they die; the store's status
arrays make a killed run resumable without redoing finished tiles.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.config import InferConfig
from axion_ray.errors import AxionRayError, ConfigError, DeviceError
from axion_ray.store.tile_store import TileStatus, TileStore

EXIT_FAILED_TILES = 1
_CURRENT_TRACKER: Any = None


def current_tracker() -> Any:
    """The progress tracker of the run in progress in this process (its stage actors, its counts)."""
    return _CURRENT_TRACKER


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


@dataclass
class RunSummary:
    store: str
    stages: list[int]
    total_tiles: int
    scheduled_tiles: int
    elapsed_s: float
    startup_s: float | None
    per_stage: dict[int, dict[str, Any]] = field(default_factory=dict)
    steady_tiles_per_s: float | None = None  # after the first 10 % of tiles (see progress.steady_rate)

    @property
    def failed(self) -> int:
        return sum(s["failed"] for s in self.per_stage.values())

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["per_stage"] = {str(k): v for k, v in self.per_stage.items()}
        d["failed"] = self.failed
        return d

    def to_text(self) -> str:
        lines = [f"{self.store}: {self.scheduled_tiles} of {self.total_tiles} tiles scheduled, "
                 f"{self.elapsed_s:.1f}s" + (f" (first tile after {self.startup_s:.1f}s)" if self.startup_s else "")
                 + (f", steady {self.steady_tiles_per_s:.1f} tiles/s" if self.steady_tiles_per_s else "")]
        lines.append(f"{'stage':6s} {'done':>6s} {'failed':>7s} {'skipped':>8s} {'tiles/s':>8s} {'cpu-fallback':>13s}  device")
        for stage, s in self.per_stage.items():
            rate = f"{s['tiles_per_s']:.2f}" if s["tiles_per_s"] else "-"
            lines.append(f"{stage:<6d} {s['done']:6d} {s['failed']:7d} {s['skipped']:8d} {rate:>8s} "
                         f"{s['cpu_fallbacks']:13d}  {', '.join(s['devices']) or '-'}")
        for stage, s in self.per_stage.items():
            for tile, reason in list(s["failures"].items())[:20]:
                lines.append(f"  stage {stage} tile {tile} failed: {reason}")
        return "\n".join(lines)


def plan_todo(store: TileStore, stages: tuple[int, ...], skip_existing: bool) -> tuple[np.ndarray, np.ndarray]:
    """Tiles to schedule and, per tile, which requested stages run.

    A stage runs when its output is not done (or always, without skip_existing); once a stage runs for
    a tile, every later requested stage runs too, since its input changed.
    """
    todo = np.zeros((store.n_tiles, len(stages)), dtype=bool)
    for j, stage in enumerate(stages):
        pending = store.status(f"opt_v{stage}") != TileStatus.DONE if skip_existing else np.ones(store.n_tiles, bool)
        todo[:, j] = pending | (todo[:, j - 1] if j else False)
    tiles = np.flatnonzero(todo.any(axis=1))
    return tiles, todo[tiles]


def _init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, logging_level="WARNING")
    elif os.environ.get("RAY_ADDRESS"):  # inside `ray job submit`
        ray.init(logging_level="WARNING")
    else:
        ray.init(address="local", include_dashboard=False, logging_level="WARNING")


def plan_stages(cfg: InferConfig, resources: dict[str, float], node_cpus: list[float] | None = None) -> list[StagePlan]:
    """Per-stage resources: fractional CPUs on a CPU-only cluster so pools never starve the reader.

    The CPUs (less a quarter for read tasks) are shared by every stage's minimum pool, and no actor may
    take more than its node can spare beside one read task — on two 1-CPU nodes, two 0.875-CPU actors
    left no node room for a 0.25-CPU read and the run hung (measured in the multi-node test).
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
            num_gpus = cfg.num_gpus if cfg.num_gpus is not None else (0.5 if stage == 2 else 1.0)
            num_cpus = cfg.num_cpus if cfg.num_cpus is not None else 1.0
        else:
            num_gpus = 0.0
            share = min((cpus - 0.25) / (len(cfg.stages) * lo), per_node - 0.25)
            num_cpus = cfg.num_cpus if cfg.num_cpus is not None else max(0.25, round(share, 3))
        plans.append(StagePlan(stage, cfg.batch_size, num_cpus, num_gpus, lo, hi,
                               threads=max(1, int(round(num_cpus))), device="cuda" if use_gpu else "cpu"))
    return plans


def _validate(cfg: InferConfig, store: TileStore) -> None:
    if not cfg.stages or any(s not in (1, 2, 3) for s in cfg.stages) or list(cfg.stages) != sorted(set(cfg.stages)):
        raise ConfigError(f"stages must be an increasing subset of 1,2,3, got {','.join(map(str, cfg.stages))}")
    lo, hi = cfg.actors
    if lo < 1 or hi < lo:
        raise ConfigError(f"--actors MIN:MAX needs 1 <= MIN <= MAX, got {lo}:{hi}")
    if cfg.batch_size < 1 or cfg.timesteps < 1 or cfg.tiles_per_read_task < 1:
        raise ConfigError("batch size, timesteps and tiles per read task must be at least 1")
    if 2 in cfg.stages and cfg.stage2_checkpoint is None and not cfg.allow_random_init:
        from axion_ray.models.presets import PRESETS, WEIGHT_FILES

        if PRESETS.get(cfg.preset) and PRESETS[cfg.preset].prithvi not in WEIGHT_FILES:
            raise ConfigError(f"stage 2 needs a trained checkpoint (--stage2-checkpoint PT); preset {cfg.preset!r}"
                              " has no pretrained refiner. Use --allow-random-init for a smoke run")


def _build_kwargs(cfg: InferConfig, stage: int) -> dict[str, Any]:
    def absolute(path: str | None) -> str | None:  # actors do not share the driver's working directory
        return str(Path(path).resolve()) if path else None

    return {"preset": cfg.preset, "weights": absolute(cfg.weights), "allow_random_init": cfg.allow_random_init,
            "checkpoint": absolute(getattr(cfg, f"stage{stage}_checkpoint")), "timesteps": cfg.timesteps,
            "seed": cfg.seed}


def run_pipeline(store_path: str, cfg: InferConfig = InferConfig(),
                 say: Callable[[str], None] = print) -> RunSummary:
    """Run the requested stages over every pending tile of the store at `store_path`.

    Raises:
        AxionRayError subclasses for user mistakes (bad config, missing weights, no GPU, bad store).
    """
    from axion_ray.models.builder import stage_provenance

    store = TileStore.open(store_path, mode="r+")
    _validate(cfg, store)
    provenance = {s: stage_provenance(s, **_build_kwargs(cfg, s)) for s in cfg.stages}  # fails fast, before Ray
    tiles, todo = plan_todo(store, cfg.stages, cfg.skip_existing)
    summary = RunSummary(store.path, list(cfg.stages), store.n_tiles, int(tiles.size), 0.0, None)
    skipped = {stage: int(store.n_tiles - todo[:, j].sum()) for j, stage in enumerate(cfg.stages)}
    empty = {"done": 0, "failed": 0, "failures": {}, "devices": [], "cpu_fallbacks": 0, "nodes": {},
             "tiles_per_s": None}
    if tiles.size == 0:
        summary.per_stage = {s: {**empty, "skipped": skipped[s]} for s in cfg.stages}
        say(f"nothing to do: every tile of {store.path} is done for stages {','.join(map(str, cfg.stages))}")
        return summary

    import ray
    from ray.data import ActorPoolStrategy, DataContext

    from axion_ray.pipeline._datasink import _TileStoreDatasink
    from axion_ray.pipeline._datasource import _TileStoreDatasource, stage_inputs
    from axion_ray.pipeline.actor import StageActor
    from axion_ray.pipeline.progress import ProgressTracker, progress_line, steady_rate

    _init_ray(cfg.address)
    plans = plan_stages(cfg, ray.cluster_resources(),
                        [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")])
    DataContext.get_current().enable_progress_bars = False
    global _CURRENT_TRACKER
    # The tracker lives on the driver's node: if it sat on a worker node that dies, its counts would
    # restart from zero and the driver's progress calls fail (seen in the node-loss test).
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    tracker = _CURRENT_TRACKER = ProgressTracker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=False)).remote(list(cfg.stages))
    flags = {f"run_{stage}": todo[:, j] for j, stage in enumerate(cfg.stages)}
    ds = ray.data.read_datasource(
        _TileStoreDatasource(store.path, tiles, stage_inputs(cfg.stages), (store.height, store.width),
                             flags=flags, tiles_per_task=cfg.tiles_per_read_task),
        num_cpus=0.25)
    for plan in plans:
        ds = ds.map_batches(
            StageActor, batch_size=plan.batch_size, batch_format="numpy",
            fn_constructor_kwargs={"stage": plan.stage, "build_kwargs": _build_kwargs(cfg, plan.stage),
                                   "device": plan.device, "amp": cfg.amp, "num_threads": plan.threads,
                                   "carry_s2l2a": 1 in cfg.stages and 3 in cfg.stages, "tracker": tracker},
            compute=ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.max_actors),
            num_cpus=plan.num_cpus, num_gpus=plan.num_gpus or None,
            # Spread a stage's actors over the nodes (soft): more nodes share the load, and losing one
            # node costs a fraction of a pool, not all of it.
            scheduling_strategy="SPREAD")
        # Ray Data's actor pools restart dead actors and retry their tasks by default (max_restarts=-1).
    sink = _TileStoreDatasink(store.path, cfg.stages, tracker)

    say(f"running stages {','.join(map(str, cfg.stages))} over {tiles.size} of {store.n_tiles} tiles "
        f"({', '.join(f'stage {p.stage}: {p.min_actors}-{p.max_actors} actors x {p.num_cpus:g} CPU/{p.num_gpus:g} GPU, batch {p.batch_size}' for p in plans)})")
    start = time.time()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            # Zero reserved CPUs: read tasks fill whatever the actors leave, and a sink that had to wait
            # for a CPU slot would only start after the reads (measured: writes piled up to the end).
            ds.write_datasink(sink, ray_remote_args={"num_cpus": 0, "max_retries": -1})
        except BaseException as exc:  # re-raised in the driver thread below
            errors.append(exc)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    last_tiles, last_said = -1, start
    while writer.is_alive():
        writer.join(timeout=cfg.progress_interval_s)
        snap = ray.get(tracker.snapshot.remote())
        if snap["tiles"] != last_tiles or time.time() - last_said > 6 * cfg.progress_interval_s:
            first = snap["first_tile_at"] - start if snap["first_tile_at"] else None
            say("  " + progress_line(snap["tiles"], int(tiles.size), time.time() - start, first))
            last_tiles, last_said = snap["tiles"], time.time()
    if errors:
        raise _unwrap(errors[0])

    snap = ray.get(tracker.snapshot.remote())
    summary.elapsed_s = time.time() - start
    summary.startup_s = snap["first_tile_at"] - start if snap["first_tile_at"] else None
    summary.steady_tiles_per_s = steady_rate(snap["timeline"])
    steady = summary.elapsed_s - (summary.startup_s or 0.0)
    for plan in plans:
        s = snap["per_stage"][plan.stage]
        rate = s["done"] / steady if s["done"] and steady > 0 else None
        summary.per_stage[plan.stage] = {**s, "skipped": skipped[plan.stage], "tiles_per_s": rate}
        if s["done"]:
            prov = {**provenance[plan.stage], "device": ", ".join(s["devices"]) or plan.device,
                    "amp": bool(cfg.amp and plan.device == "cuda")}
            store.set_provenance(f"opt_v{plan.stage}", **prov)
    ray.kill(tracker)
    return summary


def _unwrap(exc: BaseException) -> BaseException:
    """Surface a user error raised inside a Ray task or actor as itself."""
    seen = exc
    for _ in range(10):
        cause = getattr(seen, "cause", None) or seen.__cause__
        if isinstance(cause, AxionRayError):
            return cause
        if cause is None:
            break
        seen = cause
    return exc


def summary_json(summary: RunSummary) -> str:
    return json.dumps(summary.to_dict(), indent=2, default=str)
