"""No-data pixels (NaN) take no part in metrics or losses, and the no-data border is not an edge."""

import numpy as np
import torch

from axion_ray.metrics.geometry import geometry_metrics
from axion_ray.metrics.spectral import ndvi, spectral_metrics
from axion_ray.train.losses import stage2_loss


def images(seed=0, n=3, size=32):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.02, 0.4, (n, 4, size, size)).astype(np.float32)
    pred = (truth * rng.uniform(0.9, 1.1, truth.shape)).astype(np.float32)
    return pred, truth


def test_spectral_figures_pool_only_valid_pixels():
    pred, truth = images()
    holed = truth.copy()
    holed[0, :, :, :12] = np.nan      # a no-data strip
    holed[2] = np.nan                 # a tile with no valid pixel adds nothing
    m = spectral_metrics(pred, holed)
    valid = np.isfinite(holed).all(axis=1)
    expected = np.sqrt(np.mean((ndvi(pred) - ndvi(truth))[valid] ** 2))
    assert np.isclose(m["ndvi_rmse"], expected, rtol=1e-9)
    assert np.isclose(m["mae"], np.abs(pred - truth).transpose(1, 0, 2, 3)[:, valid].mean(), rtol=1e-9)
    assert np.isfinite(list(m.values())).all()
    full = spectral_metrics(pred, truth)  # with every pixel valid, nothing changes
    assert full["ndvi_rmse"] != m["ndvi_rmse"] and np.isclose(full["ndvi_rmse"],
                                                              np.sqrt(np.mean((ndvi(pred) - ndvi(truth)) ** 2)))


def test_the_border_of_the_valid_region_is_not_an_edge():
    yy, xx = np.mgrid[0:48, 0:48]
    smooth = np.broadcast_to(0.2 + 0.001 * xx + 0.001 * yy, (1, 4, 48, 48)).astype(np.float32).copy()
    holed = smooth.copy()
    holed[:, :, :, 30:] = np.nan
    m = geometry_metrics(holed, holed)
    assert m["edge_disp_mean_px"] == 0.0 and m["edge_ratio"] == 1.0
    # Filled with zeros instead, the border would be the strongest edge of the tile.
    zero_filled = np.nan_to_num(holed)
    shifted = np.roll(zero_filled, 3, axis=-1)
    assert geometry_metrics(shifted, zero_filled)["edge_disp_mean_px"] > 1.0
    assert geometry_metrics(np.roll(holed, 3, axis=-1), holed)["edge_disp_mean_px"] == 0.0


def test_the_stage2_loss_ignores_no_data_and_stays_finite():
    pred, truth = (torch.from_numpy(a) for a in images(1))
    pred.requires_grad_(True)
    holed = truth.clone()
    holed[:, :, :8] = float("nan")
    loss, terms = stage2_loss(pred, holed, truth.clone())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
    assert pred.grad[:, :, :8].abs().sum() < pred.grad[:, :, 8:16].abs().sum()  # no pull from no-data rows
    valid_only, _ = stage2_loss(pred[:, :, 8:].detach(), truth[:, :, 8:], truth[:, :, 8:].clone())
    assert abs(terms["l1"] - float(torch.nn.functional.l1_loss(pred[:, :, 8:], truth[:, :, 8:]))) < 1e-6
    assert valid_only.item() > 0
