"""Composite checkpoint score: spectral gain minus edge-movement penalty, with hard constraints.

gain = w_ndvi·Δndvi_rmse + w_evi·Δevi_rmse + w_sam·Δsam_rad, Δ = baseline − candidate (both vs truth);
penalty = 10·max(0, mean_disp − 2) + 5·max(0, max_disp − 5) + 2·max(0, 0.7 − edge_ratio);
the edge-ratio term and constraint apply when edges are measured against a stage's optical input, not
against the truth (`CompositeConfig.against_truth`).
The Axion-Sat Stage 2 report's gains (+0.0225, +0.0190, +0.0491) give 0.0660 (docs/ARCHITECTURE.md §6).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from axion_ray.config import CompositeConfig


@dataclass(frozen=True)
class CompositeResult:
    gain: float
    penalty: float
    composite_score: float
    improvements: dict[str, float]
    constraints: dict[str, bool]
    constraints_pass: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def composite_score(candidate: Mapping[str, float], baseline: Mapping[str, float],
                    geometry: Mapping[str, float], cfg: CompositeConfig = CompositeConfig()) -> CompositeResult:
    """Score a candidate against the baseline; both spectral dicts are measured against the truth."""
    improvements = {k: float(baseline[k] - candidate[k]) for k in ("ndvi_rmse", "evi_rmse", "sam_rad")}
    gain = (cfg.w_ndvi * improvements["ndvi_rmse"] + cfg.w_evi * improvements["evi_rmse"]
            + cfg.w_sam * improvements["sam_rad"])
    mean_d, max_d, ratio = geometry["edge_disp_mean_px"], geometry["edge_disp_max_px"], geometry["edge_ratio"]
    penalty = (cfg.w_mean_disp * max(0.0, mean_d - cfg.mean_disp_limit_px)
               + cfg.w_max_disp * max(0.0, max_d - cfg.max_disp_limit_px))
    constraints = {
        f"edge_disp_mean_px<{cfg.mean_disp_limit_px:g}": bool(mean_d < cfg.mean_disp_limit_px),
        f"edge_disp_max_px<{cfg.max_disp_limit_px:g}": bool(max_d < cfg.max_disp_limit_px),
    }
    if cfg.min_edge_ratio is not None:  # None against the truth's edges (CompositeConfig.against_truth)
        penalty += cfg.w_edge_ratio * max(0.0, cfg.min_edge_ratio - ratio)
        constraints[f"edge_ratio>{cfg.min_edge_ratio:g}"] = bool(ratio > cfg.min_edge_ratio)
    return CompositeResult(float(gain), float(penalty), float(gain - penalty), improvements, constraints,
                           all(constraints.values()))


#: How far below every passing trial a constraint-failing one ranks (scores are O(1); penalties O(10)).
CONSTRAINT_FAIL_OFFSET = 1.0e6


def rank_score(score: float, passes: bool) -> float:
    """A single number to maximise in which any result that fails its hard constraints (or floor)
    ranks below every result that passes, and results are ordered by `score` within each group."""
    return float(score) if passes else float(score) - CONSTRAINT_FAIL_OFFSET
