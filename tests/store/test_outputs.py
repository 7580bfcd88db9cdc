"""Outputs never destroy inputs, never replace a user's files unasked, and data never names a path."""

from __future__ import annotations

import json

import numpy as np
import pytest

from axion_ray.cli import main
from axion_ray.config import SynthConfig
from axion_ray.errors import NpzFormatError, UnsafeNameError
from axion_ray.store import TileStore
from axion_ray.store.npz import export_npz_dir, read_npz_tile
from axion_ray.store.synth import synthesize_aoi


@pytest.fixture
def store(tmp_path):
    return synthesize_aoi(tmp_path / "S.zarr", SynthConfig(rows=2, cols=2, tile_size=16, seed=4))


def one_line_error(capsys, fragment):
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1, err


def test_a_mosaic_onto_or_into_its_store_is_refused_and_the_store_survives(store, tmp_path, capsys):
    before = sorted(p.relative_to(store.path) for p in tmp_path.joinpath("S.zarr").rglob("*"))
    for out in (store.path, f"{store.path}/inside.zarr", str(tmp_path)):
        assert main(["mosaic", store.path, "--array", "opt_v1", "--out", out]) == 2
        one_line_error(capsys, "input")
    assert sorted(p.relative_to(store.path) for p in tmp_path.joinpath("S.zarr").rglob("*")) == before
    assert TileStore.open(store.path).counts("opt_v1").done == 4


def test_existing_outputs_are_replaced_only_with_overwrite(store, tmp_path, capsys):
    mine = tmp_path / "mine.tif"
    mine.write_text("the user's own file")
    assert main(["mosaic", store.path, "--array", "opt_v1", "--out", str(mine)]) == 2
    one_line_error(capsys, "--overwrite")
    assert mine.read_text() == "the user's own file"
    assert main(["mosaic", store.path, "--array", "opt_v1", "--out", str(mine), "--overwrite"]) == 0
    (tmp_path / "afile").write_text("x")
    assert main(["mosaic", store.path, "--array", "opt_v1", "--out", str(tmp_path / "afile" / "m.tif")]) == 2
    one_line_error(capsys, "is a file")
    # export-npz into a directory that holds files of the same names
    out = tmp_path / "npz"
    out.mkdir()
    (out / "tile_0000.npz").write_text("keep me")
    assert main(["export-npz", store.path, str(out), "--array", "opt_v1"]) == 2
    one_line_error(capsys, "would be replaced")
    assert (out / "tile_0000.npz").read_text() == "keep me" and not (out / "tile_0001.npz").exists()
    assert main(["export-npz", store.path, str(out), "--array", "opt_v1", "--overwrite"]) == 0
    assert (out / "tile_0001.npz").exists()


# An empty id is no name: it stands for the default id `tile_<i>` (store contract).
@pytest.mark.parametrize("tile_id", ["../../x", "/etc/passwd", "a/b", "..", "-rf", " x"])
def test_names_from_data_never_become_paths(store, tmp_path, tile_id):
    ids = np.array([tile_id, "b", "c", "d"])
    store.set_tile_meta(tile_id=ids)
    with pytest.raises(UnsafeNameError, match="plain file name"):
        export_npz_dir(store, tmp_path / "out", "opt_v1")
    assert not any(tmp_path.parent.glob("x*")) and not (tmp_path / "out").exists()
    (tmp_path / "in").mkdir()
    np.savez(tmp_path / "in" / "t.npz", s1=np.zeros((2, 8, 8), np.float32) - 10)
    (tmp_path / "in" / "t.json").write_text(json.dumps({"tile_id": tile_id}))
    with pytest.raises((UnsafeNameError, NpzFormatError)):
        read_npz_tile(tmp_path / "in" / "t.npz")
