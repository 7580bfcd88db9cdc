"""Streaming multi-stage inference on Ray Data over tile stores: plan, build, stream.

The names below load on first use (PEP 562): every Ray worker that unpickles a stage actor or the
progress tracker imports this package first, and eager imports of the planner and the store
(zarr, ~0.35 s) sat on the path to an actor's first tile.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from axion_ray.pipeline.plan import StagePlan, plan_stages, plan_tiles, plan_todo
    from axion_ray.pipeline.run import RunSummary, run_pipeline

_HOMES = {"StagePlan": "plan", "plan_stages": "plan", "plan_tiles": "plan", "plan_todo": "plan",
          "RunSummary": "run", "run_pipeline": "run"}

__all__ = ["RunSummary", "StagePlan", "plan_stages", "plan_tiles", "plan_todo", "run_pipeline"]


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"axion_ray.pipeline.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'axion_ray.pipeline' has no attribute {name!r}")
