import dataclasses
import json

import numpy as np
import pytest
import torch

from axion_ray.cli import main
from axion_ray.config import SynthConfig, TrainConfig
from axion_ray.errors import CheckpointError, ConfigError, TileDataError
from axion_ray.models import build_stage
from axion_ray.models.runner import StageRunner
from axion_ray.store import TileStore
from axion_ray.store.synth import synthesize_aoi
from axion_ray.train import train_stage
from axion_ray.train.base import ShardBatches
from axion_ray.train.select import select_and_export

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    train = synthesize_aoi(root / "train.zarr", SynthConfig(rows=6, cols=6, tile_size=32, seed=1))
    val = synthesize_aoi(root / "val.zarr", SynthConfig(rows=3, cols=3, tile_size=32, seed=2))
    return train, val


@pytest.fixture(scope="module")
def second_aoi(tmp_path_factory):
    return synthesize_aoi(tmp_path_factory.mktemp("train2") / "aoi2.zarr", SynthConfig(rows=2, cols=3, tile_size=32, seed=3))


def test_a_small_shard_is_held_in_memory_and_every_step_is_a_full_batch(local_ray):
    import ray

    ds = ray.data.from_items([{"image": np.full((2, 3, 3), i, np.float32), "month": i} for i in range(18)]).materialize()
    streamed = ShardBatches(ds.iterator(), 16, steps_per_epoch=2, in_memory=False)
    assert [len(b["month"]) for b in streamed.epoch(torch.device("cpu"))] == [16, 2]  # the runt batch a shard ends in

    held = ShardBatches(ds.iterator(), 16, steps_per_epoch=2, in_memory=True, seed=3)
    drawn = []
    for _ in range(3):
        batches = list(held.epoch(torch.device("cpu")))
        assert [len(b["month"]) for b in batches] == [16, 16]
        for b in batches:  # rows stay whole: each image still carries its own month
            assert torch.equal(b["image"][:, 0, 0, 0], b["month"].float())
            drawn += b["month"].tolist()
    # A running permutation: 96 draws over 18 rows are 5 whole passes and 6 more, so every row comes 5 or 6 times.
    counts = np.bincount(drawn, minlength=18)
    assert counts.min() == 5 and counts.max() == 6 and counts.sum() == 96


def test_crops_carry_the_same_pixels_a_step_from_more_tiles_and_stay_aligned(local_ray):
    import ray

    # Each tile's pixels encode (tile, row, col); s1 and the truth of a crop must be the same square.
    rows, cols = np.mgrid[0:8, 0:8]
    items = [{"s1": np.stack([np.full((8, 8), i), rows]).astype(np.float32),
              "s2_truth": np.stack([cols, np.full((8, 8), i)]).astype(np.float32), "month": i} for i in range(10)]
    ds = ray.data.from_items(items).materialize()
    cropped = ShardBatches(ds.iterator(), 3, steps_per_epoch=4, in_memory=True, seed=5, crop=4)
    starts = set()
    for b in cropped.epoch(torch.device("cpu")):
        assert b["s1"].shape == (12, 2, 4, 4) and b["s2_truth"].shape == (12, 2, 4, 4)  # 3 tiles' pixels, 12 places
        assert torch.equal(b["s1"][:, 0, 0, 0], b["month"].float())  # a crop keeps its own tile's month
        assert torch.equal(b["s2_truth"][:, 1, 0, 0], b["month"].float())
        for s1, truth in zip(b["s1"], b["s2_truth"]):
            assert torch.equal(s1[1], s1[1, :, :1].expand(4, 4))  # a row of the crop is one row of its tile
            assert s1[1, 3, 0] - s1[1, 0, 0] == 3 and truth[0, 0, 3] - truth[0, 0, 0] == 3
            starts.add((int(s1[1, 0, 0]), int(truth[0, 0, 0])))
    assert len(starts) > 10  # the squares are drawn at random across the tile, not one fixed corner
    # A crop as large as the tile leaves whole tiles.
    whole = ShardBatches(ds.iterator(), 3, steps_per_epoch=1, in_memory=True, crop=8)
    assert next(iter(whole.epoch(torch.device("cpu"))))["s1"].shape == (3, 2, 8, 8)


@pytest.fixture(scope="module")
def short_run(local_ray, stores, tmp_path_factory):
    """A short Stage 2 run (checkpoints at steps 0, 6 and 12) and its summary."""
    train, val = stores
    cfg = TrainConfig(allow_random_init=True, epochs=4, batch_size=6, val_every_steps=6, workers=2,
                      validate_at_start=True)
    run = tmp_path_factory.mktemp("short") / "run"
    return run, train_stage(train.path, val.path, run, cfg, say=lambda _: None)


def test_a_short_run_improves_on_the_prior_and_exports(short_run, stores, tmp_path, capsys):
    _, val = stores
    run, summary = short_run
    best = max(summary["checkpoints"], key=lambda c: c["composite_score"])
    assert best["composite_score"] > 0 and best["constraints_pass"]
    # Scored at step 0 too: the untrained refiner is its input exactly, what training had to beat.
    (start,) = [c for c in summary["checkpoints"] if c["step"] == 0]
    assert start["composite_score"] == pytest.approx(0.0, abs=1e-6) and start["constraints_pass"]
    assert start["edge_disp_mean_px"] == 0 and best["step"] > 0
    assert (run / "training_summary.json").exists()

    assert main(["select", str(run), "--export", str(tmp_path / "out" / "best.pt"), "--fp16"]) == 0
    exported = torch.load(tmp_path / "out" / "best.pt", map_location="cpu", weights_only=True)
    assert exported["quantization_info"] == {"dtype": "float16"} and "optimizer_state_dict" not in exported
    assert all(v.dtype == torch.float16 for v in exported["model_state_dict"].values() if v.is_floating_point())
    meta = json.loads((tmp_path / "out" / "best_selection_metadata.json").read_text())
    single = max(c["composite_score"] for c in meta["candidates"] if c["constraints_pass"])
    # The best passing checkpoint, or the mean of the three best where that measured higher.
    expected = max(single, meta["average"]["composite_score"]) if meta["average"]["constraints_pass"] else single
    assert meta["selected"]["composite_score"] == expected
    assert meta["average"]["exported"] == (meta["selected"]["composite_score"] > single)
    report = (tmp_path / "out" / "best_REPORT.md").read_text()
    assert "# Stage 2 Best Checkpoint" in report and "| NDVI RMSE |" in report and "✓ PASS" in report

    # The exported checkpoint runs, and beats the prior on the validation tiles.
    model = build_stage(2, checkpoint=str(tmp_path / "out" / "best.pt"))
    v = TileStore.open(val.path)
    idx = np.arange(v.n_tiles)
    meta_tiles = v.tile_meta()
    out = StageRunner(model, torch.device("cpu"))({"opt_v1": v.read("opt_v1", idx), "month": meta_tiles["month"],
                                                    "biome_code": meta_tiles["biome_code"]})
    truth = v.read("s2_truth", idx)
    assert np.abs(out - truth).mean() < np.abs(v.read("opt_v1", idx) - truth).mean()


def _recorded_scores(run, score: float) -> dict[int, dict]:
    """Every checkpoint of `run` rewritten as if reported with composite `score` (still passing); step → state."""
    states = {}
    for path in sorted(run.rglob("checkpoint.pt")):
        state = torch.load(path, map_location="cpu", weights_only=False)
        assert state["metrics"]["constraints_pass"]
        state["composite_score"] = state["metrics"]["composite_score"] = score
        torch.save(state, path)
        states[state["step"]] = state
    return states


def test_the_mean_of_the_best_checkpoints_is_scored_and_exported_only_where_it_wins(short_run, tmp_path):
    import shutil

    from axion_ray.train.select import score_checkpoint

    run = tmp_path / "run"
    shutil.copytree(short_run[0], run)
    record = json.loads((run / "run_config.json").read_text())
    # The selection scores weights as training reported them: a kept checkpoint rescored gives its own figure.
    kept = {c["step"]: c for c in short_run[1]["checkpoints"]}
    assert score_checkpoint(kept[12]["path"], record)["composite_score"] == pytest.approx(
        kept[12]["composite_score"], abs=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # scoring writes nothing

    # Reported scores made low: the mean of the three (steps 12, 6, 0), measured, beats them and is exported.
    states = _recorded_scores(run, -5.0)
    meta = select_and_export(run, tmp_path / "a" / "best.pt", warn=lambda _: None)
    exported = torch.load(tmp_path / "a" / "best.pt", map_location="cpu", weights_only=True)
    assert meta["average"]["exported"] and meta["average"]["averaged_steps"] == [12, 6, 0]
    assert exported["averaged_steps"] == [12, 6, 0] and exported["composite_score"] == meta["average"]["composite_score"]
    for name, value in exported["model_state_dict"].items():
        if value.is_floating_point():
            mean = sum(states[s]["model_state_dict"][name].double() for s in (0, 6, 12)) / 3
            assert torch.allclose(value.double(), mean, atol=1e-6), name
    assert "the mean of steps 12, 6, 0" in (tmp_path / "a" / "best_REPORT.md").read_text()
    build_stage(2, checkpoint=str(tmp_path / "a" / "best.pt"))  # loads like any export

    # Reported scores made unbeatable: the same mean measures the same and loses; the best single is exported.
    _recorded_scores(run, 5.0)
    meta_b = select_and_export(run, tmp_path / "b" / "best.pt", warn=lambda _: None)
    exported = torch.load(tmp_path / "b" / "best.pt", map_location="cpu", weights_only=True)
    assert not meta_b["average"]["exported"] and "averaged_steps" not in exported and exported["step"] == 12
    assert meta_b["average"]["composite_score"] == pytest.approx(meta["average"]["composite_score"], abs=1e-6)

    # Off, or nothing to score it on: the single best, said so (and warned of, for a store that is gone).
    assert main(["select", str(run), "--export", str(tmp_path / "c" / "best.pt"), "--average-top-k", "0"]) == 0
    assert json.loads((tmp_path / "c" / "best_selection_metadata.json").read_text())["average"]["skipped"].startswith("off")
    (run / "run_config.json").write_text(json.dumps({**record, "val_store": str(tmp_path / "moved.zarr")}))
    warnings = []
    meta_d = select_and_export(run, tmp_path / "d" / "best.pt", warn=warnings.append)
    assert "gone" in meta_d["average"]["skipped"] and any("not averaged" in w for w in warnings)
    assert main(["select", str(run), "--export", str(tmp_path / "e.pt"), "--average-top-k", "-1"]) == 2


def test_a_killed_worker_resumes_from_the_last_checkpoint(local_ray, stores, tmp_path):
    train, val = stores
    cfg = TrainConfig(allow_random_init=True, epochs=4, batch_size=6, val_every_steps=3, workers=2, max_failures=2)
    summary = train_stage(train.path, val.path, tmp_path / "run", cfg, say=lambda _: None, fault_exit_at_step=8)
    final = max(summary["checkpoints"], key=lambda c: c["step"])
    state = torch.load(final["path"], map_location="cpu", weights_only=True)
    # Restarted from a checkpoint reported before the crash (the latest one Ray had registered), not zero.
    assert state["resumed_from_step"] in (3, 6)
    assert state["step"] == 4 * 3  # and finished every step

    # The run directory is claimed: another configuration there would silently continue this run.
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["config"]["lr"] == cfg.lr
    with pytest.raises(ConfigError, match=r"another configuration \(lr differ\)"):
        train_stage(train.path, val.path, tmp_path / "run", dataclasses.replace(cfg, lr=1e-3), say=lambda _: None)


def test_an_elastic_run_on_two_pooled_aois_starts_with_the_workers_that_fit(local_ray, stores, second_aoi, tmp_path):
    train, val = stores
    # Four workers of 0.8 CPU asked for on 2 CPUs: Ray Train V2 starts with what fits (1 or 2).
    cfg = TrainConfig(allow_random_init=True, epochs=1, batch_size=6, val_every_steps=100, workers=4,
                      min_workers=1, cpus_per_worker=0.8)
    summary = train_stage([train.path, second_aoi.path], val.path, tmp_path / "run", cfg, say=lambda _: None)
    world = summary["final_metrics"]["world_size"]
    assert 1 <= world <= 2
    pooled = train.n_tiles + second_aoi.n_tiles  # 36 + 6: both stores' tiles, each seen once
    assert summary["train_tiles"] == pooled and summary["train_stores"] == [train.path, second_aoi.path]
    assert summary["final_metrics"]["step"] == -(-pooled // world // 6)


def test_stage1_members_train_side_by_side_and_export_as_their_mean(local_ray, stores, tmp_path):
    """`train chain --stage1-members 2`: two Ray Train runs at once (one worker each, the CPUs each worker
    of one run would have had, their own seeds), each selected and exported, then one file that is their
    mean; a re-run finds it done."""
    from axion_ray.config import ChainConfig
    from axion_ray.train.chain import _stage1_ensemble

    train, val = stores
    cfg = ChainConfig(stage1_members=2, epochs=2, batch_size=6, val_every_steps=3, width=8, seed=5)
    lines: list[str] = []
    export = _stage1_ensemble([train.path], val.path, tmp_path, cfg, say=lines.append)
    runs = [json.loads((tmp_path / f"stage1_member{i}" / "run_config.json").read_text())["config"] for i in (0, 1)]
    assert [r["seed"] for r in runs] == [5, 6] and [r["workers"] for r in runs] == [1, 1]
    assert [r["epochs"] for r in runs] == [1, 1] and runs[0]["cpus_per_worker"] == pytest.approx(0.875)
    s1 = torch.from_numpy(val.read("s1", np.arange(4)))
    month, biome = torch.tensor([1, 4, 7, 10]), torch.tensor([0, 4, 8, 12])
    with torch.no_grad():
        alone = [build_stage(1, checkpoint=str(tmp_path / f"stage1_member{i}.pt"))(s1, month, biome) for i in (0, 1)]
        mean = build_stage(1, checkpoint=str(export))(s1, month, biome)
    assert not torch.allclose(alone[0], alone[1])
    torch.testing.assert_close(mean, (alone[0] + alone[1]) / 2)
    assert any("the mean of 2 members" in line for line in lines)
    again: list[str] = []
    assert _stage1_ensemble([train.path], val.path, tmp_path, cfg, say=again.append) == export
    assert again == [f"stage 1: already trained and exported ({export})"]


def test_select_falls_back_loudly(tmp_path):
    model = build_stage(2, "tiny", allow_random_init=True)
    failing = {"pred": {}, "baseline": {}, "geometry": {}, "constraints": {"edge_ratio>0.7": False},
               "constraints_pass": False}
    for step, score in ((10, 0.01), (20, 0.05)):
        d = tmp_path / "run" / f"checkpoint_{step}"
        d.mkdir(parents=True)
        torch.save({"model_state_dict": model.state_dict(), "config": {"stage": 2}, "step": step, "epoch": 0,
                    "metrics": failing, "composite_score": score}, d / "checkpoint.pt")
    warnings = []
    with pytest.raises(KeyError):  # the report needs measured figures; craft them
        select_and_export(tmp_path / "run", tmp_path / "best.pt", warn=warnings.append)
    assert warnings and "WARNING" in warnings[0]
    meta_ok = {"pred": {"ndvi_rmse": 0.05, "evi_rmse": 0.07, "sam_rad": 0.1},
               "baseline": {"ndvi_rmse": 0.08, "evi_rmse": 0.09, "sam_rad": 0.18},
               "geometry": {"edge_disp_mean_px": 3.0, "edge_disp_max_px": 6.0, "edge_ratio": 0.5},
               "constraints": {"edge_ratio>0.7": False}, "constraints_pass": False}
    for step in (10, 20):
        path = tmp_path / "run" / f"checkpoint_{step}" / "checkpoint.pt"
        state = torch.load(path, weights_only=True)
        state["metrics"] = meta_ok
        torch.save(state, path)
    # A checkpoint cut short (a trial killed while Ray Train persisted it) is skipped with a warning.
    (tmp_path / "run" / "checkpoint_30").mkdir()
    cut = (tmp_path / "run" / "checkpoint_20" / "checkpoint.pt").read_bytes()
    (tmp_path / "run" / "checkpoint_30" / "checkpoint.pt").write_bytes(cut[: len(cut) // 2])
    warnings.clear()
    meta = select_and_export(tmp_path / "run", tmp_path / "best.pt", warn=warnings.append)
    assert meta["fallback"] is True and meta["selected"]["step"] == 20
    assert any("1 checkpoint(s)" in w and "checkpoint_30" in w for w in warnings)
    assert "WARNING" in (tmp_path / "best_REPORT.md").read_text() and "✗ FAIL" in (tmp_path / "best_REPORT.md").read_text()


def test_training_user_errors(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="does not exist"):
        select_and_export(tmp_path / "nope", tmp_path / "x.pt")
    bare = TileStore.create(tmp_path / "bare.zarr", 2, 16)
    with pytest.raises(TileDataError, match="no s2_truth"):
        train_stage(bare.path, bare.path, tmp_path / "run", TrainConfig(allow_random_init=True))
    assert main(["train", "stage2", "--train", bare.path, "--val", bare.path, "--out", str(tmp_path / "r")]) == 2
    assert "pretrained weights not found" in capsys.readouterr().err
    assert main(["train", "stage2", "--train", bare.path, "--val", bare.path, "--out", str(tmp_path / "r"),
                 "--allow-random-init"]) == 2
    assert "no s2_truth" in capsys.readouterr().err
    other_size = synthesize_aoi(tmp_path / "big.zarr", SynthConfig(rows=1, cols=2, tile_size=16, seed=4))
    small = synthesize_aoi(tmp_path / "small.zarr", SynthConfig(rows=1, cols=2, tile_size=8, seed=4))
    with pytest.raises(TileDataError, match="one tile size"):
        train_stage([other_size.path, small.path], other_size.path, tmp_path / "run", TrainConfig(allow_random_init=True))
    with pytest.raises(ConfigError, match="min workers"):
        train_stage(bare.path, bare.path, tmp_path / "run", TrainConfig(workers=2, min_workers=3))


def test_stage2_regression_kind_learns_from_pixels_exports_and_runs_in_the_pipeline(local_ray, stores, tmp_path):
    """Stage 2's per-pixel calibrator (`--kind regress`) through the whole product: Ray Train on pixels
    drawn across the tiles, scored at step 0 as its input, selected and exported, then run by the
    pipeline as a Stage 2 checkpoint whose kind the pipeline reads from the file."""
    from axion_ray.store.tile_store import TileStatus

    train, val = stores
    cfg = TrainConfig(stage=2, kind="regress", epochs=4, batch_size=6, val_every_steps=6, workers=2,
                      validate_at_start=True, pixel_batch=4096)
    summary = train_stage(train.path, val.path, tmp_path / "run", cfg, say=lambda _: None)
    (start,) = [c for c in summary["checkpoints"] if c["step"] == 0]
    assert start["composite_score"] == pytest.approx(0.0, abs=1e-6) and start["edge_disp_mean_px"] == 0
    best = max(summary["checkpoints"], key=lambda c: c["composite_score"])
    assert best["step"] > 0 and best["composite_score"] > 0 and best["constraints_pass"]
    assert main(["select", str(tmp_path / "run"), "--export", str(tmp_path / "s2.pt")]) == 0
    model = build_stage(2, checkpoint=str(tmp_path / "s2.pt"))
    assert type(model).__name__ == "PixelStage2" and model.provenance["kind"] == "regress"

    aoi = synthesize_aoi(tmp_path / "new.zarr", SynthConfig(rows=2, cols=2, tile_size=32, seed=11))
    assert main(["infer", aoi.path, "--stages", "2", "--stage2-checkpoint", str(tmp_path / "s2.pt")]) == 0
    store = TileStore.open(aoi.path)
    idx = np.arange(store.n_tiles)
    assert store.indices_with_status("opt_v2", TileStatus.DONE).tolist() == idx.tolist()
    opt_v1, opt_v2 = store.read("opt_v1", idx), store.read("opt_v2", idx)
    meta = store.tile_meta()
    with torch.no_grad():
        expected = model(torch.from_numpy(opt_v1), torch.from_numpy(meta["month"].astype(np.int64)),
                         torch.from_numpy(meta["biome_code"].astype(np.int64))).numpy()
    np.testing.assert_allclose(opt_v2, expected, atol=2e-3)  # the calibrator's output (the pipeline may run fp16)
    assert not np.allclose(opt_v2, opt_v1, atol=1e-3)
