"""`train_stage2`: Stage 2 on Ray Train — a `TorchTrainer` over Ray Data shards of a train store.

Checkpoints are kept by composite score (top k); `FailureConfig` restarts a failed worker group from
the last checkpoint. The run directory holds Ray Train's checkpoints and `training_summary.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.config import TrainConfig
from axion_ray.errors import ConfigError, TileDataError
from axion_ray.store.tile_store import TileStatus, TileStore

RUN_NAME = "stage2"


def _usable_tiles(store: TileStore, role: str) -> np.ndarray:
    if not store.has("s2_truth"):
        raise TileDataError(f"{role} store {store.path} has no s2_truth: training needs a reference image")
    tiles = np.flatnonzero(store.status("opt_v1") == TileStatus.DONE)
    if tiles.size == 0:
        raise TileDataError(f"{role} store {store.path} has no Stage 1 output (opt_v1) to refine")
    return tiles


def train_stage2(train_store: str, val_store: str, out_dir: str | Path, cfg: TrainConfig = TrainConfig(),
                 say: Callable[[str], None] = print, fault_exit_at_step: int | None = None) -> dict[str, Any]:
    """Train the Stage 2 refiner; returns the summary also written to `OUT/training_summary.json`.

    `fault_exit_at_step` kills one worker process at that step of the first attempt (fault injection
    for tests and `bench/`): `FailureConfig` must bring the run back from the last checkpoint.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from axion_ray.models.builder import stage_provenance
    from axion_ray.pipeline._datasource import _TileStoreDatasource
    from axion_ray.pipeline.run import _init_ray
    from axion_ray.train.loop import train_loop_per_worker

    if cfg.stage != 2:
        raise ConfigError("only Stage 2 trains through this loop so far")
    if cfg.workers < 1 or cfg.epochs < 1 or cfg.batch_size < 1:
        raise ConfigError("workers, epochs and batch size must be at least 1")
    if cfg.weights:  # workers do not share the driver's working directory
        cfg = dataclasses.replace(cfg, weights=str(Path(cfg.weights).resolve()))
    stage_provenance(2, cfg.preset, weights=cfg.weights, allow_random_init=cfg.allow_random_init)  # fail fast
    train = TileStore.open(train_store, mode="r")
    val = TileStore.open(val_store, mode="r")
    tiles = _usable_tiles(train, "train")
    _usable_tiles(val, "validation")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)

    _init_ray(None)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    worker_cpus = max(0.25, (cpus - 0.25) / cfg.workers) if not cfg.use_gpu else 1.0
    ds = ray.data.read_datasource(
        _TileStoreDatasource(train.path, tiles, ["opt_v1", "s2_truth"], (train.height, train.width), tiles_per_task=32),
        num_cpus=0.25)
    if ds.size_bytes() < 2 ** 30:  # small enough to read once and reuse every epoch
        ds = ds.materialize()
    steps_per_epoch = math.ceil(tiles.size / cfg.workers / cfg.batch_size)
    loop_config = {**dataclasses.asdict(cfg), "val_store": val.path, "steps_per_epoch": steps_per_epoch,
                   "fault_exit_at_step": fault_exit_at_step,
                   "torch_threads": max(1, int(round(worker_cpus))) if not cfg.use_gpu else None}
    workers = (cfg.min_workers, cfg.workers) if cfg.min_workers else cfg.workers
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": worker_cpus}),
        run_config=RunConfig(
            name=RUN_NAME, storage_path=str(out),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_top_k, checkpoint_score_attribute="composite_score",
                                               checkpoint_score_order="max"),
            failure_config=FailureConfig(max_failures=cfg.max_failures)),
        datasets={"train": ds},
    )
    say(f"training Stage 2 ({cfg.preset}) on {tiles.size} tiles with {cfg.workers} worker(s) x {worker_cpus:g} CPU, "
        f"{cfg.epochs} epoch(s) of {steps_per_epoch} steps, validating every {cfg.val_every_steps} steps")
    result = trainer.fit()
    checkpoints = [{"path": str(Path(ckpt.path) / "checkpoint.pt"), **{k: v for k, v in m.items()}}
                   for ckpt, m in result.best_checkpoints]
    summary = {"run_dir": str(out), "config": dataclasses.asdict(cfg), "train_tiles": int(tiles.size),
               "final_metrics": result.metrics, "checkpoints": checkpoints}
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
