"""Ray Tune sweeps: spaces, ranking, and real 3-trial CPU sweeps of Stage 2 training, Stage 3 timesteps
and a classifier, each leaving results.csv / best_config.yaml / SWEEP.md / sweep.png."""

import csv
import json
import math

import numpy as np
import pytest
import yaml

from axion_ray.cli import main
from axion_ray.config import SynthConfig, TrainConfig
from axion_ray.errors import ConfigError
from axion_ray.store.synth import synthesize_aoi
from axion_ray.tune.outputs import RESULTS_CSV, rank_rows, write_outputs
from axion_ray.tune.space import build_space


def read_results_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_space_files_are_validated_against_the_config():
    from ray import tune

    space = build_space({"lr": {"loguniform": [1e-4, 1e-2]}, "lora_rank": {"choice": [0, 8]}, "epochs": 2,
                         "w_ndvi": {"grid": [1.0, 2.0]}}, TrainConfig)
    assert isinstance(space["lr"], tune.search.sample.Float) and space["epochs"] == 2
    assert space["w_ndvi"] == {"grid_search": [1.0, 2.0]}
    with pytest.raises(ConfigError, match="unknown parameter.*learning_rate"):
        build_space({"learning_rate": {"uniform": [0, 1]}}, TrainConfig)
    with pytest.raises(ConfigError, match="low must be below high"):
        build_space({"lr": {"uniform": [1, 0]}}, TrainConfig)
    with pytest.raises(ConfigError, match="expected one of"):
        build_space({"lr": {"normal": [0, 1]}}, TrainConfig)


def test_constraint_failures_rank_below_every_pass(tmp_path):
    from axion_ray.metrics.composite import rank_score

    rows = [
        {"trial_id": "a", "config": {"lr": 0.1}, "score": 0.50, "passes": False, "rank_score": rank_score(0.50, False)},
        {"trial_id": "b", "config": {"lr": 0.01}, "score": 0.01, "passes": True, "rank_score": rank_score(0.01, True)},
        {"trial_id": "c", "config": {"lr": 0.001}, "score": -0.2, "passes": True, "rank_score": rank_score(-0.2, True)},
        {"trial_id": "d", "config": {"lr": 0.3}, "score": float("nan"), "passes": False, "rank_score": float("nan")},
    ]
    assert [r["trial_id"] for r in rank_rows([dict(r) for r in rows])] == ["b", "c", "a", "d"]
    write_outputs(tmp_path, "t", rows, ["lr"], ["score"], "score", {"lr": 0.01})
    csv_rows = read_results_csv(tmp_path / RESULTS_CSV)
    assert [r["trial_id"] for r in csv_rows] == ["b", "c", "a", "d"] and csv_rows[2]["passes"] == "False"
    assert yaml.safe_load((tmp_path / "best_config.yaml").read_text()) == {"lr": 0.01}
    assert "Spearman" in (tmp_path / "SWEEP.md").read_text() and (tmp_path / "sweep.png").stat().st_size > 1000


def _check_outputs(out, params):
    rows = read_results_csv(out / RESULTS_CSV)
    passes = [r["passes"] == "True" for r in rows]
    assert passes == sorted(passes, reverse=True)                  # failing trials after every passing one
    scores = [float(r["rank_score"]) for r in rows]
    assert all(p == (s > -1e5) for p, s in zip(passes, scores))    # a failing trial's rank score is far below
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    top = rows[int(np.nanargmax(scores))]
    assert top is rows[0]
    for p in params:                                               # best config = argmax row of results.csv
        value = best[p]
        assert str(value) == top[f"config/{p}"] or math.isclose(float(value), float(top[f"config/{p}"]))
    assert (out / "SWEEP.md").read_text().startswith("# ") and (out / "sweep.png").exists()
    return rows




@pytest.mark.slow
def test_stage2_sweep_ranks_exports_and_resumes(local_ray, tmp_path):
    train = synthesize_aoi(tmp_path / "train.zarr", SynthConfig(rows=4, cols=4, tile_size=32, seed=1))
    second_aoi = synthesize_aoi(tmp_path / "train2.zarr", SynthConfig(rows=1, cols=2, tile_size=32, seed=3))
    val = synthesize_aoi(tmp_path / "val.zarr", SynthConfig(rows=2, cols=2, tile_size=32, seed=2))
    space = tmp_path / "space.yaml"
    space.write_text("lr: {grid: [1.0e-4, 8.0e-3]}\nw_edge: {uniform: [0.2, 1.0]}\n")
    args = ["tune", "stage2", "--train", train.path, second_aoi.path, "--val", val.path, "--out", str(tmp_path / "sweep"),
            "--allow-random-init", "--samples", "1", "--space", str(space), "--scheduler", "asha", "--epochs", "2",
            "--batch-size", "4", "--val-every", "2", "--max-val-tiles", "4"]
    assert main(args) == 0
    rows = _check_outputs(tmp_path / "sweep", ["lr", "w_edge"])
    assert len(rows) == 2 and all(r["iterations"] for r in rows)
    assert (tmp_path / "sweep" / "best.pt").exists() and (tmp_path / "sweep" / "best_selection_metadata.json").exists()
    claimed = [json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("run_config.json")]
    assert len(claimed) == 2 and all(c["train_stores"] == [train.path, second_aoi.path] for c in claimed)  # pooled
    # A second start in the same directory needs --resume; resuming a finished sweep keeps its trials.
    assert main(args) == 2
    assert main(args + ["--resume"]) == 0
    assert len(read_results_csv(tmp_path / "sweep" / RESULTS_CSV)) == 2


@pytest.mark.slow
def test_stage3_timestep_sweep_scores_quality_and_speed(local_ray, tmp_path):
    store = synthesize_aoi(tmp_path / "aoi.zarr", SynthConfig(rows=1, cols=2, tile_size=32, seed=4))
    assert main(["tune", "stage3", "--store", store.path, "--timesteps", "1,2", "--condition", "opt_v1",
                 "--max-tiles", "2", "--allow-random-init", "--out", str(tmp_path / "s3")]) == 0
    rows = _check_outputs(tmp_path / "s3", ["timesteps"])
    assert sorted(int(r["config/timesteps"]) for r in rows) == [1, 2]
    assert all(float(r["tiles_per_s"]) > 0 and np.isfinite(float(r["sam_rad"])) for r in rows)
    assert "tiles_per_s" in (tmp_path / "s3" / "SWEEP.md").read_text()


@pytest.mark.slow
def test_classifier_sweep_uses_recall_as_a_floor(local_ray, tmp_path):
    from axion_ray.classify.data import synthesize_fruit_dataset

    data = synthesize_fruit_dataset(tmp_path / "fruit", n_per_class=30, size=32, seed=5)
    space = tmp_path / "space.yaml"
    space.write_text("label_smoothing: {grid: [0.0, 0.1]}\naugment: {choice: [none, light]}\nlr: 3.0e-3\n")
    assert main(["tune", "classifier", "--data", str(data), "--out", str(tmp_path / "cs"), "--model", "resnet10t",
                 "--allow-random-init", "--image-size", "32", "--epochs", "2", "--batch-size", "8",
                 "--samples", "1", "--space", str(space), "--scheduler", "fifo"]) == 0
    rows = _check_outputs(tmp_path / "cs", ["label_smoothing", "augment"])
    assert len(rows) == 2 and all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert (tmp_path / "cs" / "best_model.pt").exists()


@pytest.mark.slow
def test_a_sweep_with_more_trials_than_fit_at_once_ends(tmp_path):
    """Two trials of a regression Stage 1, one at a time, under ASHA: every trial
    ends, the sweep exits 0 with a regression checkpoint and its stderr holds no traceback (run as the
    user runs it, in its own process, with a time limit)."""
    import subprocess
    import sys

    from axion_ray.models.builder import stage_provenance

    train = synthesize_aoi(tmp_path / "train.zarr", SynthConfig(rows=3, cols=3, tile_size=32, seed=1))
    val = synthesize_aoi(tmp_path / "val.zarr", SynthConfig(rows=2, cols=2, tile_size=32, seed=2))
    proc = subprocess.run([sys.executable, "-m", "axion_ray.cli", "tune", "regress", "--stage", "1", "--encoder",
                           "unet", "--train", train.path, "--val", val.path, "--out", str(tmp_path / "sweep"),
                           "--samples", "2",
                           "--scheduler", "asha", "--max-concurrent", "1", "--epochs", "1", "--batch-size", "4",
                           "--val-every", "1", "--max-val-tiles", "4"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(read_results_csv(tmp_path / "sweep" / RESULTS_CSV)) == 2
    prov = stage_provenance(1, checkpoint=str(tmp_path / "sweep" / "best.pt"))
    assert prov["kind"] == "regress" and prov["model"] == "unet_regress"


@pytest.mark.slow
def test_stage2_s_per_pixel_calibrator_is_swept_and_exported(local_ray, tmp_path):
    """`tune regress --stage 2`: the chain's Stage 2 from scratch (the calibrator of opt_v1) is swept
    like the other regression stages, and the best trial's checkpoint is that kind."""
    from axion_ray.models.builder import stage_provenance

    train = synthesize_aoi(tmp_path / "train.zarr", SynthConfig(rows=3, cols=3, tile_size=32, seed=1))
    val = synthesize_aoi(tmp_path / "val.zarr", SynthConfig(rows=2, cols=2, tile_size=32, seed=2))
    space = tmp_path / "space.yaml"
    space.write_text("lr: {grid: [1.0e-3, 1.0e-2]}\n")
    assert main(["tune", "regress", "--stage", "2", "--train", train.path, "--val", val.path, "--out",
                 str(tmp_path / "sweep"), "--samples", "1", "--space", str(space), "--scheduler", "fifo",
                 "--epochs", "2", "--batch-size", "4", "--val-every", "2", "--max-val-tiles", "4"]) == 0
    rows = _check_outputs(tmp_path / "sweep", ["lr"])
    assert len(rows) == 2 and all(np.isfinite(float(r["composite_score"])) for r in rows)
    prov = stage_provenance(2, checkpoint=str(tmp_path / "sweep" / "best.pt"))
    assert prov["kind"] == "regress" and prov["model"] == "pixel_regress"
