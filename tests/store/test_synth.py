import numpy as np
import pytest

from axion_ray.config import SynthConfig
from axion_ray.errors import TileMetadataError
from axion_ray.metrics.evaluate import evaluate_store
from axion_ray.metrics.spectral import ndvi
from axion_ray.store import TileStatus, TileStore
from axion_ray.store.synth import Stage1Prior, replay_land_cover, replay_tiles, synthesize_aoi
from axion_ray.store.synth_scene import BARE, CROPS, FOREST, URBAN, WATER, SceneFields, backscatter_db, reflectance

ALL = np.arange(9)


def test_store_contents_and_georeferencing(small_aoi):
    store = TileStore.open(small_aoi.path, mode="r")
    assert store.n_tiles == 9 and store.grid_shape == (3, 3) and store.overlap == 4
    assert store.crs == "EPSG:32633" and store.transform == (500000.0, 10.0, 0.0, 5200000.0, 0.0, -10.0)
    meta = store.tile_meta()
    assert meta["tile_row"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert meta["tile_col"].tolist() == [0, 1, 2] * 3
    assert set(meta["month"].tolist()) <= set(range(1, 13))
    assert set(meta["biome_code"].tolist()) <= set(store.attrs["synthetic"]["biomes"])
    assert (store.status("opt_v1") == TileStatus.DONE).all()
    assert store.provenance("opt_v1")["stage"] == "synthetic-prior"
    for name in ("s1", "s2_truth", "opt_v1"):
        assert np.isfinite(store.read(name, ALL)).all()
    optical = store.read("s2_truth", ALL)
    assert optical.min() >= 0 and optical.max() <= 1


def test_overlapping_tiles_share_their_pixels(small_aoi):
    # One coherent mosaic: vertically adjacent tiles (one swath, one month) share 4 rows of ground.
    s1 = small_aoi.read("s1", [0, 3])
    np.testing.assert_array_equal(s1[0][:, -4:, :], s1[1][:, :4, :])  # tile 0 over tile 3 (same column)
    truth = small_aoi.read("s2_truth", [0, 3])
    np.testing.assert_array_equal(truth[0][:, -4:, :], truth[1][:, :4, :])


def test_same_seed_same_aoi_other_seed_other_aoi(tmp_path):
    cfg = SynthConfig(rows=2, cols=2, tile_size=32, seed=3)
    a = synthesize_aoi(tmp_path / "a.zarr", cfg)
    b = synthesize_aoi(tmp_path / "b.zarr", cfg)
    c = synthesize_aoi(tmp_path / "c.zarr", SynthConfig(rows=2, cols=2, tile_size=32, seed=4))
    idx = np.arange(4)
    for name in ("s1", "s2_truth", "opt_v1"):
        np.testing.assert_array_equal(a.read(name, idx), b.read(name, idx))
        assert not np.array_equal(a.read(name, idx), c.read(name, idx))


def test_months_and_biomes_can_be_chosen(tmp_path):
    store = synthesize_aoi(tmp_path / "x.zarr", SynthConfig(rows=2, cols=4, tile_size=16, months=(3, 9), biomes=(15,)))
    meta = store.tile_meta()
    assert meta["month"].tolist() == [3, 3, 9, 9] * 2  # swaths are column groups
    assert set(meta["biome_code"].tolist()) == {15}
    with pytest.raises(TileMetadataError, match="months"):
        synthesize_aoi(tmp_path / "y.zarr", SynthConfig(months=(13,)))
    with pytest.raises(TileMetadataError, match="biome"):
        synthesize_aoi(tmp_path / "z.zarr", SynthConfig(biomes=(99,)))


def test_the_scene_replays_tile_by_tile(tmp_path):
    # What an analysis of a model's errors needs and no input says: each pixel's class and crop parcel.
    cfg = SynthConfig(rows=2, cols=3, tile_size=32, seed=5, biomes=(15,), months=(7,))
    green = ndvi(synthesize_aoi(tmp_path / "r.zarr", cfg).read("s2_truth", np.arange(6)))

    def within_parcel_share(seed):
        replayed = SynthConfig(rows=2, cols=3, tile_size=32, seed=seed, biomes=(15,), months=(7,))
        cover, parcel = replay_land_cover(replayed), replay_tiles(replayed, "parcel")
        assert cover.shape == parcel.shape == green.shape
        crops = cover == CROPS
        key = (np.arange(6)[:, None, None] * 10**6 + parcel)[crops]
        _, group = np.unique(key, return_inverse=True)
        values = green[crops]
        means = np.bincount(group, values) / np.bincount(group)
        return float(np.mean((values - means[group]) ** 2) / np.var(values)), float(green[cover == WATER].max())

    share, water = within_parcel_share(5)
    assert share < 0.1 and water < 0  # a crop parcel shares one phase and vigour; water is dark in NIR
    assert within_parcel_share(6)[0] > 0.3  # another seed's map does not fit this store
    assert replay_tiles(cfg, "texture").shape == (6, 4, 32, 32)  # a field with bands keeps them
    with pytest.raises(ValueError, match="unknown scene field 'parcels'; known: cover, biome"):
        replay_tiles(cfg, "parcels")


def _uniform_fields(cover_class, shape=(64, 64), biome=4):
    return SceneFields(cover=np.full(shape, cover_class, np.int8), biome=np.full(shape, biome, np.int8),
                       phase=np.zeros(shape, np.float32), vigour=np.ones(shape, np.float32),
                       texture=np.ones((4, *shape), np.float32), roughness=np.zeros(shape, np.float32),
                       parcel=np.zeros(shape, np.int32))


def test_reflectance_is_physically_sensible():
    def mean_ndvi(cls, month):
        return float(ndvi(reflectance(_uniform_fields(cls), month)).mean())

    assert mean_ndvi(WATER, 7) < 0
    assert mean_ndvi(BARE, 7) < 0.2 and mean_ndvi(URBAN, 7) < 0.2
    assert mean_ndvi(FOREST, 7) > 0.6
    # Crops follow the season: green at the biome's peak (July), bare in winter.
    assert mean_ndvi(CROPS, 7) > 0.7 > 0.3 > mean_ndvi(CROPS, 1)


def test_backscatter_levels_and_gamma_speckle():
    rng = np.random.default_rng(0)
    mean_db = {cls: backscatter_db(rng, _uniform_fields(cls, (128, 128)), 7).mean(axis=(1, 2))
               for cls in (WATER, FOREST, URBAN, BARE)}
    assert mean_db[WATER][0] < -18 and mean_db[WATER][1] < -25
    assert mean_db[URBAN][0] > mean_db[FOREST][0] > mean_db[BARE][0] > mean_db[WATER][0]
    # Multiplicative gamma speckle: intensity / local mean has variance 1/ENL (ENL 4.4).
    vv = 10 ** (backscatter_db(rng, _uniform_fields(BARE, (256, 256)), 7)[0] / 10)
    trend = vv.mean(axis=0, keepdims=True)  # remove the incidence-angle trend along range
    enl = 1.0 / (vv / trend).var()
    assert 3.8 < enl < 5.0


def test_prior_bias_is_a_property_of_the_model_not_the_seed():
    cover = np.full((8, 8), FOREST, np.int8)
    np.testing.assert_array_equal(Stage1Prior().gain(cover, 7, 4), Stage1Prior().gain(cover, 7, 4))
    assert not np.allclose(Stage1Prior().gain(cover, 7, 4), Stage1Prior().gain(cover, 1, 4))  # month matters
    assert not np.allclose(Stage1Prior().gain(cover, 7, 4), Stage1Prior().gain(cover, 7, 13))  # biome matters


def test_prior_errors_land_near_axion_sat_stage1_figures(tmp_path):
    figures = []
    for seed in range(3):
        store = synthesize_aoi(tmp_path / f"{seed}.zarr", SynthConfig(rows=5, cols=5, seed=seed, overlap=8))
        m = evaluate_store(store, pred="opt_v1", baseline=None)["pred_metrics"]
        figures.append([m["ndvi_rmse"], m["evi_rmse"], m["sam_rad"]])
    mean = np.mean(figures, axis=0)
    np.testing.assert_allclose(mean, [0.085, 0.095, 0.18], rtol=0.2)
