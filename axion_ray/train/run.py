"""`train_stage`: any stage on Ray Train — a `TorchTrainer` over Ray Data shards of one or more train
stores (several AOIs: a training set should span scenes, not one river or none).

Checkpoints are kept by composite score (top k); `FailureConfig` restarts a failed worker group from
the last checkpoint. The run directory holds Ray Train's checkpoints and `training_summary.json`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.config import TrainConfig
from axion_ray.errors import ConfigError, TileDataError
from axion_ray.models.registry import TRUTH_ARRAY, stage_spec
from axion_ray.store.tile_store import TileStatus, TileStore

TERRAMIND_LORA_RANK = 8  # stages 1 and 3 train LoRA adapters only (checkpoints hold just those)


def _needed_array(cfg: TrainConfig) -> tuple[str | None, str]:
    """The array whose done tiles a stage trains on (None: every tile with data), and how to name it
    in an error."""
    spec = stage_spec(cfg.stage, cfg.kind)
    if spec.optical_input is None and not spec.train_baseline:
        return None, "tile with data"
    if spec.optical_input is None:
        return spec.train_baseline, f"a Stage {cfg.stage} baseline ({spec.train_baseline}) to beat"
    if cfg.stage == 2:
        return spec.optical_input, f"Stage 1 output ({spec.optical_input}) to refine"
    return cfg.condition, f"the Stage {cfg.stage} condition ({cfg.condition})"


def _usable_tiles(store: TileStore, role: str, cfg: TrainConfig) -> np.ndarray:
    """Tiles with a truth and the stage's input done (a tile whose Stage 1 failed has a broken S1)."""
    if not store.has(TRUTH_ARRAY):
        raise TileDataError(f"{role} store {store.path} has no {TRUTH_ARRAY}: training needs a reference image")
    array, what = _needed_array(cfg)
    if array is None:  # Stage 1 regression reads only s1
        tiles = np.flatnonzero(store.status(stage_spec(cfg.stage).output) != TileStatus.NO_DATA)
    else:
        tiles = np.flatnonzero(store.status(array) == TileStatus.DONE) if store.has(array) else np.empty(0, int)
    if tiles.size == 0:
        hint = (" — run `axion-ray infer --stages 2` on it first, or train with --condition opt_v1"
                if cfg.stage == 3 else "")
        raise TileDataError(f"{role} store {store.path} has no {what}{hint}")
    return tiles


def _truth_spectrum(trains: list[TileStore], tiles_of: list[np.ndarray], max_tiles: int = 256) -> list[float]:
    """The training truth's mean spectrum, from at most `max_tiles` tiles spread over the stores (a cost
    that does not grow with the AOI): where a regression Stage 1 starts (`RegressStage1.start_from`)."""
    per_store = max(1, max_tiles // len(trains))
    sums, counts = np.zeros(4), np.zeros(4)
    for store, tiles in zip(trains, tiles_of):
        picked = tiles[np.linspace(0, tiles.size - 1, min(per_store, tiles.size)).astype(int)]
        truth = store.read(TRUTH_ARRAY, np.unique(picked))
        sums += np.nansum(truth, axis=(0, 2, 3))
        counts += np.isfinite(truth).sum(axis=(0, 2, 3))
    return (sums / np.maximum(counts, 1)).tolist()


def open_stores(stores: str | Path | Sequence[str | Path], role: str = "training") -> list[TileStore]:
    """One store or several (AOIs pooled into one training or validation set), opened read-only."""
    paths = [stores] if isinstance(stores, str | Path) else list(stores)
    if not paths:
        raise ConfigError(f"no {role} store given")
    return [TileStore.open(path, mode="r") for path in paths]


RUN_CONFIG_FILE = "run_config.json"
# What may differ when a run directory is reused (a resumed run on another cluster shape): resources.
_RESUMABLE_CHANGES = frozenset({"workers", "min_workers", "cpus_per_worker", "use_gpu", "max_failures"})


def claim_run_dir(out: Path, record: dict[str, Any], *, file: str = RUN_CONFIG_FILE,
                  defaults: dict[str, Any] | None = None, resumable: frozenset[str] = _RESUMABLE_CHANGES,
                  what: str = "a training run") -> bool:
    """Record what a run directory trains; refuse to mix another configuration into it.

    Ray Train resumes a run from the checkpoints in its directory (what brings a killed driver back),
    so a different configuration there would silently continue the old run. Returns True when the
    directory already holds this run (it will resume). A key a later version added, at its default
    (`defaults`, TrainConfig's unless given), is no change; values compare as JSON reads them back.
    """
    record = json.loads(json.dumps(record, default=str))  # as the file holds it: a tuple is a list
    path = out / file
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(path)
        return False
    before = json.loads(path.read_text())
    defaults = json.loads(json.dumps(defaults if defaults is not None else dataclasses.asdict(TrainConfig()),
                                     default=str))
    changed = sorted(k for k in set(before["config"]) | set(record["config"])
                     if k not in resumable
                     and before["config"].get(k, defaults.get(k)) != record["config"].get(k, defaults.get(k)))
    changed += [k for k in ("train_stores", "val_store") if before.get(k) != record[k]]
    if changed:
        raise ConfigError(f"{out} holds {what} with another configuration ({', '.join(changed)} differ); "
                          "resuming it would mix the two — use a new --out, or delete it to start over")
    return True


def train_stage(train_store: str | Sequence[str], val_store: str, out_dir: str | Path, cfg: TrainConfig = TrainConfig(),
                say: Callable[[str], None] = print, fault_exit_at_step: int | None = None,
                callbacks: list | None = None) -> dict[str, Any]:
    """Train a stage; returns the summary also written to `OUT/training_summary.json`.

    `train_store` is one store or several (their usable tiles are pooled; tile sizes must agree).

    `callbacks` are Ray Train callbacks (a Tune sweep passes `TuneReportCallback`).
    `fault_exit_at_step` kills one worker process at that step of the first attempt (fault injection
    for tests and `bench/`): `FailureConfig` must bring the run back from the last checkpoint.
    """
    from axion_ray.distributed import init_ray, read_tile_store, worker_cpus
    from axion_ray.models.builder import stage_provenance
    from axion_ray.train.base import fit_trainer
    from axion_ray.train.loop import stage_task, train_loop_per_worker

    cfg.validate()
    spec = stage_spec(cfg.stage, cfg.kind)
    if spec.generative and cfg.lora_rank <= 0:
        cfg = dataclasses.replace(cfg, lora_rank=TERRAMIND_LORA_RANK)
    if cfg.weights:  # workers do not share the driver's working directory
        cfg = dataclasses.replace(cfg, weights=str(Path(cfg.weights).resolve()))
    base = stage_provenance(cfg.stage, cfg.preset, kind=cfg.kind, encoder=cfg.encoder, weights=cfg.weights,
                            allow_random_init=cfg.allow_random_init or spec.family == "regress")  # fail fast
    if spec.family == "regress" and not base["random_init"] and base["weights"]["files"] and cfg.lora_rank <= 0:
        cfg = dataclasses.replace(cfg, lora_rank=TERRAMIND_LORA_RANK)  # a published encoder: LoRA on it
    trains = open_stores(train_store)
    val = TileStore.open(val_store, mode="r")
    tiles_of = [_usable_tiles(train, "train", cfg) for train in trains]
    sizes = {(t.height, t.width) for t in trains}
    if len(sizes) > 1:
        raise TileDataError(f"training stores must share one tile size, got {sorted(sizes)}")
    _usable_tiles(val, "validation", cfg)
    if val.path in [t.path for t in trains]:
        raise ConfigError(f"the validation store {val.path} is also a training store: validate on an AOI the model "
                          "does not train on")
    n_tiles = sum(t.size for t in tiles_of)
    out = Path(out_dir).resolve()
    resuming = claim_run_dir(out, {"config": dataclasses.asdict(cfg), "train_stores": [t.path for t in trains],
                                    "val_store": val.path})
    if resuming:
        say(f"{out} already holds this run: resuming from its last checkpoint")

    init_ray(None)
    cpus_each = worker_cpus(cfg.cpus_per_worker, cfg.use_gpu, cfg.workers)
    arrays = stage_task(dataclasses.asdict(cfg)).train_arrays()
    parts = [read_tile_store(train.path, tiles, arrays, (train.height, train.width), tiles_per_task=32)
             for train, tiles in zip(trains, tiles_of)]
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    in_memory = ds.size_bytes() < 2 ** 30  # small enough to read once and reuse every epoch (train/base.ShardBatches)
    if in_memory:
        ds = ds.materialize()
    steps_per_epoch = math.ceil(n_tiles / cfg.workers / cfg.batch_size)  # at full size; elastic runs recompute
    loop_config = {**dataclasses.asdict(cfg), "val_store": val.path, "train_tiles": int(n_tiles),
                   "fault_exit_at_step": fault_exit_at_step, "in_memory": in_memory,
                   "init_spectrum": _truth_spectrum(trains, tiles_of) if spec.family == "regress" and cfg.stage == 1
                   else None,  # only a regression Stage 1 starts from it (Stage 3 starts as its input)
                   "torch_threads": max(1, int(round(cpus_each))) if not cfg.use_gpu else None}
    what = {"terramind": "LoRA adapters on the token objective", "prithvi": "the refiner",
            "regress": f"regression, {base['model']}" + (" from scratch" if base["random_init"] else "")}[spec.family]
    say(f"training Stage {cfg.stage} ({cfg.preset}, {what}) on {n_tiles} tiles with {cfg.workers} worker(s) x {cpus_each:g} CPU, "
        f"{cfg.epochs} epoch(s) of {steps_per_epoch} steps, validating every {cfg.val_every_steps} steps")
    result = fit_trainer(
        train_loop_per_worker, loop_config, name=spec.name, storage_path=out,
        workers=(cfg.min_workers, cfg.workers) if cfg.min_workers else cfg.workers, use_gpu=cfg.use_gpu,
        worker_cpus=cpus_each, score_attribute="composite_score", keep=cfg.keep_top_k,
        max_failures=cfg.max_failures, callbacks=callbacks, datasets={"train": ds})
    checkpoints = [{"path": str(Path(ckpt.path) / "checkpoint.pt"), **{k: v for k, v in m.items()}}
                   for ckpt, m in result.best_checkpoints]
    summary = {"run_dir": str(out), "config": dataclasses.asdict(cfg), "train_tiles": int(n_tiles),
               "train_stores": [t.path for t in trains],
               "final_metrics": result.metrics, "checkpoints": checkpoints}
    (out / "training_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
