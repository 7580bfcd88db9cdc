"""Streaming multi-stage inference on Ray Data over tile stores: plan, build, stream."""

from axion_ray.pipeline.plan import StagePlan, plan_stages, plan_tiles, plan_todo
from axion_ray.pipeline.run import RunSummary, run_pipeline

__all__ = ["RunSummary", "StagePlan", "plan_stages", "plan_tiles", "plan_todo", "run_pipeline"]
