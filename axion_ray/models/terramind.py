"""Building TerraMind generators through terratorch, with weights from local disk only."""

from __future__ import annotations

import torch

from axion_ray.errors import CheckpointError
from axion_ray.models.common import pad_to_multiple
from axion_ray.models.presets import TOKENIZER_S2L2A
from axion_ray.models.s2l2a import TERRAMIND_MULTIPLE
from axion_ray.models.weights import WeightsRecord, load_state_dict

TOKENIZER_KEY = "tok_sen2l2a@224"


class TerraMindStageBase(torch.nn.Module):
    """Shared plumbing of the TerraMind stages (1 and 3).

    terratorch keeps the standardisation statistics in plain dicts moved only by
    `TerraMindGeneration.to()`; `model.to("cuda")` on a wrapper never calls that, so a wrapped generator
    would standardise CUDA inputs with CPU statistics. `_apply` moves (and casts) them with the weights.
    """

    AMP_DTYPE = torch.bfloat16  # H100: bf16 fastest at batch 1-4 (bench/RESULTS.md); no fp16 overflow risk
    # Seeded once per call (models.common.seeded): a tile's noise depends on its batch, so a runner
    # never cuts a batch into parts of its own choosing (models/runner.py, CPU_CALL_PIXELS).
    DRAWS_PER_CALL = True

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

    def _standardized(self, key: str, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.generator.pretraining_mean.get(key), self.generator.pretraining_std.get(key)
        if not self.standardize or mean is None:
            return x
        return (x - mean.to(x)) / std.to(x)

    def token_loss(self, inputs: dict[str, torch.Tensor], target_s2l2a_dn: torch.Tensor) -> torch.Tensor:
        """Teacher-forced fine-tuning objective: cross-entropy of the S2L2A token logits against the truth's tokens.

        TerraMind generates S2L2A as discrete tokens of its FSQ tokenizer and then decodes them with a
        diffusion decoder. Training the generation through the sampler and the decoder would need
        gradients through both; instead (TerraMind's own pre-training objective) the frozen tokenizer
        encodes the reference image to its tokens and the transformer learns to predict them from the
        inputs in one pass. `inputs` maps TerraMind modality names (`S1GRD`, `S2L2A`) to raw (B, C, H, W)
        tensors; the target is a (B, 12, H, W) S2L2A image in DN. Padded to the square TerraMind needs.
        """
        g = self.generator
        names = list(inputs)
        both = torch.cat([inputs[n].float() for n in names] + [target_s2l2a_dn.float()], dim=1)
        padded, _ = pad_to_multiple(both, TERRAMIND_MULTIPLE, square=True)
        target_key = g.output_modalities[0]
        mod_dict: dict[str, dict[str, torch.Tensor]] = {}
        start = 0
        for name in names:
            key = g.mod_name_mapping[name]
            part = padded[:, start:start + inputs[name].shape[1]]
            start += inputs[name].shape[1]
            mod_dict[key] = {"tensor": self._standardized(key, part)}
        with torch.no_grad():  # the tokenizer is frozen: it only names the tokens to predict
            ids = g.tokenizer[target_key].encode(self._standardized(target_key, padded[:, start:]), padded.device)[-1]
        ids = ids.flatten(1).long()
        batch, n_tokens = ids.shape
        ones = torch.ones(batch, n_tokens, dtype=torch.bool, device=ids.device)
        for entry in mod_dict.values():  # inputs: every patch visible to the encoder, none a target
            entry.update(input_mask=~ones, target_mask=ones.clone(), decoder_attention_mask=~ones)
        mod_dict[target_key] = {"tensor": ids, "input_mask": ones.clone(), "target_mask": ~ones,
                                "decoder_attention_mask": ~ones}
        loss, _ = g.sampler.model(mod_dict, num_encoder_tokens=n_tokens * len(names), num_decoder_tokens=n_tokens,
                                  loss_type="mod")
        return loss


def build_terramind_generator(variant: str, modalities: list[str], record: WeightsRecord, *, timesteps: int,
                              standardize: bool) -> torch.nn.Module:
    """A terratorch `TerraMindGeneration` (S1GRD[, S2L2A] → S2L2A) with the weights `record` found.

    The model is always built with `pretrained=False` (no Hub access); published weights found
    locally (`record.files`) are then loaded: the transformer through terratorch's own filter, and the
    S2L2A tokenizer (the diffusion decoder) strictly. An empty record leaves the seeded random init.
    """
    from terratorch.models.backbones.terramind.model.terramind_register import checkpoint_filter_fn_generate
    from terratorch.registry import FULL_MODEL_REGISTRY

    # A fixed seed makes a randomly initialised model reproducible, so a checkpoint that stores only
    # LoRA adapters (TerraMind fine-tuning) rebuilds the same base whether or not weights exist.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
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
    return model
