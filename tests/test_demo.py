import json

import pytest

from axion_ray.demo import run_demo
from axion_ray.store import TileStore


@pytest.mark.slow
def test_demo_runs_end_to_end_and_says_where_outputs_are(tmp_path):
    lines = []
    outputs = run_demo(tmp_path / "demo", say=lines.append, train_epochs=2)
    for path in outputs.values():
        assert path.exists()
    assert any(str(outputs["quicklook"]) in line for line in lines)
    assert any("RANDOM weights" in line for line in lines)  # honest about placeholders
    prior = json.loads(outputs["metrics_opt_v1"].read_text())["pred_metrics"]
    assert 0.03 < prior["ndvi_rmse"] < 0.2  # the Stage 1 prior is imperfect, not broken
    store = TileStore.open(outputs["store"])
    assert store.counts("opt_v2").done == 16 and store.counts("opt_v3").done == 16
    assert store.provenance("opt_v3")["random_init"] is True
    assert store.provenance("opt_v2")["checkpoint"] == str(outputs["checkpoint"])  # the trained refiner ran
    assert len(list(outputs["npz"].glob("*.npz"))) == 16
