"""Stage models on terratorch: build them through `build_stage`, run them on tensors in store units."""

from axion_ray.models.builder import STAGE_OUTPUTS, build_stage, count_parameters, export_fp16_state
from axion_ray.models.lora import LoraSettings, apply_lora, merge_lora

__all__ = ["STAGE_OUTPUTS", "LoraSettings", "apply_lora", "build_stage", "count_parameters", "export_fp16_state",
           "merge_lora"]
