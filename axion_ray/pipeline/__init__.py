"""Streaming multi-stage inference on Ray Data over tile stores."""

from axion_ray.pipeline.run import RunSummary, plan_stages, plan_todo, run_pipeline

__all__ = ["RunSummary", "plan_stages", "plan_todo", "run_pipeline"]
