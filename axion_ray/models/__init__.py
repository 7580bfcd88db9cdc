"""Stage models on terratorch: what each stage is (`registry`), one door to build them (`build_stage`).

Lazy: the registry and presets are plain data that the CLI and the pipeline's driver read without
loading torch or terratorch; the builder loads them when it is first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "STAGES": "registry", "StageSpec": "registry", "stage_spec": "registry",
    "build_stage": "builder", "stage_provenance": "builder", "count_parameters": "builder",
    "export_fp16_state": "builder",
    "LoraSettings": "lora", "apply_lora": "lora", "merge_lora": "lora",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"axion_ray.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'axion_ray.models' has no attribute {name!r}")
