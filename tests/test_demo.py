import json

import pytest

from axion_ray.demo import run_demo
from axion_ray.store import TileStore


@pytest.mark.slow
def test_demo_runs_the_trained_chain_from_s1_alone_and_says_where_outputs_are(tmp_path):
    """The demo as `make demo` runs it (its embedded defaults): every stage is a trained model's, and
    the chain's last stage improves on the one before it on the demo AOI."""
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
    v1 = json.loads(outputs["metrics_opt_v1"].read_text())["pred_metrics"]
    assert v1["ndvi_rmse"] < 0.2  # a real image from S1, not a flat colour (a flat one scores ~0.4)
    final = json.loads(outputs["metrics_opt_v3"].read_text())
    assert final["composite_score"] > 0
    assert len(list(outputs["npz"].glob("*.npz"))) == 16
