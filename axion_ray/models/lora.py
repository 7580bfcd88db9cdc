"""LoRA adapters through `peft`, on the attention and MLP projections of the transformer blocks.

Targets `qkv`, `proj`, `fc1`, `fc2` — but only `nn.Linear` layers inside the transformer: not a patch
embedding's `proj` convolution, and not TerraMind's diffusion tokenizer (the frozen image decoder).
Only the adapters, plus modules named in `trainable` (the Stage 2 head), stay trainable.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

DEFAULT_TARGETS = ("qkv", "proj", "fc1", "fc2")


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: tuple[str, ...] = DEFAULT_TARGETS
    trainable: tuple[str, ...] = ("head",)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def lora_target_names(model: nn.Module, targets: tuple[str, ...] = DEFAULT_TARGETS) -> list[str]:
    """Full names of the Linear layers LoRA should wrap."""
    names = []
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if (isinstance(module, nn.Linear) and leaf in targets and "tokenizer" not in name.split(".")
                and "patch_embed" not in name and "embeddings" not in name):
            names.append(name)
    return names


def apply_lora(model: nn.Module, settings: LoraSettings = LoraSettings()) -> nn.Module:
    """Inject LoRA adapters in place and freeze everything but adapters and `settings.trainable` modules.

    The model keeps its class and call signature (peft's `inject_adapter_in_model`), so it stays a
    drop-in stage model; `merge_lora` folds the adapters back for inference.
    """
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_target_names(model, settings.targets)
    if not targets:
        raise ValueError(f"no Linear layers named {settings.targets} to adapt in {type(model).__name__}")
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, bias="none")
    model = inject_adapter_in_model(config, model)
    for name, param in model.named_parameters():
        top = name.split(".", 1)[0]
        param.requires_grad = "lora_" in name or top in settings.trainable
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA adapter into its base layer and remove the adapter wrappers (inference speed)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, leaf = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, leaf, module.get_base_layer())
    return model
