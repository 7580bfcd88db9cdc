import json
import re
from pathlib import Path

import numpy as np
import pytest

from axion_ray.demo import DEMO_CHAIN, DEMO_TRAIN_AOIS, DEMO_VAL_AOIS, run_demo
from axion_ray.models.weights import load_checkpoint
from axion_ray.store import TileStore
from axion_ray.train.chain import train_chain


@pytest.mark.slow
def test_demo_runs_the_trained_chain_from_s1_alone_and_says_where_outputs_are(tmp_path):
    """The demo as `make demo` runs it (its embedded defaults): every stage is a trained model's (or, for
    Stages 2 and 3, the identity they start as when no trained checkpoint beat their input on the
    validation AOI), the chain reads the land from S1, and no later stage makes the one before worse."""
    lines = []
    outputs = run_demo(tmp_path / "demo", say=lines.append)
    for path in outputs.values():
        assert path.exists()
    assert any(str(outputs["quicklook"]) in line for line in lines)
    assert not any("RANDOM" in line for line in lines)
    store = TileStore.open(outputs["store"])
    for stage, name in ((1, "opt_v1"), (2, "opt_v2"), (3, "opt_v3")):
        assert store.counts(name).done == 16
        prov = store.provenance(name)
        assert prov["checkpoint"] == str(outputs[f"checkpoint_stage{stage}"]) and prov["random_init"] is False
    assert store.provenance("opt_v1")["kind"] == "regress"
    assert load_checkpoint(str(outputs["checkpoint_stage1"])).config["norm"] == "pixel"  # the trained UNet's blocks
    v1 = json.loads(outputs["metrics_opt_v1"].read_text())["pred_metrics"]
    vs_flat = json.loads(outputs["metrics_opt_v3_vs_flat"].read_text())
    # Real images from S1, not a flat colour: Stage 1 alone well under the best flat image's NDVI error,
    # and the chain's output better than it on every spectral figure.
    assert v1["ndvi_rmse"] < 0.75 * vs_flat["baseline_metrics"]["ndvi_rmse"]
    assert all(gain > 0 for gain in vs_flat["improvements"].values()), vs_flat["improvements"]
    final = json.loads(outputs["metrics_opt_v3"].read_text())  # the last stage against the one before
    assert final["composite_score"] >= 0 and final["constraints_pass"]
    assert len(list(outputs["npz"].glob("*.npz"))) == 16

    # The chain it trained: Stage 1 on the first and third training AOIs, Stages 2 and 3 on its outputs
    # over the second (held out from Stage 1), all in the run's own copies — the users' stores untouched.
    demo = outputs["store"].parent
    run = demo / "run_chain"
    first, later = TileStore.open(run / "data" / "train_stage1.zarr"), TileStore.open(run / "data" / "train_stages23.zarr")
    assert first.n_tiles == 72 and first.counts("opt_v1").done == 0 and later.counts("opt_v1").done == later.n_tiles == 36
    assert later.provenance("opt_v1")["checkpoint"] == str(outputs["checkpoint_stage1"])
    # Every stage selected on both validation AOIs, pooled in one copy that holds Stage 3's outputs.
    assert TileStore.open(run / "data" / "val.zarr").counts("opt_v3").done == DEMO_VAL_AOIS * 9
    user_train = TileStore.open(demo / "train1.zarr")
    assert user_train.provenance("opt_v1")["stage"] == "synthetic-prior" and user_train.counts("opt_v2").done == 0
    np.testing.assert_array_equal(user_train.read("s1", np.arange(36)), later.read("s1", np.arange(36)))
    assert "| opt_v3 |" in outputs["chain_report"].read_text()
    # Stage 1's edges are the truth's: placement is a constraint there, the truth's edge count is not.
    stage1_report = (outputs["checkpoint_stage1"].parent / "stage1_REPORT.md").read_text()
    assert "Edge ratio: not a constraint" in stage1_report and "Mean edge displacement < 2 pixels" in stage1_report
    assert "Edge ratio > 0.7" in (outputs["checkpoint_stage3"].parent / "stage3_REPORT.md").read_text()
    # Each stage's selection keeps its own record beside the three exports, under its export's name.
    for stage in (1, 2, 3):
        picked = json.loads((run / f"stage{stage}_selection_metadata.json").read_text())
        assert Path(picked["export"]).resolve() == Path(outputs[f"checkpoint_stage{stage}"]).resolve()
        assert "average" in picked
    # Run again, it resumes: every stage found trained and exported, every output done.
    again: list[str] = []
    summary = train_chain([str(demo / f"train{i}.zarr") for i in range(DEMO_TRAIN_AOIS)],
                          [str(demo / f"val{i}.zarr") for i in range(DEMO_VAL_AOIS)], run, DEMO_CHAIN, say=again.append)
    assert sum("already trained" in line for line in again) == 3
    assert re.match(r"^chain opt_v1 ndvi=[\d.]+ .* constraints=(PASS|FAIL)$", summary["line"])
