"""Inspection classifiers: any timm model, with the inspection team's models as named presets.

Built through one door (`build_classifier`) like the stage models: pretrained weights only from local
disk (a file, a directory, `$AXION_RAY_WEIGHTS`, the offline Hugging Face cache — `models/weights.py`),
random initialisation only when asked for, and recorded. `linear_probe` freezes the backbone and trains
the classifier head alone (the DINOv2 probe of the team's Phase 2); `finetune` trains everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from axion_ray.errors import ConfigError

MODES = ("finetune", "linear_probe")


@dataclass(frozen=True)
class ClassifierPreset:
    timm_name: str           # timm `architecture.pretrained_tag`
    mode: str = "finetune"


#: The inspection team's models (reference/003_*, 002_*) by the names they use.
CLASSIFIER_PRESETS: dict[str, ClassifierPreset] = {
    "convnextv2_tiny": ClassifierPreset("convnextv2_tiny.fcmae_ft_in22k_in1k"),   # FCMAE pre-training
    "efficientnet_b2": ClassifierPreset("efficientnet_b2.ra_in1k"),
    "resnet50": ClassifierPreset("resnet50.a1_in1k"),
    "vit_small_patch14_dinov2": ClassifierPreset("vit_small_patch14_dinov2.lvd142m", mode="linear_probe"),
    "dinov2_finetune": ClassifierPreset("vit_small_patch14_dinov2.lvd142m", mode="finetune"),
}


def resolve_model_name(name: str) -> tuple[str, str]:
    """A preset or any timm name → (timm name, default mode)."""
    import timm

    if name in CLASSIFIER_PRESETS:
        preset = CLASSIFIER_PRESETS[name]
        return preset.timm_name, preset.mode
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        raise ConfigError(f"unknown classifier {name!r}: not a preset ({', '.join(CLASSIFIER_PRESETS)}) "
                          f"nor a timm model name")
    if "." not in name:  # timm's default pretrained tag, as `timm.create_model(name, pretrained=True)` picks
        cfg = timm.models.get_pretrained_cfg(arch)
        name = f"{arch}.{cfg.tag}" if cfg is not None and cfg.tag else name
    return name, "finetune"


def build_classifier(name: str, num_classes: int, *, image_size: int = 224, mode: str | None = None,
                     weights: str | None = None, allow_random_init: bool = False,
                     state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A timm classifier with `num_classes` outputs; `model.provenance` records how it was initialised.

    With `state_dict` (a trained checkpoint) nothing is looked up. Otherwise the published weights of
    the timm tag are found locally and loaded by timm (which drops the ImageNet head when the class
    count differs), or — with `allow_random_init` — the model starts random.
    """
    import timm

    from axion_ray.models.weights import WeightsRecord, resolve_weights

    timm_name, default_mode = resolve_model_name(name)
    mode = mode or default_mode
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    arch = timm_name.split(".")[0]
    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if arch.startswith(("vit_", "deit", "eva")):
        kwargs["img_size"] = image_size  # ViTs are built for one input size (DINOv2: 518)
    if state_dict is not None:
        record = WeightsRecord(random_init=False)
        model = timm.create_model(arch, pretrained=False, **kwargs)
        model.load_state_dict(state_dict)
    else:
        record = resolve_weights([timm_name], weights, allow_random_init)
        if record.files:
            model = timm.create_model(timm_name, pretrained=True,
                                      pretrained_cfg_overlay={"file": record.files[timm_name]}, **kwargs)
        else:
            model = timm.create_model(arch, pretrained=False, **kwargs)
    set_mode(model, mode)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    model.provenance = {"model": name, "timm_name": timm_name, "mode": mode, "num_classes": num_classes,
                        "image_size": image_size, "weights": record.to_dict(), "random_init": record.random_init,
                        "mean": list(data_cfg["mean"]), "std": list(data_cfg["std"])}
    return model


def set_mode(model: nn.Module, mode: str) -> None:
    """`linear_probe` / `head_only`: only the classifier head trains; `finetune`: everything."""
    head = model.get_classifier()
    head_params = {id(p) for p in head.parameters()}
    for p in model.parameters():
        p.requires_grad = mode == "finetune" or id(p) in head_params


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """A new, randomly initialised head for another class count (binary → clean/pit/maybe)."""
    model.reset_classifier(num_classes)
    model.provenance = {**model.provenance, "num_classes": num_classes}
    return model


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_mb(model: nn.Module, bytes_per_param: int = 4) -> float:
    """Size of the weights on disk at the given precision (4 = fp32, 2 = fp16), buffers included."""
    n = parameter_count(model) + sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return n * bytes_per_param / 2 ** 20
