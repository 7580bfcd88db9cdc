"""What a stage is, as data: one `StageSpec` per stage (timm's registry + pretrained-cfg habit).

The builder, provenance, the pipeline's reads and row checks, the NPZ job and training all read this
table; a new stage variant is one new entry here (plus, for a new model family, one build function in
`models/builder.py`). Pure data: importing it loads neither torch nor terratorch, so the CLI and the
pipeline's driver can consult it cheaply.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from axion_ray.errors import ConfigError
from axion_ray.models.presets import TOKENIZER_S2L2A, StagePreset

#: Store array every stage is scored against in training and metrics.
TRUTH_ARRAY = "s2_truth"


@dataclass(frozen=True)
class StageSpec:
    """One stage of the chain.

    `inputs` are image arrays in the model's call order (store arrays, or an upstream stage's output
    in flight); `conditioning` are per-tile scalars from the store's tile metadata; `optional_inputs`
    are in-flight arrays a model uses when the chain carries them (Stage 1's full 12 bands).
    `train_baseline` is the array a trained model must beat (Stage 3's is its `--condition`).
    `model_class` is `module:Class`, imported only when a model is built.
    """

    stage: int
    family: str                                   # "terramind" (generation) | "prithvi" (refiner) | "regress"
    inputs: tuple[str, ...]
    output: str
    model_class: str
    train_baseline: str
    summary: str
    conditioning: tuple[str, ...] = ()
    optional_inputs: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()              # TerraMind input modalities, in `inputs` order
    kind: str = "generate"                        # which of the stage's models (see STAGE_KINDS)

    @property
    def name(self) -> str:
        return f"stage{self.stage}"

    @property
    def model_inputs(self) -> tuple[str, ...]:
        """What the model's `forward` takes, by name (images, then per-tile scalars)."""
        return self.inputs + self.conditioning

    @property
    def optical_input(self) -> str | None:
        """The upstream optical array the stage refines or grounds (None for Stage 1)."""
        return next((a for a in self.inputs if a.startswith("opt_")), None)

    @property
    def reads_s1(self) -> bool:
        return "s1" in self.inputs

    @property
    def generative(self) -> bool:
        """TerraMind generation: diffusion timesteps and a sampling seed apply."""
        return self.family == "terramind"

    def backbone(self, preset: StagePreset, override: str | None = None) -> str:
        """The terratorch model this stage is built on at `preset` (Stage 2 may name another Prithvi;
        a regression stage's `override` is its encoder: "unet" and "pixel" have no terratorch backbone)."""
        if self.family == "regress":
            return preset.terramind if override in (None, "terramind") else str(override)
        return preset.terramind if self.generative else (override or preset.prithvi)

    def model_name(self, backbone: str) -> str:
        """The name written into provenance."""
        return f"{backbone}_generate" if self.generative else f"{backbone}_regress" if self.family == "regress" \
            else backbone

    def weight_variants(self, backbone: str) -> list[str]:
        """The published weight files this stage needs, the model's own first (see `models/presets.py`).
        A regression stage's TerraMind encoder needs only the transformer's file, not the tokenizer."""
        if self.generative:
            return [backbone, TOKENIZER_S2L2A]
        return [] if backbone in ("unet", "pixel") else [backbone]

    def inputs_for(self, condition: str | None = None) -> tuple[str, ...]:
        """`inputs` with the optical input replaced by a training condition (Stage 3 may ground opt_v1)."""
        if condition is None or self.optical_input is None:
            return self.inputs
        return tuple(condition if a == self.optical_input else a for a in self.inputs)

    def model_cls(self) -> Any:
        module, _, name = self.model_class.partition(":")
        return getattr(importlib.import_module(module), name)


STAGES: dict[int, StageSpec] = {
    1: StageSpec(1, "terramind", inputs=("s1",), output="opt_v1", modalities=("S1GRD",),
                 model_class="axion_ray.models.stage1:TerraMindStage1", train_baseline="opt_v1",
                 summary="TerraMind generation: S1 (VV, VH) → opt_v1"),
    2: StageSpec(2, "prithvi", inputs=("opt_v1",), conditioning=("month", "biome_code"), output="opt_v2",
                 model_class="axion_ray.models.stage2:PrithviRefiner", train_baseline="opt_v1",
                 summary="Prithvi refiner: opt_v1 + month + biome → opt_v2", kind="refine"),
    3: StageSpec(3, "terramind", inputs=("s1", "opt_v2"), optional_inputs=("s2l2a_v1",), output="opt_v3",
                 modalities=("S1GRD", "S2L2A"), model_class="axion_ray.models.stage3:TerraMindStage3",
                 train_baseline="opt_v2", summary="TerraMind grounding: S1 + opt_v2 → opt_v3"),
}

#: The regression kind of every stage (models/regress.py): one pass, trainable from the store's own pairs.
#: Stage 2's is the per-pixel calibrator of `opt_v1` (encoder `pixel` only).
_REGRESSION: dict[int, StageSpec] = {
    1: StageSpec(1, "regress", inputs=("s1",), conditioning=("month", "biome_code"), output="opt_v1",
                 modalities=("S1GRD",), model_class="axion_ray.models.regress:RegressStage1", train_baseline="",
                 summary="regression: S1 + month + biome → opt_v1", kind="regress"),
    2: StageSpec(2, "regress", inputs=("opt_v1",), conditioning=("month", "biome_code"), output="opt_v2",
                 model_class="axion_ray.models.regress:PixelStage2", train_baseline="opt_v1",
                 summary="per-pixel calibrator: opt_v1 + month + biome → opt_v2", kind="regress"),
    3: StageSpec(3, "regress", inputs=("s1", "opt_v2"), conditioning=("month", "biome_code"), output="opt_v3",
                 modalities=("S1GRD", "S2L2A"), model_class="axion_ray.models.regress:RegressStage3",
                 train_baseline="opt_v2", summary="regression grounding: S1 + opt_v2 + month + biome → opt_v3",
                 kind="regress"),
}

#: Every model a stage can run, by kind; `STAGES` holds each stage's default kind.
STAGE_KINDS: dict[int, dict[str, StageSpec]] = {
    1: {"generate": STAGES[1], "regress": _REGRESSION[1]},
    2: {"refine": STAGES[2], "regress": _REGRESSION[2]},
    3: {"generate": STAGES[3], "regress": _REGRESSION[3]},
}

#: Every stage's output array, in chain order.
STAGE_OUTPUTS: tuple[str, ...] = tuple(spec.output for spec in STAGES.values())


def stage_spec(stage: int, kind: str | None = None) -> StageSpec:
    """The spec of `stage` (its `kind`, default the stage's default); an unknown stage or kind is a
    ConfigError naming the known ones."""
    try:
        kinds = STAGE_KINDS[int(stage)]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"stage must be {', '.join(map(str, STAGES))}, got {stage!r}") from None
    if kind is None:
        return STAGES[int(stage)]
    if kind not in kinds:
        raise ConfigError(f"stage {stage} has no kind {kind!r}; choose one of {', '.join(kinds)}")
    return kinds[kind]


def check_stage_chain(stages: tuple[int, ...]) -> None:
    """A chain is an increasing subset of the known stages."""
    if not stages or any(s not in STAGES for s in stages) or list(stages) != sorted(set(stages)):
        raise ConfigError(f"stages must be an increasing subset of {','.join(map(str, STAGES))}, "
                          f"got {','.join(map(str, stages))}")


def chain_reads(stages: tuple[int, ...]) -> list[str]:
    """Store arrays a chain reads: every requested stage's inputs (an upstream output comes from the
    store for tiles whose upstream stage is done and not recomputed), in chain order, each once."""
    arrays: list[str] = []
    for stage in stages:
        arrays += [a for a in STAGES[stage].inputs if a not in arrays]
    return sorted(arrays, key=lambda a: (a != "s1", a))
