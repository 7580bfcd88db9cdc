import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.functional.image import spectral_angle_mapper

from axion_ray.metrics.spectral import SpectralAccumulator, evi, ndvi, spectral_angle, spectral_metrics, ssim_per_tile


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.02, 0.5, (3, 4, 40, 40)).astype(np.float32)
    pred = np.clip(truth * rng.uniform(0.8, 1.2, (1, 4, 1, 1)) + rng.normal(0, 0.02, truth.shape), 0, 1)
    return pred.astype(np.float32), truth


def test_indices_follow_the_formulas():
    x = np.array([0.05, 0.08, 0.04, 0.40], np.float64).reshape(1, 4, 1, 1)
    assert ndvi(x).item() == pytest.approx((0.40 - 0.04) / (0.40 + 0.04 + 1e-8))
    assert evi(x).item() == pytest.approx(2.5 * (0.40 - 0.04) / (0.40 + 6 * 0.04 - 7.5 * 0.05 + 1))


def test_sam_agrees_with_torchmetrics(pair):
    pred, truth = pair
    ours = spectral_angle(pred, truth).mean()
    theirs = spectral_angle_mapper(torch.from_numpy(pred).double(), torch.from_numpy(truth).double()).item()
    assert ours == pytest.approx(theirs, abs=1e-4)
    assert ours > 0.01  # not trivially zero


def test_psnr_agrees_with_scikit_image(pair):
    pred, truth = pair
    assert spectral_metrics(pred, truth)["psnr_db"] == pytest.approx(
        peak_signal_noise_ratio(truth.astype(np.float64), pred.astype(np.float64), data_range=1.0), abs=1e-4)


def test_ssim_agrees_with_scikit_image_per_tile(pair):
    pred, truth = pair
    ours = ssim_per_tile(pred, truth)
    theirs = [structural_similarity(truth[i].astype(np.float64), pred[i].astype(np.float64), gaussian_weights=True,
                                    sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=0)
              for i in range(len(pred))]
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert ours.max() < 0.999


def test_perfect_prediction():
    truth = np.random.default_rng(1).uniform(0.05, 0.5, (2, 4, 16, 16))
    m = spectral_metrics(truth, truth)
    assert m["mse"] == 0 and m["ndvi_rmse"] == 0 and m["psnr_db"] == float("inf")
    assert m["sam_rad"] == pytest.approx(0, abs=1e-6) and m["ssim"] == pytest.approx(1.0)


def test_pooling_over_batches_equals_one_batch(pair):
    pred, truth = pair
    acc = SpectralAccumulator()
    acc.update(pred[:1], truth[:1])
    acc.update(pred[1:], truth[1:])
    pooled, whole = acc.compute(), spectral_metrics(pred, truth)
    assert acc.n_tiles == 3
    for key in whole:
        assert pooled[key] == pytest.approx(whole[key], rel=1e-9)


def test_workers_shares_merged_equal_one_accumulator_over_every_batch(pair):
    """Training validation splits its batches between the workers (train/loop.Validator) and merges
    their accumulators on rank 0: the figures are those of one accumulator fed every batch; an empty
    share (fewer batches than workers) adds nothing."""
    import pickle

    from axion_ray.metrics.geometry import GeometryAccumulator

    pred, truth = pair
    pred = pred.copy()
    pred[1, :, :5] = np.nan  # a no-data edge in one worker's share
    batches = [slice(0, 2), slice(2, 3)]
    spectral, geometry = SpectralAccumulator(), GeometryAccumulator()
    whole, whole_geo = SpectralAccumulator(), GeometryAccumulator()
    for share in [*batches, slice(3, 3)]:
        one, geo = SpectralAccumulator(), GeometryAccumulator()
        if len(pred[share]):
            one.update(pred[share], truth[share])
            geo.update(pred[share], truth[share])
            whole.update(pred[share], truth[share])
            whole_geo.update(pred[share], truth[share])
        spectral.merge(pickle.loads(pickle.dumps(one)))  # as torch.distributed.gather_object sends it
        geometry.merge(pickle.loads(pickle.dumps(geo)))
    assert spectral.n_tiles == 3
    assert spectral.compute() == pytest.approx(whole.compute(), rel=1e-12)
    assert spectral.compute()["ndvi_rmse"] == pytest.approx(spectral_metrics(pred, truth)["ndvi_rmse"], rel=1e-9)
    assert geometry.compute() == pytest.approx(whole_geo.compute(), rel=1e-12)


def test_shape_mismatch_and_empty_are_errors(pair):
    pred, truth = pair
    with pytest.raises(ValueError, match="equal"):
        spectral_metrics(pred[:, :3], truth)
    with pytest.raises(ValueError, match="no tiles"):
        SpectralAccumulator().compute()
