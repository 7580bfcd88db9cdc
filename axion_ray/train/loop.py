"""The per-worker Ray Train loop for every stage: DDP, AMP on GPU, validation with the composite score.

What differs between stages is kept in one `StageTask` each:

- Stage 2 (Prithvi refiner) trains on `stage2_loss` against the truth and Stage 1's edges; all of it
  (or LoRA adapters + head) trains, and checkpoints hold the whole state.
- Stages 1 and 3 of the generation kind (TerraMind) fine-tune LoRA adapters on TerraMind's token
  objective (`token_loss`); checkpoints hold only the adapters (the ~300 M-parameter base is rebuilt
  from its recorded weights).
- Stages 1, 2 and 3 of the regression kind (models/regress.py) train on Stage 2's pixel losses
  against the truth, whole (or LoRA on a published encoder + the UNet); checkpoints hold the whole
  state. The per-pixel calibrators (Stage 2's regression kind, Stage 3's default) train on pixels
  drawn across every tile.

Every `val_every_steps` steps (and at the end) rank 0 measures the full metric set on the validation
store — the model against the stage's baseline and the truth — and reports it with a checkpoint
(docs/ARCHITECTURE.md §4 `.pt`, plus optimizer state so a restarted worker group resumes where it
was). Other ranks report the same step without a checkpoint. DDP, the schedule, reporting and resume
follow the shared template in `train/base.py`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from axion_ray.config import CompositeConfig
from axion_ray.models.registry import TRUTH_ARRAY, StageSpec, stage_spec


class StageTask:
    """How one stage trains: the store arrays it reads, its model, objective and validation inputs.

    This class is Stage 2 (the refiner); what a stage reads comes from its `StageSpec`.
    """

    stage = 2

    def __init__(self, config: dict[str, Any]):
        self.config = config

    @property
    def spec(self) -> StageSpec:
        return stage_spec(self.stage)

    def pixel_autocast(self, device: torch.device) -> Any:
        """The pixel losses' forward: fp16 AMP on GPU (with the loop's loss scaling); on CPU fp32, or bf16
        where the config asks (`TrainConfig.cpu_bf16`)."""
        from axion_ray.models.common import autocast

        return autocast(device, True, dtype=torch.float16, cpu_bf16=self.config.get("cpu_bf16", False))

    # -- data
    @property
    def baseline_array(self) -> str:
        """The array the trained model must beat (and, for stages 2 and 3, keep the edges of)."""
        return self.spec.train_baseline

    def train_arrays(self) -> list[str]:
        return [*self.validation_inputs(), TRUTH_ARRAY]

    # -- model
    def build(self) -> torch.nn.Module:
        from axion_ray.models import apply_lora, build_stage

        c = self.config
        model = build_stage(self.stage, c["preset"], weights=c["weights"], allow_random_init=c["allow_random_init"],
                            timesteps=c["timesteps"])
        provenance = model.provenance
        if c["lora_rank"] > 0:
            model = apply_lora(model, self.lora_settings())
        model.provenance = provenance
        return model

    def lora_settings(self):
        from axion_ray.models import LoraSettings

        return LoraSettings(rank=self.config["lora_rank"], alpha=self.config["lora_alpha"])

    def model_config(self, model: torch.nn.Module) -> dict[str, Any]:
        """What `build_stage` needs to rebuild this model from a checkpoint."""
        from axion_ray.models.presets import PRESETS

        spec = PRESETS[self.config["preset"]]
        lora = self.lora_settings().to_dict() if self.config["lora_rank"] > 0 else None
        return {"stage": 2, "preset": self.config["preset"], "prithvi": model.provenance["model"],
                "head_dim": spec.head_dim, "head_blocks": spec.head_blocks, "lora": lora}

    def checkpoint_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    # -- objective and validation
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        from axion_ray.train.losses import stage2_loss

        opt_v1, truth = batch["opt_v1"].float(), batch[TRUTH_ARRAY].float()
        with self.pixel_autocast(device):  # no-data pixels (NaN) reach the model as 0
            pred = model(torch.nan_to_num(opt_v1, nan=0.0), batch["month"].long(), batch["biome_code"].long())
        weights = {k: self.config[k] for k in ("w_l1", "w_sam", "w_ndvi", "w_evi", "w_edge")}
        return stage2_loss(pred.float(), truth, opt_v1, **weights)

    def predict(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(inputs["opt_v1"], inputs["month"], inputs["biome_code"])

    def validation_inputs(self) -> list[str]:
        """The store's image arrays the model reads (its per-tile scalars come with every row)."""
        return list(self.spec.inputs)


class TerraMindTask(StageTask):
    """Stages 1 and 3: LoRA on TerraMind, token objective, adapter-only checkpoints."""

    def __init__(self, config: dict[str, Any], stage: int):
        super().__init__(config)
        self.stage = stage

    @property
    def baseline_array(self) -> str:
        # Stage 1 must beat the store's existing Stage 1 output; Stage 3 the input it grounds.
        return self.config["condition"] if self.spec.optical_input else self.spec.train_baseline

    def validation_inputs(self) -> list[str]:
        return list(self.spec.inputs_for(self.config["condition"]))

    def lora_settings(self):
        from axion_ray.models import LoraSettings

        return LoraSettings(rank=self.config["lora_rank"], alpha=self.config["lora_alpha"], trainable=())

    def model_config(self, model: torch.nn.Module) -> dict[str, Any]:
        return {"stage": self.stage, "preset": self.config["preset"], "lora": self.lora_settings().to_dict(),
                "adapter_only": True, "base_weights": model.provenance["weights"]}

    def checkpoint_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        return {k: v.detach().cpu() for k, v in model.state_dict().items() if k in trainable}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        from axion_ray.models.common import autocast

        # The token objective has no pixel mask: no-data pixels (NaN) are 0 for it (docs/DESIGN_NOTES.md).
        with autocast(device, True, dtype=torch.bfloat16):
            loss = model(*[torch.nan_to_num(batch[name].float(), nan=0.0) for name in self.train_arrays()])
        return loss, {"tokens": float(loss.detach())}

    def predict(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(*[inputs[name] for name in self.validation_inputs()])


class TokenObjective(torch.nn.Module):
    """A TerraMind stage whose `forward` is its training loss, so DDP's gradient hooks see the call."""

    def __init__(self, stage_model: torch.nn.Module):
        super().__init__()
        self.stage_model = stage_model

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.stage_model.training_loss(*tensors)


class RegressTask(StageTask):
    """Stages 1, 2 and 3 as regression (models/regress.py): the pixel losses of Stage 2 against the
    truth, whole-state checkpoints. The TerraMind encoder trains from scratch, or — when its published file is
    on disk — gets LoRA adapters while the UNet trains fully."""

    def __init__(self, config: dict[str, Any], stage: int):
        super().__init__(config)
        self.stage = stage

    @property
    def spec(self) -> StageSpec:
        return stage_spec(self.stage, "regress")

    @property
    def condition(self) -> str | None:
        """The optical array Stage 3 grounds (its `--condition`); Stage 2 calibrates `opt_v1` always."""
        return self.config["condition"] if self.stage == 3 else None

    @property
    def baseline_array(self) -> str | None:
        # Stages 2 and 3 must beat the input they calibrate; Stage 1 has none: the Validator's flat baseline.
        return self.validation_inputs()[-1] if self.spec.optical_input else None

    def validation_inputs(self) -> list[str]:
        return list(self.spec.inputs_for(self.condition))

    def build(self) -> torch.nn.Module:
        from axion_ray.models import apply_lora, build_stage

        c = self.config
        # From scratch is a regression stage's normal start (recorded in provenance), not a smoke run.
        model = build_stage(self.stage, c["preset"], kind="regress", encoder=c["encoder"], width=c["width"],
                            weights=c["weights"], allow_random_init=True, seed=c["seed"])
        if c.get("init_spectrum"):  # Stage 1 (train/run.py): the training truth's mean spectrum
            model.start_from(c["init_spectrum"])
        provenance = model.provenance
        if self.uses_lora(model):
            model = apply_lora(model, self.lora_settings())
        model.provenance = provenance
        return model

    def uses_lora(self, model: torch.nn.Module) -> bool:
        """LoRA on a published encoder; a from-scratch encoder must train whole."""
        return self.config["lora_rank"] > 0 and model.encoder is not None and not model.provenance["random_init"]

    def lora_settings(self):
        from axion_ray.models import LoraSettings

        return LoraSettings(rank=self.config["lora_rank"], alpha=self.config["lora_alpha"], trainable=("decoder",))

    def model_config(self, model: torch.nn.Module) -> dict[str, Any]:
        from axion_ray.models.presets import REGRESSION_WIDTH

        lora = self.lora_settings().to_dict() if any("lora_" in n for n, _ in model.named_parameters()) else None
        encoder = model.encoder_name  # as built (the one asked for, else builder.default_encoder)
        config = {"stage": self.stage, "kind": "regress", "preset": self.config["preset"], "encoder": encoder,
                  "width": self.config["width"] or REGRESSION_WIDTH, "lora": lora,
                  "base_weights": model.provenance["weights"]}
        if getattr(model, "PIXEL_WISE", False):
            config["features"] = model.features  # the calibrator's feature set (its class's FEATURE_SETS)
        else:
            config["norm"] = model.norm  # the UNet blocks' normalisation (models/stage2.BLOCK_NORMS)
        return config

    def pixel_rows(self, tiles: dict[str, np.ndarray], features_of: Callable[..., torch.Tensor],
                   max_pixels: int = 4_000_000) -> dict[str, np.ndarray]:
        """A pixel-wise model's training table (train/base.ShardBatches `rows`): the fixed per-pixel
        features, optical input, truth, month and biome of every valid pixel of the cached tiles; at
        most `max_pixels` of them (drawn evenly at random), which bounds its memory (~160 B a pixel with the `texture` features).
        Features are computed once here, by the model's own `features_of(*images)` (its
        `pixel_features`, which has no parameters)."""
        from axion_ray.store.validity import fill_invalid, valid_pixels

        names = self.validation_inputs()  # (s1,) optical: the model's images, the optical input last
        optical_name = names[-1]
        n = len(tiles[TRUTH_ARRAY])
        valid = valid_pixels(tiles[TRUTH_ARRAY], *(tiles[name] for name in names))
        keep = min(1.0, max_pixels / max(1, int(valid.sum())))
        rng = np.random.default_rng(int(self.config["seed"]))
        parts: dict[str, list[np.ndarray]] = {"features": [], "optical": [], "truth": [], "month": [], "biome_code": []}
        for start in range(0, n, 64):
            part = slice(start, start + 64)
            ok = valid[part] & (rng.random(valid[part].shape) < keep) if keep < 1 else valid[part]
            tile_of = np.nonzero(ok)[0]
            # No-data filled as the pipeline fills it (nearest valid pixel): the S1 mean beside a no-data
            # border then sees in training what it sees in inference.
            seen = valid_pixels(*(tiles[name][part] for name in names))
            with torch.no_grad():
                feats = features_of(*(torch.from_numpy(fill_invalid(tiles[name][part], seen)) for name in names)).numpy()
            for key, image in (("features", feats), ("optical", tiles[optical_name][part]),
                               ("truth", tiles[TRUTH_ARRAY][part])):
                parts[key].append(np.moveaxis(image, 1, -1)[ok])  # (t, C, H, W) → (valid pixels, C)
            for key in ("month", "biome_code"):
                parts[key].append(np.asarray(tiles[key][part])[tile_of].astype(np.int64))
        return {k: np.concatenate(v).astype(np.float32 if k in ("features", "optical", "truth") else np.int64)
                for k, v in parts.items()}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device
             ) -> tuple[torch.Tensor, dict[str, float]]:
        from axion_ray.train.losses import stage2_loss

        weights = {k: self.config[k] for k in ("w_l1", "w_sam", "w_ndvi", "w_evi", "w_edge")}
        if "features" in batch:  # pixels drawn across tiles (`pixel_rows`), each a 1x1 image
            optical, truth = (batch[k].float()[..., None, None] for k in ("optical", "truth"))
            other_images = [None] * (len(self.validation_inputs()) - 1)  # Stage 3's s1: in the features
            with self.pixel_autocast(device):
                pred = model(*other_images, optical, batch["month"].long(), batch["biome_code"].long(),
                             features=batch["features"].float()[..., None, None])
            return stage2_loss(pred.float(), truth, optical, **weights)  # one pixel has no edges: that term is 0
        images = {name: batch[name].float() for name in self.validation_inputs()}
        truth = batch[TRUTH_ARRAY].float()
        if self.config.get("augment", True):  # one of the 8 flips/rotations, the same for every image
            k, flip = int(torch.randint(4, ())), bool(torch.randint(2, ()))
            images, truth = ({n: dihedral(v, k, flip) for n, v in images.items()}, dihedral(truth, k, flip))
        with self.pixel_autocast(device):  # no-data pixels (NaN) reach the model as 0
            pred = model(*[torch.nan_to_num(v, nan=0.0) for v in images.values()],
                         batch["month"].long(), batch["biome_code"].long())
        # Edges: Stages 2 and 3 keep their optical input's; Stage 1 has none, so it is asked for the truth's.
        edges = images[self.validation_inputs()[-1]] if self.spec.optical_input else truth
        return stage2_loss(pred.float(), truth, edges, **weights)

    def predict(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(*[inputs[name] for name in self.validation_inputs()], inputs["month"], inputs["biome_code"])


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """(B, C, H, W) rotated by k·90° and optionally mirrored: land cover has no preferred orientation,
    so the regression stages see 8x the views of a small training set (square tiles only)."""
    if x.shape[-1] != x.shape[-2]:
        return x
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def stage_task(config: dict[str, Any]) -> StageTask:
    if config.get("kind") == "regress":
        return RegressTask(config, config["stage"])
    if config["stage"] == 2:
        return StageTask(config)
    return TerraMindTask(config, config["stage"])


class Validator:
    """Holds the validation tiles and the baseline figures; scores a model on them.

    Geometry is measured against the stage's optical input (Stage 2: `opt_v1`, Stage 3: its
    condition) — the edges it must not move; Stage 1 has no optical input, so against the truth.

    `shard=(rank, world_size)`: this worker scores every `world_size`-th batch from `rank`, and a call
    with `gather` (train/base.gather_to_first) merges every worker's figures on rank 0 — the figures
    of all the tiles, in about a `world_size`-th of the time. Why: the other workers would otherwise
    wait for rank 0 at every validation, and a selection set of several AOIs is 256 tiles (a CPU
    chain's Stage 1 spent ~80 s of its 900 so, run (AF) in bench/RESULTS.md). Whole batches, the same
    as one worker's: the geometry figures depend on how tiles are batched (`metrics.geometry`), and a
    checkpoint re-scored by `select` must get the figures training reported. The baseline's figures
    are cheap and every worker computes them over all the tiles.
    """

    def __init__(self, store_path: str, task: StageTask, max_tiles: int, batch_size: int = 32,
                 shard: tuple[int, int] = (0, 1)):
        from axion_ray.metrics.spectral import SpectralAccumulator
        from axion_ray.store.tile_store import TileStatus, TileStore
        from axion_ray.store.validity import fill_invalid, valid_pixels

        store = TileStore.open(store_path, mode="r")
        if task.baseline_array:
            tiles = np.flatnonzero(store.status(task.baseline_array) == TileStatus.DONE)
        else:  # Stage 1 regression reads only s1: every tile with data
            tiles = np.flatnonzero(store.status(task.spec.output) != TileStatus.NO_DATA)
        if tiles.size > max_tiles:  # evenly spread: a pool of several AOIs is sampled across all of them
            tiles = tiles[np.linspace(0, tiles.size - 1, max_tiles).round().astype(int)]
        self.task, self.tiles = task, tiles
        truth = store.read(TRUTH_ARRAY, tiles)
        if task.baseline_array:
            baseline = store.read(task.baseline_array, tiles)
        else:  # the best flat image: the truth's mean spectrum (what a model that ignores S1 could reach)
            mean = np.nanmean(truth, axis=(0, 2, 3))[None, :, None, None]
            baseline = np.where(np.isnan(truth), np.nan, mean).astype(np.float32)
        acc = SpectralAccumulator()
        acc.update(baseline, truth)
        self.baseline = acc.compute()
        self.composite_cfg = CompositeConfig.for_stage(task.stage)
        self.batch_size = 4 if task.spec.generative else batch_size

        rank, world_size = shard
        batch_of = np.arange(tiles.size) // self.batch_size
        mine = np.flatnonzero(batch_of % world_size == rank)  # this worker's share: every world_size-th batch
        self.truth = truth[mine]
        self.edges_of = (truth if task.stage == 1 else baseline)[mine]
        self.inputs = {name: store.read(name, tiles[mine]) for name in task.validation_inputs()}
        # No-data pixels are filled for the model and are NaN in its prediction (the metrics skip them).
        self.valid = valid_pixels(*self.inputs.values())
        self.inputs = {name: fill_invalid(v, self.valid) for name, v in self.inputs.items()}
        meta = store.tile_meta(tiles[mine])
        self.inputs.update(month=meta["month"].astype(np.int64), biome_code=meta["biome_code"].astype(np.int64))

    @torch.no_grad()
    def __call__(self, model: torch.nn.Module, device: torch.device,
                 gather: Callable[[Any], list[Any] | None] | None = None) -> dict[str, Any] | None:
        """The figures over every tile; with `gather`, on rank 0 only (None on the others)."""
        from axion_ray.metrics.composite import composite_score
        from axion_ray.metrics.geometry import GeometryAccumulator
        from axion_ray.metrics.spectral import SpectralAccumulator

        was_training = model.training
        model.eval()
        spectral, geometry = SpectralAccumulator(), GeometryAccumulator()
        for start in range(0, len(self.truth), self.batch_size):
            part = slice(start, start + self.batch_size)
            batch = {k: torch.from_numpy(v[part]).to(device) for k, v in self.inputs.items()}
            pred = self.task.predict(model, batch).float().cpu().numpy()
            pred = np.where(self.valid[part][:, None], pred, np.nan)
            spectral.update(pred, self.truth[part])
            geometry.update(pred, self.edges_of[part])
        model.train(was_training)
        if gather is not None:
            shares = gather((spectral, geometry))
            if shares is None:
                return None
            spectral, geometry = SpectralAccumulator(), GeometryAccumulator()
            for other_spectral, other_geometry in shares:
                spectral.merge(other_spectral)
                geometry.merge(other_geometry)
        pred_m, geo = spectral.compute(), geometry.compute()
        comp = composite_score(pred_m, self.baseline, geo, self.composite_cfg)
        return {"pred": pred_m, "baseline": self.baseline, "geometry": geo, **comp.to_dict()}


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray.train

    from axion_ray.metrics.composite import rank_score
    from axion_ray.models.weights import load_fitting_state
    from axion_ray.train.base import (
        ShardBatches,
        gather_to_first,
        prepare_ddp,
        report,
        restored_checkpoint,
        warmup_cosine,
    )

    ctx = ray.train.get_context()
    rank, world_size = ctx.get_world_rank(), ctx.get_world_size()
    # An elastic run may start with fewer workers than asked: each shard, and so each epoch, is longer.
    config = {**config, "steps_per_epoch": math.ceil(config["train_tiles"] / world_size / config["batch_size"])}
    torch.manual_seed(config["seed"] + rank)
    if config.get("torch_threads"):
        torch.set_num_threads(config["torch_threads"])

    task = stage_task(config)
    model = task.build()
    provenance = model.provenance
    model.train()
    tokens = task.spec.generative  # TerraMind generation trains through its token objective
    ddp_model, core_trained = prepare_ddp(TokenObjective(model) if tokens else model)
    core = core_trained.stage_model if tokens else core_trained
    device = next(core.parameters()).device
    params = [p for p in core.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config["lr"], weight_decay=config["weight_decay"])
    scheduler = warmup_cosine(optimizer, config["epochs"] * config["steps_per_epoch"], warmup_steps=20)
    # Loss scaling for the fp16 pixel models on GPU; TerraMind's token objective trains in bf16, which needs none.
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and not tokens)

    step, start_epoch, resumed_from = 0, 0, None
    state = restored_checkpoint()
    if state is not None:
        missing, unexpected, mismatched = load_fitting_state(core, state["model_state_dict"])
        if mismatched or unexpected or (not tokens and missing):
            raise RuntimeError(f"the run's checkpoint (step {state['step']}) does not fit this model (shapes differ "
                               f"{mismatched[:2]}, missing {missing[:3]}, unexpected {unexpected[:3]}): was it "
                               "written by another version? Train into a new run directory.")
        optimizer.load_state_dict(state["optimizer_state_dict"])
        scheduler.load_state_dict(state["scheduler_state_dict"])
        step, start_epoch = int(state["step"]), int(state["epoch"])
        resumed_from = step

    # Every worker scores its share of the validation tiles; rank 0 gathers the figures and reports them.
    gather = gather_to_first()
    validator = Validator(config["val_store"], task, config["max_val_tiles"],
                          shard=(rank, world_size) if gather else (0, 1))
    # A pixel-wise model learns from pixels drawn across every cached tile (models/regress.PixelCalibrator
    # says why); streamed, it trains on whole tiles like any other. A convolutional regression model (the
    # UNet alone) trains on random crops from more tiles a step (train/base.ShardBatches says why).
    pixel_wise = getattr(core, "PIXEL_WISE", False) and config.get("in_memory", False)
    batches = ShardBatches(ray.train.get_dataset_shard("train"), config["batch_size"], config["steps_per_epoch"],
                           in_memory=config.get("in_memory", False), seed=config["seed"] * 1000 + rank,
                           rows=(lambda tiles: task.pixel_rows(tiles, core.pixel_features)) if pixel_wise else None,
                           rows_per_step=config.get("pixel_batch") if pixel_wise else None,
                           crop=config.get("crop") if isinstance(task, RegressTask) and core.encoder is None else None)
    last_loss: dict[str, float] = {}

    def validate_and_report(epoch: int) -> None:
        metrics: dict[str, Any] = {"step": step, "epoch": epoch, "world_size": world_size,
                                   **{f"loss_{k}": v for k, v in last_loss.items()}}
        result = validator(core, device, gather)
        if result is None:  # not rank 0: its share went to rank 0's figures
            report(metrics)
            return
        metrics.update({**result["pred"], **result["geometry"], "composite_score": result["composite_score"],
                        "constraints_pass": result["constraints_pass"],
                        "rank_score": rank_score(result["composite_score"], result["constraints_pass"])})
        report(metrics, checkpoint={
            "model_state_dict": task.checkpoint_state(core),
            "optimizer_state_dict": optimizer.state_dict(), "scheduler_state_dict": scheduler.state_dict(),
            "config": task.model_config(core), "provenance": provenance,
            "step": step, "epoch": epoch, "metrics": result, "composite_score": result["composite_score"],
            "resumed_from_step": resumed_from,
        })

    if state is None and config.get("validate_at_start"):  # TrainConfig.validate: stages that start as their input
        validate_and_report(0)  # the identity's score: what every later checkpoint must beat to be chosen
    # After a restart, skip the part of the interrupted epoch that the checkpoint already covers.
    skip = max(0, step - start_epoch * config["steps_per_epoch"])
    for epoch in range(start_epoch, config["epochs"]):
        for batch in batches.epoch(device):
            if skip:
                skip -= 1
                continue
            loss, last_loss = task.loss(ddp_model, batch, device)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            if step % config["val_every_steps"] == 0:
                validate_and_report(epoch)
            if state is None and config.get("fault_exit_at_step") == step and rank == world_size - 1:
                os._exit(1)  # fault injection (tests, bench/faults): a worker process dies mid-run
    if step % config["val_every_steps"] != 0 or step == 0:
        validate_and_report(config["epochs"])
