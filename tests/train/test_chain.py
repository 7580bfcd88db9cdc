"""`train chain`: Stages 1 → 2 → 3 on each other's outputs, exported, reported, resumable — and the
users' stores untouched."""

import re

import numpy as np
import pytest

from axion_ray.cli import main
from axion_ray.config import ChainConfig, SynthConfig
from axion_ray.errors import ConfigError
from axion_ray.models.builder import stage_provenance
from axion_ray.store import TileStore
from axion_ray.store.synth import synthesize_aoi
from axion_ray.train.chain import train_chain

pytestmark = pytest.mark.slow

LINE = re.compile(r"^chain opt_v1 ndvi=[\d.]+ evi=[\d.]+ sam=[\d.]+ \| opt_v2 ndvi=[\d.]+ evi=[\d.]+ sam=[\d.]+ "
                  r"\| opt_v3 ndvi=[\d.]+ evi=[\d.]+ sam=[\d.]+ constraints=(PASS|FAIL)$")


def test_the_chain_trains_exports_reports_resumes_and_leaves_the_users_stores_alone(local_ray, tmp_path, capsys):
    trains = [synthesize_aoi(tmp_path / f"t{i}.zarr", SynthConfig(rows=3, cols=3, tile_size=32, seed=10 + i))
              for i in range(2)]
    val = synthesize_aoi(tmp_path / "v.zarr", SynthConfig(rows=2, cols=2, tile_size=32, seed=20))
    prior = trains[0].read("opt_v1", np.arange(9))
    cfg = ChainConfig(encoder="unet", width=8, epochs=2, batch_size=6, val_every_steps=2, workers=2)
    lines: list[str] = []
    summary = train_chain([t.path for t in trains], val.path, tmp_path / "run", cfg, say=lines.append)

    assert LINE.match(summary["line"]), summary["line"]
    for stage in (1, 2, 3):
        assert (tmp_path / "run" / f"stage{stage}.pt").exists()
    assert stage_provenance(1, checkpoint=summary["checkpoints"]["stage1"])["kind"] == "regress"
    assert "| opt_v3 |" in (tmp_path / "run" / "CHAIN_REPORT.md").read_text()
    # Stage 1 trained on the first AOI; Stages 2 and 3 on its outputs over the second (held out from
    # Stage 1: its real errors), not on the stores' prior:
    first = TileStore.open(tmp_path / "run" / "data" / "train_stage1.zarr")
    later = TileStore.open(tmp_path / "run" / "data" / "train_stages23.zarr")
    assert first.n_tiles == later.n_tiles == 9 and first.counts("opt_v1").done == 0
    assert later.counts("opt_v1").done == 9 and later.counts("opt_v2").done == 9
    assert later.provenance("opt_v1")["checkpoint"] == summary["checkpoints"]["stage1"]
    np.testing.assert_array_equal(later.read("s1", np.arange(9)), trains[1].read("s1", np.arange(9)))
    # … and nothing was written into the users' stores.
    np.testing.assert_array_equal(TileStore.open(trains[0].path).read("opt_v1", np.arange(9)), prior)
    assert TileStore.open(val.path).counts("opt_v2").done == 0

    # A re-run resumes: every stage is found trained, every output done; the same line comes back.
    again: list[str] = []
    assert train_chain([t.path for t in trains], val.path, tmp_path / "run", cfg, say=again.append)["line"] == \
        summary["line"]
    assert sum("already trained" in line for line in again) == 3

    # Another configuration in the same directory, or validating on a training store, is refused.
    with pytest.raises(ConfigError, match="another configuration"):
        train_chain([t.path for t in trains], val.path, tmp_path / "run", ChainConfig(epochs=3), say=lambda _: None)
    assert main(["train", "chain", "--train", trains[0].path, "--val", trains[0].path, "--out",
                 str(tmp_path / "run2")]) == 2
    assert "also a training store" in capsys.readouterr().err
