"""Real scenes: several CRSs onto one grid, no-data wedges, STAC items, COG mosaics, tile footprints.

Scenes are real GeoTIFFs written with rasterio; the field they sample is a smooth analytic function of
position (in EPSG:32633 metres), so the ingested mosaic can be compared with the truth at every pixel
whatever the reprojection did.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from pyproj import Transformer

from axion_ray.cli import main
from axion_ray.errors import TileDataError, TileMetadataError
from axion_ray.store import TileStatus, TileStore
from axion_ray.store.geotiff import mosaic
from axion_ray.store.ingest import ingest_scenes
from axion_ray.store.scenes import scene_from_geotiff, scenes_from_stac

REF_CRS = "EPSG:32633"
X0, Y0 = 499_000.0, 5_201_000.0  # the AOI's top-left in REF_CRS


def field_linear(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """VV, VH linear power at REF_CRS coordinates: smooth (kilometre scale), so bilinear resampling is exact
    to a small fraction of a dB."""
    vv = 0.06 + 0.03 * np.sin((x - X0) / 900.0) * np.cos((y - Y0) / 1300.0)
    return np.stack([vv, 0.25 * vv + 0.004 * np.cos((x - X0) / 1500.0)]).astype(np.float32)


def write_scene(path, crs, transform, shape, *, month=None, wedge=None, nodata=0.0):
    """Sample the field on a scene's own grid and write it (linear power, nodata 0)."""
    h, w = shape
    cols, rows = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    xs, ys = transform @ (cols, rows)
    ref_x, ref_y = Transformer.from_crs(crs, REF_CRS, always_xy=True).transform(xs, ys)
    data = field_linear(np.asarray(ref_x), np.asarray(ref_y))
    if wedge is not None:
        data[:, wedge] = nodata
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=2, dtype="float32", crs=crs,
                       transform=transform, nodata=nodata) as dst:
        dst.write(data)
        if month:
            dst.update_tags(TIFFTAG_DATETIME=f"2024:{month:02d}:10 09:30:00")
    return path


def diagonal_wedge(shape, fraction):
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    return (xx / w + yy / h) < np.sqrt(2 * fraction)


@pytest.mark.slow
def test_a_scene_with_a_no_data_wedge_runs_every_partial_tile_through_three_stages(local_ray, tmp_path):
    from axion_ray.config import InferConfig
    from axion_ray.pipeline import run_pipeline

    wedge = diagonal_wedge((300, 340), 0.11)
    scene = write_scene(tmp_path / "scene.tif", REF_CRS, Affine(10, 0, X0, 0, -10, Y0), (300, 340), wedge=wedge)
    assert main(["ingest", str(scene), str(tmp_path / "aoi.zarr"), "--tile-size", "64", "--overlap", "8"]) == 0
    store = TileStore.open(tmp_path / "aoi.zarr")
    no_data = store.indices_with_status("opt_v1", TileStatus.NO_DATA)
    fractions = store.valid_fractions()
    assert store.n_tiles == 36 and np.array_equal(no_data, np.flatnonzero(fractions < 0.5))
    assert 0.5 > fractions.min() and ((fractions > 0.5) & (fractions < 1)).sum() >= 3  # partial tiles exist

    # The regression kinds of Stages 1 and 3 (what users without TerraMind's weights run), Stage 1 with 4
    # test-time views; generation's NaN handling is the pipeline tests' (tests/pipeline/test_pipeline.py).
    cfg = InferConfig(stages=(1, 2, 3), allow_random_init=True, stage1_kind="regress", stage3_kind="regress",
                      device="cpu", progress_interval_s=0.5, tta=4)
    summary = run_pipeline(store.path, cfg, say=lambda _: None)
    assert summary.failed == 0 and all(s["no_data"] == no_data.size for s in summary.per_stage.values())
    store = TileStore.open(store.path)
    done = np.flatnonzero(store.status("opt_v3") == TileStatus.DONE)
    assert done.size == 36 - no_data.size
    assert store.provenance("opt_v1")["tta"] == 4 and store.provenance("opt_v3")["tta"] == 1  # the calibrator: once
    s1 = store.read("s1", done)
    invalid = ~np.isfinite(s1).all(axis=1)
    for name in ("opt_v1", "opt_v2", "opt_v3"):  # NaN exactly where the input was invalid, stage after stage
        out = store.read(name, done)
        np.testing.assert_array_equal(~np.isfinite(out).all(axis=1), invalid, err_msg=name)
        assert np.isfinite(out).any(axis=1).sum() == (~invalid).sum()
    # The mosaic is nodata exactly where no produced tile has a valid pixel: the wedge, and what only
    # no-data tiles cover.
    out = mosaic(store, "opt_v1", tmp_path / "v1.tif")
    with rasterio.open(out) as src:
        produced = np.isfinite(src.read()).all(axis=0)
    covered = np.zeros((300 + 84, 340 + 44), bool)
    meta = store.tile_meta()
    for i in done:
        r, c = int(meta["tile_row"][i]), int(meta["tile_col"][i])
        covered[r * 56:r * 56 + 64, c * 56:c * 56 + 64] = True
    np.testing.assert_array_equal(produced, ~wedge & covered[:300, :340])
    # A no-data tile is never retried, even when asked to redo everything.
    again = run_pipeline(store.path, InferConfig(**{**cfg.__dict__, "stages": (2,), "skip_existing": False}),
                         say=lambda _: None)
    assert again.scheduled_tiles == done.size


def test_three_scenes_in_three_crss_become_one_grid_matching_the_field(tmp_path):
    # Scene A on the AOI's own UTM grid, B in the neighbouring zone, C in geographic coordinates;
    # they overlap, each with its own date; the AOI polygon is smaller than their union.
    a = write_scene(tmp_path / "a.tif", REF_CRS, Affine(10, 0, X0, 0, -10, Y0), (200, 260), month=4,
                    wedge=diagonal_wedge((200, 260), 0.05))
    to_32 = Transformer.from_crs(REF_CRS, "EPSG:32632", always_xy=True)
    bx, by = to_32.transform(X0 + 1500, Y0 + 300)
    b = write_scene(tmp_path / "b.tif", "EPSG:32632", Affine(10, 0, bx, 0, -10, by), (260, 260), month=7)
    to_ll = Transformer.from_crs(REF_CRS, "EPSG:4326", always_xy=True)
    lon, lat = to_ll.transform(X0 + 600, Y0 - 1200)
    c = write_scene(tmp_path / "c.tif", "EPSG:4326", Affine(1.2e-4, 0, lon, 0, -0.9e-4, lat), (110, 300), month=9)
    aoi_ll = [to_ll.transform(x, y) for x, y in [(X0 + 200, Y0 - 200), (X0 + 3200, Y0 - 300), (X0 + 1700, Y0 - 1100),
                                                 (X0 + 300, Y0 - 1900), (X0 + 200, Y0 - 200)]]
    aoi = tmp_path / "aoi.geojson"
    aoi.write_text(json.dumps({"type": "Feature", "properties": {},
                               "geometry": {"type": "Polygon", "coordinates": [aoi_ll]}}))
    store = ingest_scenes([scene_from_geotiff(p) for p in (a, b, c)], tmp_path / "multi.zarr", aoi=aoi,
                          tile_size=32, overlap=4)
    assert store.crs == REF_CRS and store.transform[1] == 10.0  # UTM zone of the AOI's centroid, 10 m
    rows, cols = store.grid_shape
    assert store.n_tiles < rows * cols  # only tiles that touch the polygon
    months = store.tile_meta()["month"]
    assert set(np.unique(months)) <= {4, 7, 9} and len(set(np.unique(months))) >= 2

    out = mosaic(store, "s1", tmp_path / "s1.tif")
    with rasterio.open(out) as src:
        got = src.read()
        cols_, rows_ = np.meshgrid(np.arange(src.width) + 0.5, np.arange(src.height) + 0.5)
        xs, ys = src.transform @ (cols_, rows_)
    truth_db = 10 * np.log10(field_linear(xs, ys))
    valid = np.isfinite(got).all(axis=0)
    assert valid.mean() > 0.5
    err = np.abs(got - truth_db)[:, valid]
    # dB, seams included (measured over the scenes' union: mean 0.0001, p99 0.0005, max 0.014)
    assert np.percentile(err, 99) < 0.01 and err.max() < 0.1, (np.percentile(err, 99), err.max())


def test_tiles_under_min_valid_are_no_data_and_bad_options_leave_nothing(tmp_path, capsys):
    wedge = diagonal_wedge((128, 128), 0.3)
    scene = write_scene(tmp_path / "s.tif", REF_CRS, Affine(10, 0, X0, 0, -10, Y0), (128, 128), wedge=wedge)
    store = ingest_scenes([scene_from_geotiff(scene)], tmp_path / "s.zarr", tile_size=64, overlap=0, min_valid=0.9)
    fractions = store.valid_fractions()
    no_data = store.indices_with_status("opt_v2", TileStatus.NO_DATA)
    assert np.array_equal(no_data, np.flatnonzero(fractions < 0.9)) and 0 < no_data.size < 4
    counts = store.summary()["arrays"]["opt_v1"]
    assert counts["no_data"] == no_data.size and counts["pending"] == 4 - no_data.size
    assert main(["status", store.path]) == 0 and "no data" in capsys.readouterr().out
    # A mistake is found before anything is written, and nothing half-made is left behind.
    for args in (["--month", "13"], ["--min-valid", "0"], ["--tile-size", "8"]):
        assert main(["ingest", str(scene), str(tmp_path / "bad.zarr"), *args]) == 2
        assert not (tmp_path / "bad.zarr").exists()
    rasterio.open(tmp_path / "nocrs.tif", "w", driver="GTiff", width=8, height=8, count=2, dtype="float32").close()
    with pytest.raises(TileDataError, match="no CRS"):
        scene_from_geotiff(tmp_path / "nocrs.tif")
    with rasterio.open(tmp_path / "three.tif", "w", driver="GTiff", width=8, height=8, count=3, dtype="float32",
                       crs=REF_CRS, transform=Affine(10, 0, X0, 0, -10, Y0)):
        pass
    with pytest.raises(TileDataError, match="3 band"):
        scene_from_geotiff(tmp_path / "three.tif")
    with pytest.raises(TileMetadataError, match="AOI file"):
        ingest_scenes([scene_from_geotiff(scene)], tmp_path / "x.zarr", aoi=tmp_path / "missing.geojson")


def test_stac_items_with_vv_vh_assets(tmp_path):
    import pystac

    items = []
    for i, month in enumerate((3, 5)):
        transform = Affine(10, 0, X0 + i * 800, 0, -10, Y0)
        both = write_scene(tmp_path / f"both{i}.tif", REF_CRS, transform, (96, 128))
        with rasterio.open(both) as src:
            data, profile = src.read(), src.profile
        profile.update(count=1)
        for j, pol in enumerate(("vv", "vh")):
            with rasterio.open(tmp_path / f"item{i}_{pol}.tif", "w", **profile) as dst:
                dst.write(data[j:j + 1])
        bbox = [0.0, 0.0, 1.0, 1.0]
        item = pystac.Item(f"s1-{i}", {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]}, bbox,
                           dt.datetime(2024, month, 2, tzinfo=dt.timezone.utc), {})
        for pol in ("vv", "vh"):
            item.add_asset(pol, pystac.Asset(f"./item{i}_{pol}.tif", media_type=pystac.MediaType.GEOTIFF))
        items.append(item)
    (tmp_path / "items.json").write_text(json.dumps(pystac.ItemCollection(items).to_dict(transform_hrefs=False)))
    scenes = scenes_from_stac(tmp_path / "items.json")
    assert [s.month for s in scenes] == [3, 5]
    assert main(["ingest", "--stac", str(tmp_path / "items.json"), str(tmp_path / "stac.zarr"), "--tile-size", "32",
                 "--overlap", "0", "--crs", REF_CRS]) == 0
    store = TileStore.open(tmp_path / "stac.zarr")
    assert set(np.unique(store.tile_meta()["month"])) == {3, 5}
    assert store.attrs["source"]["format"] == "stac" and len(store.attrs["source"]["scenes"]) == 2


def test_mosaics_are_valid_cogs_clip_to_the_aoi_and_footprints_open_in_gdal(tmp_path):
    import geopandas
    from rio_cogeo.cogeo import cog_validate

    scene = write_scene(tmp_path / "s.tif", REF_CRS, Affine(10, 0, X0, 0, -10, Y0), (150, 170))
    store = ingest_scenes([scene_from_geotiff(scene)], tmp_path / "s.zarr", tile_size=64, overlap=8)
    store.mark_failed("opt_v1", [1], "a reason")
    out = mosaic(store, "s1", tmp_path / "m.tif")
    valid, errors, _ = cog_validate(str(out))
    assert valid, errors
    # Clip to a polygon covering the left half: outside it, nodata.
    to_ll = Transformer.from_crs(REF_CRS, "EPSG:4326", always_xy=True)
    ring = [to_ll.transform(x, y) for x, y in [(X0, Y0), (X0 + 850, Y0), (X0 + 850, Y0 - 1500), (X0, Y0 - 1500), (X0, Y0)]]
    (tmp_path / "half.geojson").write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    assert main(["mosaic", store.path, "--array", "s1", "--out", str(tmp_path / "half.tif"),
                 "--aoi", str(tmp_path / "half.geojson")]) == 0
    with rasterio.open(tmp_path / "half.tif") as src:
        data = src.read()
    assert np.isfinite(data[:, :, :80]).all() and np.isnan(data[:, :, 90:]).all()
    assert main(["footprints", store.path, "--out", str(tmp_path / "tiles.geojson")]) == 0
    frame = geopandas.read_file(tmp_path / "tiles.geojson")
    assert len(frame) == store.n_tiles and frame.crs.to_epsg() == 4326
    assert frame.loc[1, "status_opt_v1"] == "failed" and frame.loc[1, "reason_opt_v1"] == "a reason"
    assert frame.loc[0, "valid_fraction_s1"] == 1.0
    bounds = frame.to_crs(REF_CRS).total_bounds
    np.testing.assert_allclose(bounds[[0, 3]], [X0, Y0], atol=0.01)
