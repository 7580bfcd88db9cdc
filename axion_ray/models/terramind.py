"""Building TerraMind generators through terratorch, with weights from local disk only."""

from __future__ import annotations

import torch

from axion_ray.errors import CheckpointError
from axion_ray.models.weights import WeightsRecord, load_state_dict, resolve_weights

TOKENIZER_S2L2A = "terramind_v1_tokenizer_s2l2a"
TOKENIZER_KEY = "tok_sen2l2a@224"


class TerraMindStageBase(torch.nn.Module):
    """Shared plumbing of the TerraMind stages (1 and 3).

    terratorch keeps the standardisation statistics in plain dicts moved only by
    `TerraMindGeneration.to()`; `model.to("cuda")` on a wrapper never calls that, so a wrapped generator
    would standardise CUDA inputs with CPU statistics. `_apply` moves (and casts) them with the weights.
    """

    AMP_DTYPE = torch.bfloat16  # H100: bf16 fastest at batch 1-4 (bench/RESULTS.md); no fp16 overflow risk

    def __init__(self, generator: torch.nn.Module, *, timesteps: int, standardize: bool, seed: int | None):
        super().__init__()
        self.generator = generator
        self.timesteps = int(timesteps)
        self.standardize = bool(standardize)
        self.seed = seed

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        for attr in ("pretraining_mean", "pretraining_std"):
            stats = getattr(self.generator, attr, None)
            if isinstance(stats, dict):
                setattr(self.generator, attr, {k: fn(v) for k, v in stats.items()})
        return self


def build_terramind_generator(variant: str, modalities: list[str], *, timesteps: int, standardize: bool,
                              weights: str | None, allow_random_init: bool,
                              need_pretrained: bool = True) -> tuple[torch.nn.Module, WeightsRecord]:
    """A terratorch `TerraMindGeneration` (S1GRD[, S2L2A] → S2L2A) and the record of its weights.

    The model is always built with `pretrained=False` (no Hub access); published weights found
    locally are then loaded: the transformer through terratorch's own filter, and the S2L2A tokenizer
    (the diffusion decoder) strictly. With `need_pretrained=False` (a full checkpoint will be loaded
    over it) nothing is looked up.
    """
    from terratorch.models.backbones.terramind.model.terramind_register import checkpoint_filter_fn_generate
    from terratorch.registry import FULL_MODEL_REGISTRY

    record = (resolve_weights([variant, TOKENIZER_S2L2A], weights, allow_random_init)
              if need_pretrained else WeightsRecord(random_init=False))
    model = FULL_MODEL_REGISTRY.build(
        f"{variant}_generate", pretrained=False, modalities=modalities, output_modalities=["S2L2A"],
        timesteps=timesteps, standardize=standardize,
    )
    if record.files:
        state = checkpoint_filter_fn_generate(load_state_dict(record.files[variant]), model)
        model.load_state_dict(state, strict=True)
        try:
            model.tokenizer[TOKENIZER_KEY].load_state_dict(load_state_dict(record.files[TOKENIZER_S2L2A]), strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{record.files[TOKENIZER_S2L2A]} does not fit the S2L2A tokenizer: {exc}") from exc
    return model, record
