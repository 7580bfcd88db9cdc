"""`build_stage` — the one door to every stage model: presets, weights, checkpoints, LoRA, device.

What each stage is (inputs, output, model class, weight files) is data in `models/registry.py`; this
module turns a spec + preset into a model, one build function per model family. Every model it returns
carries `model.provenance`, the dict the pipeline writes into the attrs of the arrays the model
produces (docs/ARCHITECTURE.md §3): stage, model, preset, checkpoint + sha256, weight files + sha256,
whether it was randomly initialised, timesteps, seed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from axion_ray.bands import PRITHVI_BANDS
from axion_ray.errors import CheckpointError, ConfigError, WeightsNotFoundError
from axion_ray.models.common import resolve_device, seeded
from axion_ray.models.ensemble import MemberMean, ensemble_provenance, is_ensemble, member_checkpoints
from axion_ray.models.lora import LoraSettings, apply_lora, merge_lora
from axion_ray.models.presets import PRESETS, PRITHVI_BACKBONES, REGRESSION_WIDTH, StagePreset, check_encoder
from axion_ray.models.registry import StageSpec, stage_spec
from axion_ray.models.tta import DihedralTTA, tta_views
from axion_ray.models.weights import (
    Checkpoint,
    WeightsRecord,
    find_weight_file,
    load_checkpoint,
    load_fitting_state,
    resolve_weights,
)


def build_prithvi_backbone(name: str, record: WeightsRecord) -> nn.Module:
    """A terratorch Prithvi backbone on our 4 bands; local weights go through terratorch's own band filter."""
    from terratorch.registry import BACKBONE_REGISTRY

    kwargs: dict[str, Any] = {"bands": list(PRITHVI_BANDS), "num_frames": 1}
    if record.files:
        # ckpt_path makes terratorch read the local file (never the Hub) and map bands by name.
        kwargs.update(pretrained=True, ckpt_path=record.files[name])
    return BACKBONE_REGISTRY.build(name, **kwargs)


def _base_weights(spec: StageSpec, backbone: str, weights: str | None, allow_random_init: bool,
                  need_pretrained: bool) -> WeightsRecord:
    """The published files the stage's base model loads (the spec names them), or a random init when
    allowed; nothing is looked up when a full checkpoint will be loaded over the base."""
    if spec.family == "prithvi" and backbone not in PRITHVI_BACKBONES:
        raise ConfigError(f"unknown Prithvi backbone {backbone!r}; choose one of {', '.join(PRITHVI_BACKBONES)}")
    if not need_pretrained:
        return WeightsRecord(random_init=False)
    if not spec.weight_variants(backbone):  # nothing published to start from (the plain UNet)
        if not allow_random_init:
            raise WeightsNotFoundError(f"stage {spec.stage} ({spec.kind}, {backbone}) has no published weights: pass "
                                       f"a trained checkpoint (train it with `axion-ray train chain`)")
        return WeightsRecord(random_init=True)
    return resolve_weights(spec.weight_variants(backbone), weights, allow_random_init)


def _checkpoint_and_preset(stage: int, preset: str, ckpt: Checkpoint | None, kind: str | None = None
                           ) -> tuple[Checkpoint | None, dict[str, Any], str, StageSpec]:
    """Validate stage, kind and preset; a checkpoint's own config (stage, kind, preset) wins over the
    arguments (a checkpoint without a kind predates kinds: the stage's default, generation)."""
    stage_spec(stage, kind)
    cfg = dict(ckpt.config) if ckpt else {}
    if ckpt and cfg.get("stage") not in (None, stage):
        raise CheckpointError(f"checkpoint {ckpt.path} is a stage {cfg['stage']} checkpoint, not stage {stage}")
    preset = cfg.get("preset", preset)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    spec = stage_spec(stage, cfg.get("kind") if ckpt else kind)
    return ckpt, cfg, preset, spec


def default_encoder(preset: str, weights: str | None = None, stage: int = 1) -> str:
    """A regression stage's encoder when none is named: TerraMind's where the preset's published
    transformer file is on disk (`--weights`, `$AXION_RAY_WEIGHTS`, the Hugging Face cache), which then
    gets LoRA; else, from scratch, what bench/chain_quality.py measured best (bench/RESULTS.md):
    - Stage 1: the UNet alone. It beat the TerraMind variant on every figure (NDVI RMSE 0.0935 vs
      0.0949 on the same schedule), trains ~1.6x faster and needs no terratorch import in its actors.
    - Stage 3: the per-pixel calibrator (`pixel`, models/regress.PixelStage3). The UNet grounding never
      beat its input there; the calibrator does on all three figures.
    - Stage 2: the calibrator always (`PixelStage2`): it reads no S1, the input TerraMind's encoder takes.
    The choice is recorded in the checkpoint's config and the provenance (`model`: `unet_regress`,
    `pixel_regress` or `terramind_v1_*_regress`)."""
    if stage == 2:
        return "pixel"
    found, _ = find_weight_file(PRESETS[preset].terramind, weights, main=True)
    if found is not None:
        return "terramind"
    return "pixel" if stage == 3 else "unet"


def default_stage2_kind(preset: str, weights: str | None = None) -> str:
    """The chain's Stage 2 when none is named: the Prithvi refiner where the preset's Prithvi has its
    published file on disk (`--weights`, `$AXION_RAY_WEIGHTS`, the Hugging Face cache), else — from
    scratch, the only start the `tiny` preset has — the per-pixel calibrator (`regress`,
    models/regress.PixelStage2). Measured on the chain bench (bench/RESULTS.md (AD)): the refiner from
    scratch changed the means by at most 4e-5 in every run, the calibrator made all three figures better."""
    found, _ = find_weight_file(PRESETS[preset].prithvi, weights, main=True)
    return "refine" if found is not None else "regress"


def _backbone_choice(spec: StageSpec, cfg: dict[str, Any], prithvi: str | None, encoder: str | None,
                     preset: str = "tiny", weights: str | None = None) -> str | None:
    """The argument that picks a stage's backbone: Stage 2's Prithvi, a regression stage's encoder
    (a checkpoint's own, else the one asked for, else `default_encoder`)."""
    if spec.family == "regress":
        choice = cfg.get("encoder") or encoder or default_encoder(preset, weights, spec.stage)
        check_encoder(spec.stage, choice)
        return choice
    return cfg.get("prithvi", prithvi)


def _load_state(model: nn.Module, state: dict, checkpoint: str | None) -> tuple[list[str], list[str]]:
    """(missing, unexpected) keys of loading `state`; tensors whose shapes differ are a CheckpointError."""
    missing, unexpected, mismatched = load_fitting_state(model, state)
    if mismatched:
        raise CheckpointError(f"checkpoint {checkpoint} does not fit this model: shapes differ ({'; '.join(mismatched[:2])}). "
                              "It was written by another version of the model: retrain it.")
    return missing, unexpected


def build_stage(stage: int, preset: str = "tiny", *, kind: str | None = None, encoder: str | None = None,
                width: int | None = None, weights: str | None = None, checkpoint: str | None = None,
                allow_random_init: bool = False, timesteps: int = 10, standardize: bool = True,
                seed: int | None = 0, prithvi: str | None = None, lora: LoraSettings | None = None,
                tta: int = 1, device: str = "cpu") -> nn.Module:
    """Build stage 1, 2 or 3 in eval mode on `device`.

    Args:
        stage: 1 (S1→opt_v1), 2 (Prithvi refiner) or 3 (grounding).
        kind: stages 1 and 3: `generate` (TerraMind generation, the default) or `regress`
            (models/regress.py); Stage 2: `refine` (the Prithvi refiner, the default) or `regress`
            (the per-pixel calibrator); a checkpoint's own kind wins.
        encoder, width: a regression stage's encoder (`terramind`, `unet` or, Stages 2 and 3, `pixel`;
            None: `default_encoder`) and width.
        preset: `tiny`, `small`, `base` or `large` (see `models/presets.py`).
        weights: a pretrained-weights file or directory (see `models/weights.py`).
        checkpoint: an Axion-Ray training checkpoint; when given, no pretrained weights are needed.
        allow_random_init: build with random weights when pretrained ones are missing (tests, smoke runs).
        timesteps, standardize, seed: TerraMind diffusion steps, input standardisation, sampling seed;
            `seed` also draws a regression stage's random initialisation.
        prithvi: Stage 2 backbone other than the preset's.
        lora: add peft LoRA adapters (only adapters and the Stage 2 head stay trainable).
        tta: test-time views (1, 4 or 8) for the regression UNet stages (models/tta.py); others run once.
        device: `cpu`, `cuda` or `auto`.

    Raises:
        ConfigError: unknown stage or preset. WeightsNotFoundError: no weights and no random init.
        CheckpointError: a checkpoint for another stage or architecture.
    """
    loaded = load_checkpoint(checkpoint) if checkpoint else None
    if loaded is not None and is_ensemble(loaded.config):
        built = [_build_one(stage, preset, member, kind=kind, encoder=encoder, width=width, weights=weights,
                            allow_random_init=False, timesteps=timesteps, standardize=standardize, seed=seed,
                            prithvi=prithvi, lora=lora, device=device)
                 for member in member_checkpoints(loaded)]
        model, spec, backbone = MemberMean([m for m, _, _ in built]), built[0][1], built[0][2]
        model.provenance = ensemble_provenance(built[0][0].provenance, loaded, len(built))
    else:
        model, spec, backbone = _build_one(stage, preset, loaded, kind=kind, encoder=encoder, width=width,
                                           weights=weights, allow_random_init=allow_random_init, timesteps=timesteps,
                                           standardize=standardize, seed=seed, prithvi=prithvi, lora=lora,
                                           device=device)
    views = model.provenance["tta"] = tta_views(spec.family, backbone, tta)
    return DihedralTTA(model, views) if views > 1 else model


def _build_one(stage: int, preset: str, ckpt: Checkpoint | None, *, kind: str | None, encoder: str | None,
               width: int | None, weights: str | None, allow_random_init: bool, timesteps: int, standardize: bool,
               seed: int | None, prithvi: str | None, lora: LoraSettings | None, device: str
               ) -> tuple[nn.Module, StageSpec, str]:
    """`build_stage` for one model from a loaded checkpoint (or none), without test-time views; returns
    the model, its spec and its backbone."""
    ckpt, cfg, preset, spec = _checkpoint_and_preset(stage, preset, ckpt, kind)
    checkpoint = ckpt.path if ckpt else None
    need_pretrained = ckpt is None or _needs_base_weights(cfg)
    if ckpt is not None:  # the checkpoint says what base it needs; never substitute a random one
        allow_random_init = False
    backbone = spec.backbone(PRESETS[preset], _backbone_choice(spec, cfg, prithvi, encoder, preset, weights))
    record = _base_weights(spec, backbone, weights, allow_random_init, need_pretrained)
    model = _FAMILY_BUILDERS[spec.family](spec, PRESETS[preset], cfg, backbone, record,
                                          timesteps=timesteps, standardize=standardize, seed=seed, width=width)
    model_name = spec.model_name(backbone)

    lora_cfg = LoraSettings(**cfg["lora"]) if cfg.get("lora") else lora
    if lora_cfg is not None:
        model = apply_lora(model, lora_cfg)
    if ckpt is not None and cfg.get("adapter_only"):
        _check_same_base(checkpoint, cfg, record)
        if not need_pretrained:  # trained on (and rebuilt as) the seeded random base: say so
            record = WeightsRecord(random_init=True)
        missing, unexpected = _load_state(model, ckpt.state_dict, checkpoint)
        lost = [k for k in missing if "lora_" in k]
        if lost or unexpected:
            raise CheckpointError(
                f"adapter checkpoint {checkpoint} does not fit stage {stage} ({preset}, {model_name}): "
                f"{len(lost)} adapters missing (e.g. {lost[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
    elif ckpt is not None:
        missing, unexpected = _load_state(model, ckpt.state_dict, checkpoint)
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {checkpoint} does not fit stage {stage} ({preset}, {model_name}): "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
    if ckpt is not None and lora_cfg is not None:
        model = merge_lora(model)  # a trained checkpoint is for inference: fold the adapters in
    target = resolve_device(device)
    model = model.to(target).eval()
    model.provenance = _provenance(spec, model_name, preset, ckpt.path if ckpt else None,
                                   ckpt.sha256 if ckpt else None, record, timesteps, seed, lora_cfg)
    return model, spec, backbone


def _build_refiner(spec: StageSpec, preset: StagePreset, cfg: dict[str, Any], backbone_name: str,
                   record: WeightsRecord, **_: Any) -> nn.Module:
    """A Prithvi backbone under the Stage 2 refiner head (head size from the checkpoint, else the preset)."""
    return spec.model_cls()(build_prithvi_backbone(backbone_name, record),
                            head_dim=int(cfg.get("head_dim", preset.head_dim)),
                            head_blocks=int(cfg.get("head_blocks", preset.head_blocks)),
                            temporal=backbone_name.endswith("_tl"))


def _build_terramind(spec: StageSpec, preset: StagePreset, cfg: dict[str, Any], backbone_name: str,
                     record: WeightsRecord, *, timesteps: int, standardize: bool, seed: int | None,
                     **_: Any) -> nn.Module:
    """A TerraMind generator (the spec's modalities → S2L2A) wrapped in the stage's model class."""
    from axion_ray.models.terramind import build_terramind_generator

    generator = build_terramind_generator(backbone_name, list(spec.modalities), record,
                                          timesteps=timesteps, standardize=standardize)
    return spec.model_cls()(generator, timesteps=timesteps, standardize=standardize, seed=seed)


def _build_regress(spec: StageSpec, preset: StagePreset, cfg: dict[str, Any], backbone_name: str,
                   record: WeightsRecord, *, seed: int | None = None, width: int | None = None, **_: Any) -> nn.Module:
    """A regression stage, its random initialisation drawn from `seed` (the caller's RNG untouched), so
    that every actor of a `--allow-random-init` run builds the same model and a training run's start
    follows its own seed; a checkpoint's weights then replace it."""
    with seeded(seed):
        return _regression_model(spec, cfg, backbone_name, record, width)


def _regression_model(spec: StageSpec, cfg: dict[str, Any], backbone_name: str, record: WeightsRecord,
                      width: int | None) -> nn.Module:
    """Its UNet, under a TerraMind encoder from terratorch's backbone registry unless the encoder is
    `unet` (local weights through `ckpt_path`: terratorch never reaches the Hub); or the stage's
    per-pixel calibrator (`pixel`)."""
    width = int(cfg.get("width", width or REGRESSION_WIDTH))
    if backbone_name == "pixel":
        from axion_ray.models.regress import CALIBRATORS

        calibrator = CALIBRATORS[spec.stage]
        return calibrator(width=width, features=_recorded(cfg, "features", before=calibrator.UNRECORDED_FEATURES,
                                                          default=calibrator.DEFAULT_FEATURES))
    encoder = None
    if backbone_name != "unet":
        from terratorch.registry import BACKBONE_REGISTRY

        kwargs: dict[str, Any] = {"modalities": list(spec.modalities)}
        if record.files:
            kwargs["ckpt_path"] = record.files[backbone_name]
        encoder = BACKBONE_REGISTRY.build(backbone_name, **kwargs)
    from axion_ray.models.regress import DEFAULT_NORM

    return spec.model_cls()(encoder, width=width, norm=_recorded(cfg, "norm", before="tile", default=DEFAULT_NORM))


def _recorded(cfg: dict[str, Any], key: str, *, before: str, default: str) -> str:
    """A model setting a checkpoint records: its own value; for a checkpoint written before the setting
    was recorded, `before` (what every such checkpoint was trained with: `features` "basic" before stop
    26, `norm` "tile" before stop 38); with no checkpoint (`cfg` empty), today's `default`."""
    return cfg.get(key) or (before if cfg else default)


#: How each model family of `models/registry.py` is built.
_FAMILY_BUILDERS = {"prithvi": _build_refiner, "terramind": _build_terramind, "regress": _build_regress}


def _needs_base_weights(cfg: dict[str, Any]) -> bool:
    """An adapter-only checkpoint (TerraMind LoRA) needs its base: the published weights it was trained
    on, or — when it was trained on a random base — the same seeded random init, built without lookup."""
    return bool(cfg.get("adapter_only")) and not cfg.get("base_weights", {}).get("random_init", False)


def _check_same_base(checkpoint: str | None, cfg: dict[str, Any], record: WeightsRecord) -> None:
    trained_on = cfg.get("base_weights", {}).get("sha256", {})
    differ = [v for v, digest in trained_on.items() if record.sha256.get(v) not in (None, digest)]
    if differ:
        raise CheckpointError(f"adapter checkpoint {checkpoint} was trained on other base weights for {', '.join(differ)} "
                              f"(sha256 differs); pass the weights it was trained on with --weights")


def _provenance(spec: StageSpec, model_name: str, preset: str, checkpoint: str | None, checkpoint_sha256: str | None,
                record: WeightsRecord, timesteps: int, seed: int | None, lora: LoraSettings | None,
                tta: int = 1) -> dict[str, Any]:
    return {
        "stage": spec.name, "kind": spec.kind, "model": model_name, "preset": preset,
        "checkpoint": checkpoint, "checkpoint_sha256": checkpoint_sha256,
        "weights": record.to_dict(), "random_init": record.random_init,
        "timesteps": timesteps if spec.generative else None,
        "seed": seed if spec.generative else None,
        "lora": lora.to_dict() if lora else None,
        "tta": tta,  # test-time views the outputs were averaged over (models/tta.py)
    }


def stage_provenance(stage: int, preset: str = "tiny", *, kind: str | None = None, encoder: str | None = None,
                     width: int | None = None, weights: str | None = None, checkpoint: str | None = None,
                     allow_random_init: bool = False, timesteps: int = 10, seed: int | None = 0,
                     prithvi: str | None = None, tta: int = 1) -> dict[str, Any]:
    """What `build_stage` with these arguments would record, without building the model.

    The pipeline's driver calls it before starting Ray, so missing weights or a wrong checkpoint are
    reported at once (exit 2), and it writes the result into the output arrays' attrs.
    """
    loaded = load_checkpoint(checkpoint) if checkpoint else None
    if loaded is not None and is_ensemble(loaded.config):
        members = [_one_provenance(stage, preset, member, kind=kind, encoder=encoder, weights=weights,
                                   allow_random_init=False, timesteps=timesteps, seed=seed, prithvi=prithvi, tta=tta)
                   for member in member_checkpoints(loaded)]
        return ensemble_provenance(members[0], loaded, len(members))
    return _one_provenance(stage, preset, loaded, kind=kind, encoder=encoder, weights=weights,
                           allow_random_init=allow_random_init, timesteps=timesteps, seed=seed, prithvi=prithvi, tta=tta)


def _one_provenance(stage: int, preset: str, ckpt: Checkpoint | None, *, kind: str | None, encoder: str | None,
                    weights: str | None, allow_random_init: bool, timesteps: int, seed: int | None,
                    prithvi: str | None, tta: int) -> dict[str, Any]:
    ckpt, cfg, preset, spec = _checkpoint_and_preset(stage, preset, ckpt, kind)
    backbone = spec.backbone(PRESETS[preset], _backbone_choice(spec, cfg, prithvi, encoder, preset, weights))
    model_name = spec.model_name(backbone)
    if ckpt is not None:
        check_checkpoint_fits(spec, PRESETS[preset], cfg, backbone, ckpt)
    if ckpt is None or _needs_base_weights(cfg):
        record = _base_weights(spec, backbone, weights, allow_random_init and ckpt is None, need_pretrained=True)
    else:  # a full checkpoint, or adapters on the seeded random base
        record = WeightsRecord(random_init=bool(cfg.get("adapter_only")))
    lora = LoraSettings(**cfg["lora"]) if cfg.get("lora") else None
    return _provenance(spec, model_name, preset, ckpt.path if ckpt else None, ckpt.sha256 if ckpt else None,
                       record, timesteps, seed, lora, tta_views(spec.family, backbone, tta))


def _fit_marker(spec: StageSpec, backbone: str, cfg: dict[str, Any], ckpt: Checkpoint):
    """Where a passed check of this checkpoint against this version's model is remembered, or None."""
    import hashlib
    import json
    import os
    from pathlib import Path

    from axion_ray.version import __version__

    if not ckpt.sha256:
        return None
    key = hashlib.sha256(json.dumps([ckpt.sha256, __version__, spec.kind, backbone, cfg], sort_keys=True,
                                    default=str).encode()).hexdigest()[:32]
    try:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "axion_ray" / "checkpoints_checked"
    except RuntimeError:  # no home directory to remember in: check every time
        return None
    return root / key


def check_checkpoint_fits(spec: StageSpec, preset: StagePreset, cfg: dict[str, Any], backbone: str,
                          ckpt: Checkpoint) -> None:
    """Compare a checkpoint's tensor names and shapes with the model it would load into, on the
    driver, before any Ray work: a wrong checkpoint is one line (exit 2), not a pool of actors dying.

    The model is built on the meta device where its code allows (no memory, no weights read), else on
    the CPU; TerraMind generation (~300 M parameters, adapter-only checkpoints) is left to the actor.
    A passed check is remembered per checkpoint digest and version, so a run pays it once.
    """
    if spec.generative:
        return
    marker = _fit_marker(spec, backbone, cfg, ckpt)
    if marker is not None and marker.exists():
        return
    build = _FAMILY_BUILDERS[spec.family]
    try:
        with torch.device("meta"):
            model = build(spec, preset, cfg, backbone, WeightsRecord(random_init=True), timesteps=1, standardize=True,
                          seed=0)
    except Exception:  # code that reads tensor values while it builds (TerraMind's encoder): the CPU
        model = build(spec, preset, cfg, backbone, WeightsRecord(random_init=True), timesteps=1, standardize=True,
                      seed=0)
    if cfg.get("lora"):
        model = apply_lora(model, LoraSettings(**cfg["lora"]))
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ckpt.state_dict.items()}
    mismatched = [f"{k} {theirs[k]} vs {own[k]}" for k in theirs if k in own and theirs[k] != own[k]]
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    if mismatched or missing or unexpected:
        raise CheckpointError(
            f"checkpoint {ckpt.path} does not fit stage {spec.stage} ({spec.kind}, {spec.model_name(backbone)}): "
            + (f"shapes differ ({'; '.join(mismatched[:2])}); " if mismatched else "")
            + f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). "
            "It was written by another version or configuration of the model: retrain it")
    if marker is not None:
        try:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
        except OSError:  # a read-only home: check again next time
            pass


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total and trainable parameter counts."""
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def export_fp16_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """fp16 copy of a model's floating-point weights, for `--fp16` export (the model is left as it was)."""
    return {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
