import json

from axion_ray.demo import run_demo
from axion_ray.store import TileStore


def test_demo_runs_end_to_end_and_says_where_outputs_are(tmp_path):
    lines = []
    outputs = run_demo(tmp_path / "demo", say=lines.append)
    for path in outputs.values():
        assert path.exists()
    assert any(str(outputs["quicklook"]) in line for line in lines)
    figures = json.loads(outputs["metrics"].read_text())["pred_metrics"]
    assert 0.03 < figures["ndvi_rmse"] < 0.2  # the Stage 1 prior is imperfect, not broken
    assert TileStore.open(outputs["store"]).counts("opt_v1").done == 16
    assert len(list(outputs["npz"].glob("*.npz"))) == 16
