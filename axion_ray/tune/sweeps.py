"""The three sweeps: Stage 2 training, Stage 3 inference knobs, inspection classifiers — on Ray Tune.

Training sweeps follow Train V2's pattern: each Tune trial is a function that drives its own
`TorchTrainer`; `TuneReportCallback` forwards every validation report to Tune, so ASHA can stop weak
trials at its rungs. A trial reserves no CPU itself (its trainer's workers do); `--max-concurrent`
bounds how many trainers share the cluster. An interrupted sweep continues with `resume=True`
(`Tuner.restore`: finished trials are kept, unfinished ones restart).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.config import ClassifierConfig, TrainConfig
from axion_ray.errors import ConfigError
from axion_ray.tune.outputs import write_outputs
from axion_ray.tune.space import load_space, swept

SWEEP_NAME = "sweep"


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    samples: int = 4
    scheduler: str = "asha"          # asha | fifo
    max_concurrent: int = 1
    workers_per_trial: int = 1
    cpus_per_worker: float | None = None
    gpus_per_trial: bool = False     # one GPU per training worker
    resume: bool = False
    seed: int = 0

    def validate(self) -> None:
        """Raise ConfigError before Ray starts or anything is written."""
        if self.samples < 1 or self.max_concurrent < 1 or self.workers_per_trial < 1:
            raise ConfigError(f"--samples, --max-concurrent and workers per trial must be at least 1, got "
                              f"{self.samples}, {self.max_concurrent}, {self.workers_per_trial}")
        if self.scheduler not in ("asha", "fifo"):
            raise ConfigError(f"scheduler must be asha or fifo, got {self.scheduler!r}")


class SweepFailedError(RuntimeError):
    """Every trial of a sweep failed: there is no best configuration (exit 1, not a user mistake)."""


def _require_a_best(best: dict[str, Any] | None, rows: list[dict[str, Any]], out: Path) -> None:
    if best is None:
        first = next((r["status"] for r in rows if str(r.get("status", "")).startswith("ERROR")), "no trial reported")
        raise SweepFailedError(f"every trial of the sweep failed ({first}); see {out / 'SWEEP.md'}")


@dataclasses.dataclass(frozen=True)
class Stage3Knobs:
    """Inference-time knobs a Stage 3 sweep may vary (the names a space file may use)."""

    timesteps: int = 10
    seed: int = 0
    standardize: bool = True
    batch_size: int = 4


#: Trials a Stage 3 sweep draws from a `--space` file (without one it scores its timesteps grid once).
STAGE3_SAMPLES = 1

# Default spaces (a `--space` file replaces them).
STAGE2_SPACE: dict[str, Any] = {
    "lr": {"loguniform": [3.0e-4, 5.0e-3]},
    "weight_decay": {"loguniform": [1.0e-6, 1.0e-2]},
    "w_ndvi": {"uniform": [0.5, 4.0]},
    "w_edge": {"uniform": [0.1, 1.0]},
}
STAGE2_LORA_SPACE: dict[str, Any] = {"lora_rank": {"choice": [4, 8, 16]}, "lora_alpha": {"choice": [8, 16, 32]}}
CLASSIFIER_SPACE: dict[str, Any] = {
    "lr": {"loguniform": [3.0e-4, 3.0e-3]},
    "label_smoothing": {"choice": [0.0, 0.05, 0.1]},
    "augment": {"choice": ["none", "light", "heavy"]},
}
STAGE2_METRICS = ["composite_score", "ndvi_rmse", "evi_rmse", "sam_rad", "edge_disp_mean_px", "edge_disp_max_px",
                  "edge_ratio"]
STAGE3_METRICS = ["composite_score", "ndvi_rmse", "evi_rmse", "sam_rad", "ssim", "edge_disp_mean_px", "edge_ratio",
                  "tiles_per_s"]
CLASSIFIER_METRICS = ["accuracy", "macro_f1", "pit_recall"]


# ---------------------------------------------------------------------------- the Tune runner
def _release_leaked_placement_groups(before: set[str]) -> int:
    """Remove placement groups created during the sweep that outlived it.

    Train V2 reserves its workers in a detached placement group that a watchdog actor removes when
    the TrainController dies. When ASHA stops a trial, Tune kills the trial and its controller; on a
    loaded node the watchdog's GCS calls time out and the group stays (measured: 1.74 of 2 CPUs held
    after a sweep, so the next sweep's trials stayed PENDING). Every trial has ended when this runs.
    """
    from ray._raylet import PlacementGroupID
    from ray.util import placement_group_table, remove_placement_group
    from ray.util.placement_group import PlacementGroup

    leaked = [pid for pid, pg in placement_group_table().items() if pid not in before and pg["state"] == "CREATED"]
    for pid in leaked:
        remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pid))))
    return len(leaked)


def _janitor(before: set[str]):
    """A Tune callback that releases leaked placement groups whenever a trial ends and no other trial
    is running: a trial ASHA stopped must not hold its workers' CPUs while the next one waits for them
    (the sweep that never ended: its third trial waited NO_RESOURCES behind a stopped trial's group)."""
    from ray import tune

    class PlacementGroupJanitor(tune.Callback):
        def _release_if_idle(self, trials, trial) -> None:
            if not any(t is not trial and t.status == "RUNNING" for t in trials):
                _release_leaked_placement_groups(before)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._release_if_idle(trials, trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._release_if_idle(trials, trial)

    return PlacementGroupJanitor()


def _run_tuner(trainable, space: dict[str, Any], out: Path, sweep: SweepConfig, max_t: int):
    from ray.util import placement_group_table

    before = set(placement_group_table())
    try:
        return _fit_tuner(trainable, space, out, sweep, max_t, callbacks=[_janitor(before)])
    finally:
        _release_leaked_placement_groups(before)


def _fit_tuner(trainable, space: dict[str, Any], out: Path, sweep: SweepConfig, max_t: int,
               callbacks: list | None = None):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    storage = out / "tune"
    path = storage / SWEEP_NAME
    if sweep.resume:
        if not tune.Tuner.can_restore(str(path)):
            raise ConfigError(f"nothing to resume in {out}: no sweep was started there")
        return tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True).fit()
    if path.exists():
        raise ConfigError(f"{out} already holds a sweep; pass --resume to continue it or choose another --out")
    if sweep.scheduler not in ("asha", "fifo"):
        raise ConfigError(f"scheduler must be asha or fifo, got {sweep.scheduler!r}")
    # max_t one past the last report: a trial that reaches the end finishes by itself (its trainer
    # shuts down cleanly); ASHA only cuts trials that are behind at a rung.
    scheduler = (ASHAScheduler(time_attr="training_iteration", max_t=max(1, max_t) + 1, grace_period=1,
                               reduction_factor=2)
                 if sweep.scheduler == "asha" else FIFOScheduler())
    tuner = tune.Tuner(
        trainable, param_space=space,
        tune_config=tune.TuneConfig(metric="rank_score", mode="max", num_samples=sweep.samples, scheduler=scheduler,
                                    max_concurrent_trials=sweep.max_concurrent,
                                    # a stopped trial's actor must die so its TrainController (and the
                                    # placement group its workers hold) go with it; a reused actor
                                    # kept the trainer running and starved the next trial
                                    reuse_actors=False,
                                    search_alg=BasicVariantGenerator(random_state=sweep.seed,
                                                                     max_concurrent=sweep.max_concurrent)),
        run_config=tune.RunConfig(name=SWEEP_NAME, storage_path=str(storage), callbacks=callbacks))
    return tuner.fit()


def _rows(grid, params: list[str], metrics: list[str], score_key: str, passes_key: str, max_t: int) -> list[dict[str, Any]]:
    """One row per trial: its best report by rank_score (what selection would pick), config and time."""
    rows = []
    for result in grid:
        df = result.metrics_dataframe
        trial_id = Path(result.path).name
        row: dict[str, Any] = {"trial_id": trial_id, "config": dict(result.config or {}), "path": result.path}
        if df is not None and "rank_score" in df:
            df = df[df["rank_score"].notna()]
        if df is None or df.empty or "rank_score" not in df:
            row.update(status=f"ERROR: {str(result.error).splitlines()[0][:200]}" if result.error else "no report",
                       rank_score=float("nan"), score=float("nan"), passes=False, iterations=0, time_s=float("nan"))
            rows.append(row)
            continue
        best = df.loc[df["rank_score"].idxmax()]
        iterations = int(df["training_iteration"].max())
        row.update({m: float(best[m]) if m in best and best[m] is not None else float("nan") for m in metrics})
        row.update(rank_score=float(best["rank_score"]), score=float(best[score_key]), passes=bool(best[passes_key]),
                   iterations=iterations, time_s=float(df["time_total_s"].max()),
                   status="ERROR" if result.error else ("stopped early (ASHA)" if iterations < max_t else "completed"))
        rows.append(row)
    return rows


TRIAL_CPU = 0.01  # a trial only drives its trainer, whose workers reserve the real resources (Tune needs > 0)


def _best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial with the highest rank_score, or None if no trial produced one."""
    return max((r for r in rows if np.isfinite(r["rank_score"])), key=lambda r: r["rank_score"], default=None)


def _trial_resources(trainable):
    from ray import tune

    return tune.with_resources(trainable, {"cpu": TRIAL_CPU})


def _cpus_per_worker(sweep: SweepConfig) -> float | None:
    """Share the cluster's CPUs between the concurrent trials' workers (a read task's share and the
    trials' own token CPUs left free)."""
    from axion_ray.distributed import READ_TASK_CPUS, cpu_share

    if sweep.cpus_per_worker or sweep.gpus_per_trial:
        return sweep.cpus_per_worker
    k = max(1, sweep.max_concurrent)
    return cpu_share(k * sweep.workers_per_trial, reserve=READ_TASK_CPUS + TRIAL_CPU * k, floor=0.2)


# ---------------------------------------------------------------------------- Stage 2
def _stage2_trial(config: dict[str, Any], base: dict[str, Any], train_store: list[str], val_store: str) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from axion_ray.train import train_stage

    cfg = TrainConfig(**{**base, **config})
    train_stage(train_store, val_store, Path(tune.get_context().get_trial_dir()) / "train", cfg,
                say=lambda _: None, callbacks=[TuneReportCallback()])


def tune_stage2(train_store: str | Sequence[str], val_store: str, out: str | Path, base: TrainConfig = TrainConfig(),
                sweep: SweepConfig = SweepConfig(), space_file: str | Path | None = None,
                say: Callable[[str], None] = print) -> dict[str, Any]:
    """Sweep Stage 2 training — or, with `base.kind == "regress"`, a regression stage (1, 2 or 3) —
    against `composite_score`; export the best trial's best checkpoint.

    `train_store` is one store or several (pooled, as in `train_stage`)."""
    from ray import tune

    from axion_ray.distributed import init_ray
    from axion_ray.store.tile_store import TileStore
    from axion_ray.train.run import open_stores
    from axion_ray.train.select import select_and_export

    sweep.validate()
    default = {**STAGE2_SPACE, **(STAGE2_LORA_SPACE if base.weights else {})}
    raw, space = load_space(space_file, default, TrainConfig)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    trains, val = open_stores(train_store), TileStore.open(val_store, mode="r")
    init_ray(None)
    # Stage 2, or a regression stage (the same pixel losses, so the same search space).
    base = dataclasses.replace(base, workers=sweep.workers_per_trial, use_gpu=sweep.gpus_per_trial,
                               cpus_per_worker=_cpus_per_worker(sweep),
                               stage=base.stage if base.kind == "regress" else 2)
    steps = base.epochs * math.ceil(sum(t.n_tiles for t in trains) / base.workers / base.batch_size)
    max_t = max(1, math.ceil(steps / base.val_every_steps))
    say(f"Stage {base.stage} sweep: {sweep.samples} trial(s) over {', '.join(swept(raw)) or 'nothing'}, scheduler "
        f"{sweep.scheduler}, up to {sweep.max_concurrent} at once, {max_t} validation(s) per trial")
    trainable = _trial_resources(tune.with_parameters(
        _stage2_trial, base=dataclasses.asdict(base), train_store=[t.path for t in trains], val_store=val.path))
    grid = _run_tuner(trainable, space, out, sweep, max_t)
    params = swept(raw)
    rows = _rows(grid, params, STAGE2_METRICS, "composite_score", "constraints_pass", max_t)
    best = _best_row(rows)
    best_config = {**dataclasses.asdict(base), **best["config"]} if best else None
    ranked = write_outputs(out, f"Stage {base.stage} sweep", rows, params, STAGE2_METRICS, "composite_score", best_config)
    _require_a_best(best, rows, out)
    summary: dict[str, Any] = {"out": str(out), "trials": len(rows), "best": _public(ranked[0]) if ranked else None}
    if best is not None:
        meta = select_and_export(Path(best["path"]) / "train", out / "best.pt", warn=say)
        summary["export"] = meta["export"]
    return summary


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "path"}


# ---------------------------------------------------------------------------- Stage 3
def _stage3_trial(config: dict[str, Any], store_path: str, condition: str, max_tiles: int, preset: str,
                  weights: str | None, checkpoint: str | None, allow_random_init: bool) -> None:
    import torch
    from ray import tune

    from axion_ray.metrics.composite import composite_score, rank_score
    from axion_ray.metrics.geometry import GeometryAccumulator
    from axion_ray.metrics.spectral import SpectralAccumulator
    from axion_ray.models import build_stage
    from axion_ray.store.tile_store import TileStatus, TileStore

    knobs = Stage3Knobs(**config)
    store = TileStore.open(store_path, mode="r")
    tiles = np.flatnonzero(store.status(condition) == TileStatus.DONE)[:max_tiles]
    s1, cond, truth = store.read("s1", tiles), store.read(condition, tiles), store.read("s2_truth", tiles)
    model = build_stage(3, preset, weights=weights, checkpoint=checkpoint, allow_random_init=allow_random_init,
                        timesteps=knobs.timesteps, standardize=knobs.standardize, seed=knobs.seed)
    spectral, base_acc, geometry = SpectralAccumulator(), SpectralAccumulator(), GeometryAccumulator()
    start = time.perf_counter()
    with torch.inference_mode():
        preds = [model(torch.from_numpy(s1[i:i + knobs.batch_size]), torch.from_numpy(cond[i:i + knobs.batch_size]))
                 .float().numpy() for i in range(0, len(tiles), knobs.batch_size)]
    elapsed = time.perf_counter() - start
    pred = np.concatenate(preds)
    spectral.update(pred, truth)
    base_acc.update(cond, truth)
    geometry.update(pred, cond)
    p, g = spectral.compute(), geometry.compute()
    comp = composite_score(p, base_acc.compute(), g)
    tune.report({**p, **g, "composite_score": comp.composite_score, "constraints_pass": comp.constraints_pass,
                 "rank_score": rank_score(comp.composite_score, comp.constraints_pass),
                 "tiles_per_s": len(tiles) / elapsed, "tiles": int(len(tiles))})


def tune_stage3(store_path: str, out: str | Path, *, timesteps: tuple[int, ...] = (1, 2, 5, 10, 20),
                condition: str = "opt_v2", max_tiles: int = 32, preset: str = "tiny", weights: str | None = None,
                checkpoint: str | None = None, allow_random_init: bool = False, sweep: SweepConfig = SweepConfig(),
                space_file: str | Path | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Score Stage 3 inference knobs (diffusion timesteps first) on a store with truth: quality and tiles/s."""
    from ray import tune

    from axion_ray.distributed import init_ray
    from axion_ray.models.builder import stage_provenance
    from axion_ray.store.tile_store import TileStatus, TileStore

    sweep.validate()
    store = TileStore.open(store_path, mode="r")
    if not store.has("s2_truth"):
        raise ConfigError(f"{store.path} has no s2_truth: a Stage 3 sweep needs a reference to score against")
    if not store.has(condition) or not (store.status(condition) == TileStatus.DONE).any():
        raise ConfigError(f"{store.path} has no finished {condition} tiles to ground (try --condition opt_v1)")
    if any(t < 1 for t in timesteps):
        raise ConfigError(f"timesteps must be at least 1, got {timesteps}")
    stage_provenance(3, preset, weights=weights, checkpoint=checkpoint, allow_random_init=allow_random_init)
    raw, space = load_space(space_file, {"timesteps": {"grid": list(timesteps)}}, Stage3Knobs)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init_ray(None)
    say(f"Stage 3 sweep over {', '.join(swept(raw)) or 'nothing'} on up to {max_tiles} tiles of {store.path}")
    trainable = tune.with_resources(tune.with_parameters(
        _stage3_trial, store_path=store.path, condition=condition, max_tiles=max_tiles, preset=preset,
        weights=weights, checkpoint=checkpoint, allow_random_init=allow_random_init), {"cpu": 1})
    grid_sweep = dataclasses.replace(sweep, scheduler="fifo", samples=sweep.samples if space_file else 1)
    grid = _run_tuner(trainable, space, out, grid_sweep, 1)
    params = swept(raw)
    rows = _rows(grid, params, STAGE3_METRICS, "composite_score", "constraints_pass", 1)
    best = _best_row(rows)
    best_config = {**dataclasses.asdict(Stage3Knobs()), **best["config"]} if best else None
    notes = ("\nTimesteps trade quality for time: read `tiles_per_s` beside the quality columns. Random-init "
             "TerraMind scores say nothing about real quality.\n" if allow_random_init else
             "\nTimesteps trade quality for time: read `tiles_per_s` beside the quality columns.\n")
    ranked = write_outputs(out, "Stage 3 inference sweep", rows, params, STAGE3_METRICS, "composite_score",
                           best_config, notes)
    _require_a_best(best, rows, out)
    return {"out": str(out), "trials": len(rows), "best": _public(ranked[0]) if ranked else None}


# ---------------------------------------------------------------------------- classifiers
def _classifier_trial(config: dict[str, Any], base: dict[str, Any], data_dir: str) -> None:
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from axion_ray.classify.data import load_split
    from axion_ray.classify.train import train_classifier

    cfg = ClassifierConfig(**{**base, **config})
    train, val = (load_split(data_dir, s, tuple(cfg.classes), cfg.image_size) for s in ("train", "val"))
    train_classifier(train, val, Path(tune.get_context().get_trial_dir()) / "train", cfg, say=lambda _: None,
                     callbacks=[TuneReportCallback()])


def tune_classifier(data_dir: str | Path, out: str | Path, base: ClassifierConfig = ClassifierConfig(), *,
                    models: tuple[str, ...] = (), sweep: SweepConfig = SweepConfig(),
                    space_file: str | Path | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Sweep label smoothing, lr, augmentation (and backbones) against validation accuracy, pit recall a floor."""
    from ray import tune

    from axion_ray.classify.data import load_split
    from axion_ray.classify.models import resolve_model_name
    from axion_ray.distributed import init_ray
    from axion_ray.models.weights import resolve_weights

    sweep.validate()
    default = {**CLASSIFIER_SPACE, **({"model": {"choice": list(models)}} if len(models) > 1 else {})}
    raw, space = load_space(space_file, default, ClassifierConfig)
    if len(models) == 1:
        base = dataclasses.replace(base, model=models[0])
    for name in (models or (base.model,)):  # fail fast on missing weights, before any trial starts
        resolve_weights([resolve_model_name(name)[0]], base.weights, base.allow_random_init)
    for split in ("train", "val"):
        load_split(data_dir, split, tuple(base.classes), 8)  # layout errors now, not in every trial
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    init_ray(None)
    base = dataclasses.replace(base, workers=sweep.workers_per_trial, use_gpu=sweep.gpus_per_trial,
                               cpus_per_worker=_cpus_per_worker(sweep))
    say(f"classifier sweep: {sweep.samples} trial(s) over {', '.join(swept(raw)) or 'nothing'}, scheduler "
        f"{sweep.scheduler}, pit recall floor {base.recall_floor}")
    trainable = _trial_resources(tune.with_parameters(_classifier_trial, base=dataclasses.asdict(base),
                                                      data_dir=str(Path(data_dir).resolve())))
    grid = _run_tuner(trainable, space, out, sweep, base.epochs)
    params = swept(raw)
    rows = _rows(grid, params, CLASSIFIER_METRICS, "accuracy", "recall_floor_met", base.epochs)
    best = _best_row(rows)
    best_config = {**dataclasses.asdict(base), **best["config"]} if best else None
    if best_config is not None:
        best_config["classes"] = list(best_config["classes"])
    ranked = write_outputs(out, "Classifier sweep", rows, params, CLASSIFIER_METRICS, "accuracy", best_config,
                           f"\nA trial whose pit recall is below {base.recall_floor} ranks below every trial that meets it.\n")
    _require_a_best(best, rows, out)
    summary: dict[str, Any] = {"out": str(out), "trials": len(rows), "best": _public(ranked[0]) if ranked else None}
    if best is not None:
        src = Path(best["path"]) / "train" / "model_best.pt"
        tmp = out / ".best_model.pt.partial"
        shutil.copyfile(src, tmp)
        tmp.replace(out / "best_model.pt")
        summary["export"] = str(out / "best_model.pt")
    return summary
