import numpy as np
import pytest

from axion_ray.config import GeometryConfig
from axion_ray.metrics.geometry import chamfer_displacement, geometry_metrics


def squares(n=2, size=48, shift=0):
    img = np.full((n, 4, size, size), 0.1, np.float32)
    img[:, :, 12 + shift:30 + shift, 12:30] = 0.5
    return img


def test_identical_images_have_no_movement():
    g = geometry_metrics(squares(), squares())
    assert g["edge_disp_mean_px"] == 0 and g["edge_disp_max_px"] == 0
    assert g["edge_ratio"] == 1.0 and g["edge_corr"] == pytest.approx(1.0)


def test_a_shift_is_measured_in_pixels():
    g = geometry_metrics(squares(shift=3), squares())
    # Horizontal edges move 3 px, vertical ones slide along themselves: the chamfer mean lies between.
    assert 0.8 < g["edge_disp_mean_px"] < 3.0
    assert g["edge_disp_max_px"] == pytest.approx(g["edge_disp_mean_px"])
    assert g["edge_corr"] < 0.9


def test_brightness_change_without_motion_keeps_edges():
    brighter = squares() * 1.3
    g = geometry_metrics(brighter, squares())
    assert g["edge_disp_mean_px"] == 0 and g["edge_ratio"] == 1.0


def test_displacement_is_truncated():
    a = np.zeros((48, 48), bool)
    b = np.zeros((48, 48), bool)
    a[:, 2] = True
    b[:, 45] = True
    assert chamfer_displacement(a, b, truncate=10.0) == 10.0
    assert chamfer_displacement(a, np.zeros_like(b), truncate=10.0) == 5.0  # one side edgeless


def test_edge_ratio_counts_lost_edges():
    flat = np.full((1, 4, 48, 48), 0.2, np.float32)
    img = squares(1)
    img[:, :, 36:40, 36:40] = 0.5  # a second object the candidate will miss
    candidate = img.copy()
    candidate[:, :, 36:40, 36:40] = 0.1
    g = geometry_metrics(candidate, img)
    assert g["edge_ratio"] < 1.0
    assert geometry_metrics(flat, flat)["edge_ratio"] == 1.0


def test_threshold_is_configurable():
    low = geometry_metrics(squares(shift=2), squares(), GeometryConfig(edge_threshold=0.05))
    high = geometry_metrics(squares(shift=2), squares(), GeometryConfig(edge_threshold=0.9))
    assert low != high
