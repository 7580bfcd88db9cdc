"""Compatibility with the systems Axion-Ray replaces: the Python APIs their users already call."""

from axion_ray.compat.axion_sat import (
    build_stage3_model,
    compute_stage3_metrics,
    stage3_batch_inference,
    stage3_inference,
)

__all__ = ["build_stage3_model", "compute_stage3_metrics", "stage3_batch_inference", "stage3_inference"]
