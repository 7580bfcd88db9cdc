import pytest

from axion_ray.config import CompositeConfig
from axion_ray.metrics.composite import composite_score

BASELINE = {"ndvi_rmse": 0.0850, "evi_rmse": 0.0950, "sam_rad": 0.1800}
STAGE2 = {"ndvi_rmse": 0.0625, "evi_rmse": 0.0760, "sam_rad": 0.1309}
REPORT_GEOMETRY = {"edge_disp_mean_px": 1.229, "edge_disp_max_px": 3.816, "edge_ratio": 0.817}


def test_axion_sat_report_figures_give_0_0660():
    result = composite_score(STAGE2, BASELINE, REPORT_GEOMETRY)
    assert result.improvements == pytest.approx({"ndvi_rmse": 0.0225, "evi_rmse": 0.0190, "sam_rad": 0.0491})
    assert result.penalty == 0 and result.constraints_pass
    # 0.0225 + 0.0190 + 0.5 * 0.0491 = 0.06605: the report's 0.0660 to its 4 decimals (half-even).
    assert result.composite_score == pytest.approx(0.06605, abs=1e-12)
    assert abs(result.composite_score - 0.0660) <= 0.00005 + 1e-12


def test_edge_movement_is_penalised_and_fails_constraints():
    moved = {"edge_disp_mean_px": 2.5, "edge_disp_max_px": 6.0, "edge_ratio": 0.6}
    result = composite_score(STAGE2, BASELINE, moved)
    assert result.penalty == pytest.approx(10 * 0.5 + 5 * 1.0 + 2 * 0.1)
    assert result.composite_score == pytest.approx(result.gain - result.penalty)
    assert not result.constraints_pass and not any(result.constraints.values())


def test_weights_are_configurable():
    only_ndvi = CompositeConfig(w_evi=0.0, w_sam=0.0)
    assert composite_score(STAGE2, BASELINE, REPORT_GEOMETRY, only_ndvi).gain == pytest.approx(0.0225)


def test_a_worse_candidate_scores_negative():
    assert composite_score(BASELINE, STAGE2, REPORT_GEOMETRY).composite_score < 0


def test_against_the_truth_edge_count_is_no_constraint_but_placement_is():
    """Stage 1's edges are the truth's, whose count includes texture no SAR reading reproduces: a low
    edge ratio neither fails nor costs there, while displaced edges still do."""
    fewer_edges = {"edge_disp_mean_px": 1.3, "edge_disp_max_px": 3.7, "edge_ratio": 0.45}
    assert not composite_score(STAGE2, BASELINE, fewer_edges).constraints_pass
    truth_cfg = CompositeConfig().against_truth()
    result = composite_score(STAGE2, BASELINE, fewer_edges, truth_cfg)
    assert result.constraints_pass and result.penalty == 0 and set(result.constraints) == {
        "edge_disp_mean_px<2", "edge_disp_max_px<5"}
    moved = composite_score(STAGE2, BASELINE, {**fewer_edges, "edge_disp_mean_px": 2.5}, truth_cfg)
    assert not moved.constraints_pass and moved.penalty == pytest.approx(5.0)
    # Stage 1 alone has the truth's edges; Stages 2 and 3 keep their input's, the ratio included.
    assert [CompositeConfig.for_stage(s).min_edge_ratio for s in (1, 2, 3)] == [None, 0.7, 0.7]
