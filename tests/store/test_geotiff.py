import numpy as np
import pytest
import rasterio
import zarr
from affine import Affine

from axion_ray.cli import main
from axion_ray.errors import TileDataError
from axion_ray.store import TileStore
from axion_ray.store.geotiff import feather_weights, ingest_geotiff, mosaic

TRANSFORM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 5100000.0)


def scene(path, data, crs="EPSG:32632"):
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype="float32", crs=crs, transform=TRANSFORM) as dst:
        dst.write(data)
    return path


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    return (rng.normal(-14, 4, (2, 75, 101))).astype(np.float32)  # not a multiple of the stride


def test_ingest_then_mosaic_reproduces_the_image_exactly(tmp_path, image):
    store = ingest_geotiff(scene(tmp_path / "s1.tif", image), tmp_path / "s.zarr", tile_size=32, overlap=8)
    assert store.grid_shape == (3, 4) and store.crs == "EPSG:32632" and store.transform == TRANSFORM.to_gdal()
    np.testing.assert_array_equal(store.read("s1", [0])[0], image[:, :32, :32])
    np.testing.assert_array_equal(store.read("s1", [5])[0], image[:, 24:56, 24:56])  # row 1, col 1
    out = mosaic(store, "s1", tmp_path / "back.tif")
    with rasterio.open(out) as src:
        assert src.crs.to_string() == "EPSG:32632" and src.transform == TRANSFORM
        assert (src.height, src.width) == (75, 101)
        np.testing.assert_array_equal(src.read(), image)


def test_constant_tiles_mosaic_to_exactly_that_constant(tmp_path, image):
    store = ingest_geotiff(scene(tmp_path / "s1.tif", image), tmp_path / "s.zarr", tile_size=32, overlap=8)
    store.write("opt_v3", np.arange(store.n_tiles), np.full((store.n_tiles, 4, 32, 32), 0.37, np.float32))
    out = mosaic(store, "opt_v3", tmp_path / "v3.tif")
    with rasterio.open(out) as src:
        data = src.read()
        assert data.shape == (4, 75, 101) and (data == np.float32(0.37)).all()
        assert src.profile["tiled"] and src.profile["compress"] == "deflate"
        assert src.overviews(1) == [2, 4, 8]  # down to 8 px on the short side
        assert src.descriptions == ("B02", "B03", "B04", "B08")


def test_missing_tiles_stay_nodata_and_zarr_output(tmp_path, image):
    store = ingest_geotiff(scene(tmp_path / "s1.tif", image), tmp_path / "s.zarr", tile_size=32, overlap=8)
    store.write("opt_v3", [0], np.full((1, 4, 32, 32), 0.5, np.float32))
    out = mosaic(store, "opt_v3", tmp_path / "v3.zarr")
    arr = zarr.open_array(str(out), mode="r")
    assert arr.shape == (4, 75, 101) and arr.attrs["crs"] == "EPSG:32632"
    assert (arr[:, :32, :32] == np.float32(0.5)).all() and np.isnan(arr[:, 40:, 40:]).all()


def test_feather_weights_ramp_and_never_vanish():
    w = feather_weights(8, 3)
    assert w.min() > 0 and w.max() == 1.0 and np.allclose(w, w[::-1])
    assert (feather_weights(8, 0) == 1).all()


def test_linear_power_is_converted_to_db(tmp_path):
    linear = np.full((2, 40, 40), 0.1, np.float32)
    store = ingest_geotiff(scene(tmp_path / "lin.tif", linear), tmp_path / "s.zarr", tile_size=32, overlap=0)
    np.testing.assert_allclose(store.read("s1", [0]), -10.0, atol=1e-5)


def test_bad_scenes_are_user_errors(tmp_path, capsys):
    one_band = scene(tmp_path / "one.tif", np.zeros((1, 40, 40), np.float32))
    with pytest.raises(TileDataError, match="VV and VH"):
        ingest_geotiff(one_band, tmp_path / "s.zarr")
    (tmp_path / "junk.tif").write_text("not a tiff")
    assert main(["ingest", str(tmp_path / "junk.tif"), str(tmp_path / "j.zarr")]) == 2
    assert "not a readable raster" in capsys.readouterr().err
    store = TileStore.create(tmp_path / "x.zarr", 1, 16)
    assert main(["mosaic", store.path, "--array", "opt_v3", "--out", str(tmp_path / "x.png")]) == 2
