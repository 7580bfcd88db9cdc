"""Typed configs: the one place for defaults (the CLI's options default to None and fall through to
these), and the one place each config is validated (`validate()`, called by the library entry point
that takes the config). YAML files map onto them 1:1."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from axion_ray.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """A synthetic AOI (`axion-ray synth`).

    rows x cols tiles of `tile_size` px sharing `overlap` px; `months` are the acquisition months of
    the AOI's swaths (tile-column groups, left to right) and `biomes` the biome codes of its zones;
    empty tuples let the seed choose.
    """

    rows: int = 4
    cols: int = 4
    tile_size: int = 64
    overlap: int = 0
    seed: int = 0
    months: tuple[int, ...] = ()
    biomes: tuple[int, ...] = ()
    crs: str = "EPSG:32633"
    origin: tuple[float, float] = (500000.0, 5200000.0)  # UTM easting/northing of the AOI's top-left
    pixel_size_m: float = 10.0
    with_prior: bool = True
    shard_tiles: int = 0  # tiles per store shard; 0 = sized by the store (store/shards.py)


@dataclasses.dataclass(frozen=True)
class GeometryConfig:
    """Edge extraction for the geometry metrics (docs/ARCHITECTURE.md §6)."""

    edge_threshold: float = 0.1
    truncate_px: float = 10.0
    band: int = 3  # B08


@dataclasses.dataclass(frozen=True)
class CompositeConfig:
    """Composite score weights and hard constraints (docs/ARCHITECTURE.md §6)."""

    w_ndvi: float = 1.0
    w_evi: float = 1.0
    w_sam: float = 0.5
    mean_disp_limit_px: float = 2.0
    max_disp_limit_px: float = 5.0
    min_edge_ratio: float | None = 0.7  # None: edge ratio reported, neither a constraint nor a penalty
    w_mean_disp: float = 10.0
    w_max_disp: float = 5.0
    w_edge_ratio: float = 2.0

    def against_truth(self) -> CompositeConfig:
        """The constraints when the geometry reference is the truth itself (Stage 1, which has no optical
        input; any output scored against the flat image): edges must sit where the truth's are
        (displacement), but their *count* is no constraint. The truth's edge pixels include within-class
        texture and parcel detail that no reading of speckled SAR reproduces: measured on the chain's
        evaluation AOIs, the oracle that knows the land cover exactly scores edge ratio 0.40–0.53 (it
        would fail > 0.7), and a Stage 1 trained longer moves towards it (0.74 → 0.65) while every
        spectral figure, SSIM and edge correlation improve (docs/DESIGN_NOTES.md)."""
        return dataclasses.replace(self, min_edge_ratio=None)

    @classmethod
    def for_stage(cls, stage: int) -> CompositeConfig:
        """What a stage's checkpoints are scored under: Stage 1 has no optical input, so its edges are the
        truth's; Stages 2 and 3 keep their input's."""
        return cls().against_truth() if stage == 1 else cls()


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file's top-level mapping, with a clear error for a missing file or bad YAML."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of option: value")
    return data


@dataclasses.dataclass(frozen=True)
class InferConfig:
    """One `axion-ray infer` run (docs/ARCHITECTURE.md §5). Per-stage resources come from `pipeline.plan`.

    `num_cpus` / `num_gpus` of None mean "decide from the cluster": on a CPU-only machine the stage
    pools share the CPUs (Ray's default of 1 CPU per actor would starve the reader on 2 cores); with
    GPUs the stages share them by measured cost so the whole chain fits (`pipeline.plan.gpu_shares`).
    `stage1_kind` / `stage3_kind` pick generation or regression (models/registry.STAGE_KINDS).
    `tta` > 1 averages the regression UNet stages over 4 or 8 flips/transposes of each tile
    (models/tta.py): better figures for 4x or 8x their model time; other stages run once.
    """

    stages: tuple[int, ...] = (1, 2, 3)
    preset: str = "tiny"
    weights: str | None = None
    stage1_checkpoint: str | None = None
    stage2_checkpoint: str | None = None
    stage3_checkpoint: str | None = None
    stage1_kind: str | None = None  # generate | regress; None: the checkpoint's kind, else generate
    stage3_kind: str | None = None
    allow_random_init: bool = False
    timesteps: int = 10
    tta: int = 1
    seed: int = 0
    batch_size: int = 4
    device: str = "auto"
    amp: bool = True
    skip_existing: bool = True
    actors: tuple[int, int] = (1, 1)
    num_cpus: float | None = None
    num_gpus: float | None = None
    tiles_per_read_task: int = 16
    address: str | None = None
    progress_interval_s: float = 5.0
    wait: bool = False              # another run holds the store: wait for it instead of stopping
    lease_ttl_s: float = 30.0       # a lease not heartbeaten for this long has expired

    def validate(self) -> None:
        """Raise ConfigError for a run that cannot be made, before any store or Ray work."""
        from axion_ray.models.presets import PRESETS, WEIGHT_FILES
        from axion_ray.models.registry import check_stage_chain
        from axion_ray.models.tta import TTA_CHOICES

        check_stage_chain(self.stages)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        lo, hi = self.actors
        if lo < 1 or hi < lo:
            raise ConfigError(f"--actors MIN:MAX needs 1 <= MIN <= MAX, got {lo}:{hi}")
        if self.batch_size < 1 or self.timesteps < 1 or self.tiles_per_read_task < 1:
            raise ConfigError("batch size, timesteps and tiles per read task must be at least 1")
        if self.tta not in TTA_CHOICES:
            raise ConfigError(f"--tta must be one of {', '.join(map(str, TTA_CHOICES))} (test-time views), got {self.tta}")
        for stage in (1, 3):
            if stage in self.stages and self.kind(stage) == "regress" and self.checkpoint(stage) is None \
                    and not self.allow_random_init:
                raise ConfigError(f"a regression Stage {stage} needs a trained checkpoint (--stage{stage}-checkpoint PT; "
                                  "train one with `axion-ray train chain`). Use --allow-random-init for a smoke run")
        if 2 in self.stages and self.stage2_checkpoint is None and not self.allow_random_init:
            if PRESETS.get(self.preset) and PRESETS[self.preset].prithvi not in WEIGHT_FILES:
                raise ConfigError(f"stage 2 needs a trained checkpoint (--stage2-checkpoint PT); preset {self.preset!r}"
                                  " has no pretrained refiner. Use --allow-random-init for a smoke run")

    def checkpoint(self, stage: int) -> str | None:
        """The trained checkpoint given for `stage`, if any."""
        return getattr(self, f"stage{stage}_checkpoint")

    def kind(self, stage: int) -> str | None:
        """The kind asked for `stage` (None: its checkpoint's, else the stage's default)."""
        return getattr(self, f"stage{stage}_kind", None)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One Ray Train run (`axion-ray train stage1|stage2|stage3`). Loss weights map onto
    `train.losses.stage2_loss` (Stage 2 only; TerraMind trains on its token objective).

    `lora_rank` > 0 adapts a pretrained backbone with LoRA (only adapters + head train); 0 fine-tunes
    everything, which is what a preset without published weights (`prithvi_eo_tiny`) needs. TerraMind
    (stages 1 and 3) is LoRA-only: a rank of 0 there means the default `TERRAMIND_LORA_RANK`.
    `timesteps` is the diffusion steps TerraMind validation generates with; `condition` is the array
    Stage 3 grounds (`opt_v2`, or `opt_v1` to train on Stage 1 output directly). `kind` picks a
    stage's model (`regress`: models/regress.py, trained on the pixel losses; `encoder`, `width`).
    """

    stage: int = 2
    preset: str = "tiny"
    weights: str | None = None
    allow_random_init: bool = False
    epochs: int = 3
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    lora_rank: int = 0
    lora_alpha: int = 16
    workers: int = 2
    min_workers: int | None = None     # elastic: start with as few as this many workers (Ray Train V2)
    cpus_per_worker: float | None = None  # default: share the node's CPUs, or 1 beside each GPU
    use_gpu: bool = False
    val_every_steps: int = 50
    keep_top_k: int = 3
    max_failures: int = 3
    w_l1: float = 1.0
    w_sam: float = 0.5
    w_ndvi: float = 2.0
    w_evi: float = 1.0
    w_edge: float = 0.5
    seed: int = 0
    max_val_tiles: int = 256
    timesteps: int = 1
    condition: str = "opt_v2"
    kind: str | None = None            # stages 1 and 3: generate (default) | regress; Stage 2: refine (default) | regress
    encoder: str | None = None         # regression stages: terramind | unet | pixel (stages 2-3; None: builder.default_encoder)
    pixel_batch: int = 32768           # pixel-wise models (encoder pixel): pixels per step, drawn across tiles
    crop: int = 32                     # convolutional regression models (encoder unet): a step's pixels as random
                                       # squares of this side from more tiles (train/base.ShardBatches); 0: whole tiles
    width: int | None = None           # regression stages: UNet width (models/presets.REGRESSION_WIDTH)
    augment: bool = True               # regression stages: random flips/rotations of each batch
    validate_at_start: bool = False    # stages that start as their input (2, regression 3): score step 0 too
    cpu_bf16: bool = False             # CPU workers: the pixel losses' forward under bf16 autocast (GPUs use their AMP)

    def validate(self) -> None:
        """Raise ConfigError for a training run that cannot be made, before any store or Ray work."""
        from axion_ray.models.presets import check_encoder
        from axion_ray.models.registry import stage_spec

        stage_spec(self.stage, self.kind)
        check_encoder(self.stage, self.encoder)
        if self.width is not None and self.width < 4:
            raise ConfigError(f"width must be at least 4, got {self.width}")
        if self.crop and self.crop < 16:
            raise ConfigError(f"crop must be 0 (whole tiles) or at least 16 px, got {self.crop}")
        if self.condition not in ("opt_v1", "opt_v2"):
            raise ConfigError(f"the Stage 3 condition must be opt_v1 or opt_v2, got {self.condition!r}")
        if self.workers < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("workers, epochs and batch size must be at least 1")
        if self.min_workers is not None and not 1 <= self.min_workers <= self.workers:
            raise ConfigError(f"min workers must be between 1 and workers ({self.workers}), got {self.min_workers}")
        if self.validate_at_start and not (self.stage == 2 or (self.stage == 3 and self.kind == "regress")):
            raise ConfigError("validate_at_start scores the untrained model as its input: only Stage 2 and the "
                              "regression Stage 3 start as their input")


@dataclasses.dataclass(frozen=True)
class SelectConfig:
    """`axion-ray select` (and the chain's and sweeps' selection): which checkpoint a run exports.

    `average_top_k` ≥ 2 also scores the mean of the weights of the k best checkpoints that pass every
    hard constraint, on the run's validation store like any checkpoint, and exports it only where its
    composite beats the best single one (0 or 1: no average). Neighbouring checkpoints score within
    noise of each other on the validation AOI and differ more on new ones; their mean sits between them
    (bench/RESULTS.md, chain (P): NDVI 0.0654 against 0.0651-0.0673 on unseen AOIs).
    """

    average_top_k: int = 3

    def validate(self) -> None:
        if self.average_top_k < 0:
            raise ConfigError(f"--average-top-k is a number of checkpoints (0: no average), got {self.average_top_k}")


@dataclasses.dataclass(frozen=True)
class ChainConfig:
    """`axion-ray train chain`: Stages 1, 2 and 3 trained in turn, each on the previous stage's real
    outputs (Axion-Sat's order). Stages 1 and 3 are the regression kind; Stage 2 is the refiner (where the
    preset's published Prithvi file is on disk) or the per-pixel calibrator of `opt_v1`
    (models/regress.PixelStage2; `stage2_kind`, default `builder.default_stage2_kind`). One schedule
    serves all three stages unless a stage's own `stageN_epochs` is given."""

    preset: str = "tiny"
    weights: str | None = None          # TerraMind encoder weights (else from scratch)
    encoder: str | None = None          # both regression stages' (None: each stage's builder.default_encoder)
    stage3_encoder: str | None = None   # Stage 3's, where it differs from `encoder` (e.g. pixel)
    stage2_kind: str | None = None      # refine: the Prithvi refiner | regress: the per-pixel calibrator
                                        # (None: builder.default_stage2_kind — the refiner only with its weights)
    width: int | None = None
    crop: int | None = None             # the regression stages' (None: TrainConfig's)
    epochs: int = 12
    stage1_epochs: int | None = None
    stage2_epochs: int | None = None
    stage3_epochs: int | None = None
    batch_size: int = 16
    stage1_batch_size: int | None = None  # Stage 1's tiles (of pixels) per worker and step, where it differs
    stage1_w_edge: float | None = None  # Stage 1's weight of its gradient term against the truth's edges (else TrainConfig's)
    lr: float = 2e-3
    workers: int = 2
    cpus_per_worker: float | None = None
    use_gpu: bool = False
    val_every_steps: int = 50
    max_val_tiles: int = 256
    seed: int = 0
    holdout: bool = True                # Stage 1 on some AOIs, Stages 2-3 on its outputs on the others
    holdout_fraction: float = 0.5       # with `holdout`: the share of AOIs held out of Stage 1 (train/chain.holdout_split)
    cpu_bf16_stages: tuple[int, ...] = ()  # stages trained with `TrainConfig.cpu_bf16` (e.g. (1,): the UNet Stage 1)
    average_top_k: int | None = None    # each stage's selection (None: SelectConfig's)
    stage1_members: int = 1             # Stage 1 as the mean of this many members trained side by side (models/ensemble.py)

    def stage_config(self, stage: int, member: int | None = None) -> TrainConfig:
        """The `TrainConfig` of one stage of the chain; with `member`, of that member of Stage 1's
        ensemble: its share of the workers, its own seed, and the epochs that give it the steps of one
        run over all the workers — the same wall time, each step the tiles of its own workers
        (train/chain gives each worker the CPUs it would have had in one run)."""
        common = {k: getattr(self, k) for k in ("preset", "weights", "batch_size", "lr", "workers",
                                                 "cpus_per_worker", "use_gpu", "val_every_steps", "max_val_tiles",
                                                 "seed")}
        epochs = getattr(self, f"stage{stage}_epochs") or self.epochs
        if member is not None:
            # Every worker is used: the first `workers % members` members take one more (3 workers, 2
            # members: 2 and 1); the epochs below still give each member the steps of one run.
            share = self.workers // self.stage1_members + (member < self.workers % self.stage1_members)
            epochs = max(1, round(epochs * share / self.workers))
            common.update(workers=share, seed=self.seed + member)
        common["cpu_bf16"] = stage in self.cpu_bf16_stages
        if stage == 1 and self.stage1_batch_size:
            common["batch_size"] = self.stage1_batch_size
        if stage == 1 and self.stage1_w_edge is not None:
            common["w_edge"] = self.stage1_w_edge
        # Stages 2 and 3 start as exactly their input and are scored at step 0 too: a later stage whose
        # training never beats its input is exported as that identity and never makes the chain worse.
        if stage == 2 and self.resolved_stage2_kind() == "regress":  # the calibrator: pixels drawn across tiles
            return TrainConfig(stage=2, kind="regress", encoder="pixel", width=self.width, epochs=epochs,
                               validate_at_start=True, **common)
        if stage == 2:  # the refiner: no published tiny weights to adapt; condition = the chain's opt_v1
            return TrainConfig(stage=2, epochs=epochs, allow_random_init=True, validate_at_start=True, **common)
        encoder = (self.stage3_encoder or self.encoder) if stage == 3 else self.encoder
        if self.crop is not None:
            common["crop"] = self.crop
        return TrainConfig(stage=stage, kind="regress", encoder=encoder, width=self.width, epochs=epochs,
                           condition="opt_v2", validate_at_start=stage == 3, **common)

    def resolved_stage2_kind(self) -> str:
        """`stage2_kind`, or where none is named what `builder.default_stage2_kind` picks."""
        if self.stage2_kind is not None:
            return self.stage2_kind
        from axion_ray.models.builder import default_stage2_kind

        return default_stage2_kind(self.preset, self.weights)

    def select_config(self) -> SelectConfig:
        return SelectConfig() if self.average_top_k is None else SelectConfig(average_top_k=self.average_top_k)

    def validate(self) -> None:
        self.select_config().validate()
        if self.stage2_kind not in (None, "refine", "regress"):
            raise ConfigError(f"--stage2-kind is refine (the Prithvi refiner) or regress (the per-pixel calibrator), "
                              f"got {self.stage2_kind!r}")
        if not set(self.cpu_bf16_stages) <= {1, 2, 3}:
            raise ConfigError(f"--cpu-bf16-stages takes stages of 1, 2, 3, got {','.join(map(str, self.cpu_bf16_stages))}")
        if not 1 <= self.stage1_members <= self.workers:
            raise ConfigError(f"--stage1-members is how many of the {self.workers} worker(s) train a Stage 1 member "
                              f"each, side by side: 1 to {self.workers}, got {self.stage1_members}")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ConfigError(f"--holdout-fraction is a share of the training AOIs between 0 and 1 (e.g. 0.5), "
                              f"got {self.holdout_fraction:g}")
        for stage in (1, 2, 3):
            self.stage_config(stage).validate()


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """One inspection-classifier training (`axion-ray classify train|two-stage`).

    `select_metric` picks the best epoch (`accuracy`, `macro_f1` or `<class>_recall`); `normalize`
    applies the backbone's mean/std (False reproduces the team's un-normalised production inputs).
    """

    model: str = "convnextv2_tiny"
    mode: str | None = None                # finetune | linear_probe; None = the preset's
    weights: str | None = None
    allow_random_init: bool = False
    classes: tuple[str, ...] = ("clean", "pit")
    image_size: int = 224
    epochs: int = 10
    head_epochs: int = 5                   # the 3-class head fine-tuning of the two-stage workflow
    batch_size: int = 32
    lr: float = 1e-3
    head_lr: float = 3e-3
    weight_decay: float = 0.05
    label_smoothing: float = 0.0
    augment: str = "light"                 # none | light | heavy (field simulator)
    normalize: bool = True
    select_metric: str = "accuracy"
    workers: int = 2
    cpus_per_worker: float | None = None   # default: share the node's CPUs, or 1 beside each GPU
    use_gpu: bool = False
    seed: int = 0
    maybe_low: float = 0.35                # mining: relabel as maybe if wrong or low < p(pit) < high
    maybe_high: float = 0.65
    recall_floor: float = 0.95             # thresholds: pit recall at least this on validation

    def validate(self, class_names: tuple[str, ...] | None = None) -> None:
        """Raise ConfigError for a training that cannot be made on `class_names` (default: `classes`)."""
        names = tuple(class_names or self.classes)
        allowed = {"accuracy", "macro_f1"} | {f"{c}_recall" for c in names}
        if self.select_metric not in allowed:
            raise ConfigError(f"select metric must be one of {', '.join(sorted(allowed))}, got {self.select_metric!r}")
