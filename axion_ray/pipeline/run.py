"""`run_pipeline`: stream every pending tile of a store through one actor pool per stage, on Ray Data.

read (`distributed.read_tile_store`, pending tiles only) → [stage 1 pool] → [stage 2 pool] →
[stage 3 pool] → write (`distributed.write_tile_store`: data, then status). One streaming,
back-pressured plan; each pool elastic (`ActorPoolStrategy(min, max)`); actors restart and their tasks
retry if they die; the store's status arrays make a killed run resumable without redoing finished tiles.

Three steps: plan (`pipeline/plan.py`: tiles, stages, resources — before Ray starts where it can),
build (the dataset of pools), stream (write, report progress, summarise; the progress tracker is
released however the run ends).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from axion_ray.config import InferConfig
from axion_ray.errors import AxionRayError
from axion_ray.models.registry import stage_spec
from axion_ray.pipeline.plan import StagePlan, plan_stages, plan_tiles, stage_build_kwargs
from axion_ray.store.tile_store import TileStore

EXIT_FAILED_TILES = 1
TASKS_PER_ACTOR = 4  # read tasks per actor of the largest pool, at least, where the tiles allow
_CURRENT_TRACKER: Any = None


def current_tracker() -> Any:
    """The progress tracker of the run in progress in this process (its stage actors, its counts)."""
    return _CURRENT_TRACKER


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
    refused_tiles: int = 0  # writes refused because the store's lease had passed to another run
    split_tiles: int = 0  # not written: their read task reached the sink in pieces (left pending)
    #: Time to the first finished tile, itemised (`startup_items`): planning, Ray start, pool start
    #: (to the first actor's constructor), imports, model build, first block.
    startup: dict[str, float] = field(default_factory=dict)

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
        lines.append(f"{'stage':6s} {'done':>6s} {'failed':>7s} {'no data':>8s} {'skipped':>8s} {'tiles/s':>8s} "
                     f"{'cpu-fallback':>13s}  device")
        for stage, s in self.per_stage.items():
            rate = f"{s['tiles_per_s']:.2f}" if s["tiles_per_s"] else "-"
            lines.append(f"{stage:<6d} {s['done']:6d} {s['failed']:7d} {s.get('no_data', 0):8d} {s['skipped']:8d} {rate:>8s} "
                         f"{s['cpu_fallbacks']:13d}  {', '.join(s['devices']) or '-'}")
        for stage, s in self.per_stage.items():
            for tile, reason in list(s["failures"].items())[:20]:
                lines.append(f"  stage {stage} tile {tile} failed: {reason}")
        return "\n".join(lines)


def _empty_stage(skipped: int) -> dict[str, Any]:
    return {"done": 0, "failed": 0, "no_data": 0, "failures": {}, "devices": [], "cpu_fallbacks": 0, "nodes": {},
            "actor_nodes": {}, "tiles_per_s": None, "skipped": skipped}


def run_pipeline(store_path: str, cfg: InferConfig = InferConfig(),
                 say: Callable[[str], None] = print) -> RunSummary:
    """Run the requested stages over every pending tile of the store at `store_path`.

    Raises:
        AxionRayError subclasses for user mistakes (bad config, missing weights, no GPU, bad store).
    """
    began = time.time()  # before the imports: reading a checkpoint's provenance imports torch (~1.2 s)
    from axion_ray.models.builder import stage_provenance
    from axion_ray.store.lease import held

    cfg.validate()
    store = TileStore.open(store_path, mode="r+")
    provenance = {s: stage_provenance(s, **stage_build_kwargs(cfg, s)) for s in cfg.stages}  # fails fast, before Ray
    # One run owns a store at a time; its plan is made under the lease, its writes carry its epoch.
    with held(store.path, command="infer", ttl_s=cfg.lease_ttl_s, wait=cfg.wait, say=say) as lease:
        return _run_under_lease(store, cfg, provenance, lease, say, began)


def _run_under_lease(store: TileStore, cfg: InferConfig, provenance: dict[int, dict[str, Any]], lease: Any,
                     say: Callable[[str], None], began: float) -> RunSummary:
    from axion_ray.store.lease import LeaseGuard

    tiles, todo, no_data = plan_tiles(store, cfg.stages, cfg.skip_existing)
    summary = RunSummary(store.path, list(cfg.stages), store.n_tiles, int(tiles.size), 0.0, None)
    # Skipped: done and not redone. No-data tiles are counted apart (they never run).
    skipped = {stage: int(store.n_tiles - todo[:, j].sum()) - no_data[stage] for j, stage in enumerate(cfg.stages)}
    if tiles.size == 0:
        summary.per_stage = {s: {**_empty_stage(skipped[s]), "no_data": no_data[s]} for s in cfg.stages}
        say(f"nothing to do: every tile of {store.path} is done for stages {','.join(map(str, cfg.stages))}")
        return summary

    import ray

    from axion_ray.distributed.session import init_ray
    from axion_ray.pipeline.progress import ProgressTracker

    planned = time.time()
    init_ray(cfg.address)
    ray_started = time.time()
    plans = plan_stages(cfg, ray.cluster_resources(),
                        [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU")],
                        families={s: stage_spec(s, p["kind"]).family for s, p in provenance.items()})
    global _CURRENT_TRACKER
    # The tracker lives on the driver's node: if it sat on a worker node that dies, its counts would
    # restart from zero and the driver's progress calls fail (seen in the node-loss test).
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    tracker = _CURRENT_TRACKER = ProgressTracker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=False)).remote(list(cfg.stages))
    try:
        ds = _build_dataset(store, tiles, todo, cfg, plans, tracker)
        pools = ", ".join(f"stage {p.stage}: {p.min_actors}-{p.max_actors} actors x {p.num_cpus:g} CPU/{p.num_gpus:g} GPU, "
                          f"batch {p.batch_size}" for p in plans)
        say(f"running stages {','.join(map(str, cfg.stages))} over {tiles.size} of {store.n_tiles} tiles ({pools})")
        snap, summary.elapsed_s = _stream(ds, store.path, cfg, int(tiles.size), tracker, say,
                                          LeaseGuard(store.path, lease.epoch))
    finally:
        ray.kill(tracker)
        _CURRENT_TRACKER = None

    from axion_ray.pipeline.progress import steady_rate

    start_s = snap["first_tile_at"] - snap["started_at"] if snap["first_tile_at"] else None
    summary.startup_s = start_s
    summary.startup = startup_items(began, planned, ray_started, snap)
    summary.steady_tiles_per_s = steady_rate(snap["timeline"])
    summary.refused_tiles = int(snap.get("refused", 0))
    if summary.refused_tiles:
        say(f"  {summary.refused_tiles} tile(s) not written: another run took the store's lease over")
    summary.split_tiles = int(snap.get("split", 0))
    if summary.split_tiles:
        say(f"  {summary.split_tiles} tile(s) not written: their shard reached the writer in pieces; they stay "
            "pending for the next run")
    steady = summary.elapsed_s - (summary.startup_s or 0.0)
    for plan in plans:
        s = snap["per_stage"][plan.stage]
        rate = s["done"] / steady if s["done"] and steady > 0 else None
        summary.per_stage[plan.stage] = {**s, "skipped": skipped[plan.stage], "tiles_per_s": rate,
                                         "no_data": s["no_data"] + no_data[plan.stage]}
        if s["done"]:
            prov = {**provenance[plan.stage], "device": ", ".join(s["devices"]) or plan.device,
                    "amp": bool(cfg.amp and plan.device == "cuda")}
            store.set_provenance(stage_spec(plan.stage).output, **prov)
    return summary


def startup_items(began: float, planned: float, ray_started: float, snap: dict[str, Any]) -> dict[str, float]:
    """Seconds to the first finished tile, itemised (the first actor of the first stage to be ready)."""
    items = {"plan_s": planned - began, "ray_start_s": ray_started - planned,
             "dataset_s": snap["started_at"] - ray_started}
    actors = snap.get("startup") or {}
    if actors and snap["first_tile_at"]:
        first = min(actors.values(), key=lambda a: a["ready"])
        last = max(actors.values(), key=lambda a: a["ready"])
        items.update({"pool_start_s": first["entered"] - snap["started_at"], "imports_s": first["imports_s"],
                      "model_build_s": first["build_s"], "other_pools_s": last["ready"] - first["ready"],
                      "first_block_s": snap["first_tile_at"] - last["ready"]})
    items["total_s"] = (snap["first_tile_at"] or time.time()) - began
    return items


def _build_dataset(store: TileStore, tiles: np.ndarray, todo: np.ndarray, cfg: InferConfig,
                   plans: list[StagePlan], tracker: Any) -> Any:
    """The lazy Ray Dataset: the pending tiles' inputs, then one actor pool per stage."""
    from ray.data import DataContext

    from axion_ray.distributed.tile_io import read_tile_store
    from axion_ray.models.registry import chain_reads

    DataContext.get_current().enable_progress_bars = False
    flags = {f"run_{stage}": todo[:, j] for j, stage in enumerate(cfg.stages)}
    # An actor takes a read task's block whole, so blocks are the unit the pools share: a small run
    # gets at least `TASKS_PER_ACTOR` tasks per actor where its shards allow (24 tiles on two actors:
    # tasks of 3, not one of 16 and one of 8 that a single actor might take both of).
    actors = max(p.max_actors for p in plans)
    per_task = min(cfg.tiles_per_read_task, max(1, -(-int(tiles.size) // (TASKS_PER_ACTOR * actors))))
    ds = read_tile_store(store.path, tiles, chain_reads(cfg.stages), (store.height, store.width),
                         flags=flags, tiles_per_task=per_task, read_errors=True, shard_tiles=store.shard_tiles)
    for plan in plans:
        with warnings.catch_warnings():
            # Ray 2.60 deprecates passing Ray remote args (here: the SPREAD strategy) without a named
            # replacement yet; the warning would only reach the user's terminal.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            ds = _stage_pool(ds, plan, cfg, tracker, plans)
        # Ray Data's actor pools restart dead actors and retry their tasks by default (max_restarts=-1).
    return ds


def _carries_s2l2a(plans: list[StagePlan]) -> bool:
    """Stage 1 hands its 12-band S2L2A to Stage 3 when both generate (a regression stage has none)."""
    generating = {p.stage for p in plans if p.family == "terramind"}
    return {1, 3} <= generating


def _stage_pool(ds: Any, plan: StagePlan, cfg: InferConfig, tracker: Any, plans: list[StagePlan]) -> Any:
    from ray.data import ActorPoolStrategy

    from axion_ray.pipeline.actor import StageActor

    # batch_size=None: an actor call takes one whole block (whole shards, store/shards.py) and runs
    # the model on it `plan.batch_size` tiles at a time; Ray Data never cuts a shard between two
    # calls, so never between two writers. `map_batches` refuses batch_size=None with GPUs (a nudge
    # to size GPU batches; ours are sized inside the actor), so we call its DeveloperAPI body.
    return ds.map_batches_internal(
            StageActor, batch_size=None, batch_format="numpy",
            fn_constructor_kwargs={"stage": plan.stage, "build_kwargs": stage_build_kwargs(cfg, plan.stage),
                                   "device": plan.device, "amp": cfg.amp, "num_threads": plan.threads,
                                   "carry_s2l2a": _carries_s2l2a(plans), "tracker": tracker,
                                   "batch_size": plan.batch_size},
            compute=ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.max_actors,
                                      **_concurrent_calls(plan.calls_per_actor)),
            num_cpus=plan.num_cpus, num_gpus=plan.num_gpus or None,
            # Spread a stage's actors over the nodes (soft): more nodes share the load, and losing one
            # node costs a fraction of a pool, not all of it.
            scheduling_strategy="SPREAD")


def _concurrent_calls(calls: int) -> dict[str, Any]:
    """Ray Data's switches for `calls` model calls at once in one actor (`plan.cpu_calls_per_actor`);
    none for one, so the usual actor stays Ray Data's default single-threaded one."""
    if calls <= 1:
        return {}
    return {"max_concurrent_calls_per_actor": calls, "enable_true_multi_threading": True}


def _stream(ds: Any, store_path: str, cfg: InferConfig, n_tiles: int, tracker: Any,
            say: Callable[[str], None], guard: Any = None) -> tuple[dict[str, Any], float]:
    """Write the dataset into the store, printing progress; returns the tracker's last snapshot (with
    `started_at`) and the elapsed seconds. A failure inside Ray surfaces as the user error it wraps."""
    import ray

    from axion_ray.distributed.tile_io import write_tile_store
    from axion_ray.pipeline.progress import progress_line

    start = time.time()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            write_tile_store(ds, store_path, cfg.stages, tracker, guard)
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
            say("  " + progress_line(snap["tiles"], n_tiles, time.time() - start, first))
            last_tiles, last_said = snap["tiles"], time.time()
    if errors:
        raise _unwrap(errors[0])
    snap = ray.get(tracker.snapshot.remote())
    return {**snap, "started_at": start}, time.time() - start


def _unwrap(exc: BaseException) -> BaseException:
    """Surface a user error raised inside a Ray task or actor as itself.

    An actor that died in its constructor reaches us as an `ActorDiedError` that carries the original
    error only as text: the user error is rebuilt from its last `axion_ray.errors.X: message` line."""
    import re

    from axion_ray import errors

    seen = exc
    for _ in range(10):
        cause = getattr(seen, "cause", None) or seen.__cause__
        if isinstance(cause, AxionRayError):
            return cause
        if not isinstance(cause, BaseException):
            break
        seen = cause
    found = re.findall(r"axion_ray\.errors\.(\w+): (.+)", str(exc))
    if found:
        name, message = found[-1]
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, AxionRayError):
            return cls(message.strip())
    return exc


def summary_json(summary: RunSummary) -> str:
    return json.dumps(summary.to_dict(), indent=2, default=str)
