"""Inspection classifiers (timm) on Ray: two-stage "maybe" mining, thresholds under a pit-recall floor,
latency, and Ray Data batch inference.

Lazy, like `axion_ray.models`: names load their module (and torch, timm, ray) when first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "CLASSIFIER_PRESETS": "models", "build_classifier": "models", "resolve_model_name": "models",
    "ImageSet": "data", "load_split": "data", "synthesize_fruit_dataset": "data",
    "train_classifier": "train", "load_classifier": "train", "predict_proba": "train",
    "two_stage": "workflow", "train_binary": "workflow", "mine": "workflow", "train_three_class": "workflow",
    "thresholds": "workflow", "report": "workflow",
    "mine_maybe": "mining", "optimise_thresholds": "mining", "decide": "mining",
    "classify_images": "infer", "measure_latency": "latency", "compare_table": "latency",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"axion_ray.classify.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'axion_ray.classify' has no attribute {name!r}")
