import contextlib

import numpy as np
import pytest
import zarr

from axion_ray.cli import main
from axion_ray.config import InferConfig, SynthConfig
from axion_ray.errors import ConfigError, DeviceError
from axion_ray.pipeline import plan_stages, plan_todo, run_pipeline
from axion_ray.store import TileStatus, TileStore
from axion_ray.store.synth import synthesize_aoi
from tests.store.damage import damage_inner_chunk

STAGE2 = InferConfig(stages=(2,), allow_random_init=True, batch_size=4, progress_interval_s=0.5)


@pytest.fixture
def aoi(tmp_path):
    return synthesize_aoi(tmp_path / "aoi.zarr", SynthConfig(rows=3, cols=4, tile_size=32, seed=2))


def test_stage2_run_writes_every_tile_where_it_belongs(local_ray, aoi):
    summary = run_pipeline(aoi.path, STAGE2, say=lambda _: None)
    store = TileStore.open(aoi.path)
    assert store.counts("opt_v2").done == 12 and summary.per_stage[2]["done"] == 12
    # An untrained refiner is the identity: each tile's output must be its own input, in its own slot.
    np.testing.assert_array_equal(store.read("opt_v2", range(12)), store.read("opt_v1", range(12)))
    attrs = zarr.open_group(aoi.path, mode="r")["opt_v2"].attrs
    assert attrs["stage"] == "stage2" and attrs["model"] == "prithvi_eo_tiny" and attrs["random_init"] is True
    assert attrs["device"] == "cpu" and attrs["amp"] is False
    assert np.isfinite(store.proc_ms("opt_v2")).all()
    assert summary.per_stage[2]["devices"] == ["cpu"] and summary.per_stage[2]["cpu_fallbacks"] == 0


def test_finished_tiles_are_skipped_unless_asked(local_ray, aoi):
    marker = np.full((2, 4, 32, 32), 0.123, np.float32)
    aoi.write("opt_v2", [3, 7], marker)
    summary = run_pipeline(aoi.path, STAGE2, say=lambda _: None)
    store = TileStore.open(aoi.path)
    np.testing.assert_array_equal(store.read("opt_v2", [3, 7]), marker)  # not redone
    assert summary.scheduled_tiles == 10 and summary.per_stage[2]["skipped"] == 2
    again = run_pipeline(aoi.path, STAGE2, say=lambda _: None)
    assert again.scheduled_tiles == 0
    redo = run_pipeline(aoi.path, InferConfig(**{**STAGE2.__dict__, "skip_existing": False}), say=lambda _: None)
    assert redo.scheduled_tiles == 12
    assert not np.array_equal(TileStore.open(aoi.path).read("opt_v2", [3]), marker[:1])


def test_plan_todo_cascades_to_later_stages(aoi):
    aoi.write("opt_v2", [0, 1], np.zeros((2, 4, 32, 32), np.float32))
    aoi.write("opt_v3", [0], np.zeros((1, 4, 32, 32), np.float32))
    aoi.reset("opt_v1", [1])  # stage 1 must rerun for tile 1, so 2 and 3 must too
    tiles, todo = plan_todo(aoi, (1, 2, 3), skip_existing=True)
    rows = dict(zip(tiles.tolist(), todo.tolist()))
    assert 0 not in rows  # everything done
    assert rows[1] == [True, True, True]
    assert rows[2] == [False, True, True]


def test_resources_leave_room_for_the_reader_on_two_cpus():
    plans = plan_stages(InferConfig(stages=(1, 2, 3)), {"CPU": 2.0})
    assert sum(p.num_cpus for p in plans) <= 1.75 and all(p.num_gpus == 0 and p.device == "cpu" for p in plans)
    # Two 1-CPU nodes, a minimum pool of two: each actor leaves its node room for a 0.25-CPU read task.
    two_nodes = plan_stages(InferConfig(stages=(2,), actors=(2, 2)), {"CPU": 2.0}, node_cpus=[1.0, 1.0])
    assert two_nodes[0].num_cpus <= 0.75
    gpu = plan_stages(InferConfig(stages=(1, 2, 3), actors=(1, 4)), {"CPU": 16.0, "GPU": 2.0})
    assert sum(p.num_gpus for p in gpu) <= 2.0 and gpu[0].num_gpus > 0.9 and all(p.max_actors == 4 for p in gpu)


def test_a_cpu_actor_runs_a_batch_per_core_unless_it_samples():
    """On the CPU a deterministic stage's actor runs one batch per core it holds, each on one torch
    thread; generation (seeded sampling on the process-wide RNG) runs one batch at a time on them all."""
    refiner = plan_stages(InferConfig(stages=(2,)), {"CPU": 2.0})[0]
    assert (refiner.calls_per_actor, refiner.threads) == (2, 1)  # 1.75 CPUs: two cores' worth
    chain = plan_stages(InferConfig(stages=(1, 2, 3), allow_random_init=True), {"CPU": 8.0})
    generating, light = chain[0], chain[1]
    assert (generating.calls_per_actor, generating.threads) == (1, 3)  # 7.75 / 3 CPUs each
    assert (light.calls_per_actor, light.threads) == (3, 1)
    regress = plan_stages(InferConfig(stages=(1,), stage1_kind="regress", allow_random_init=True), {"CPU": 4.0})[0]
    assert (regress.calls_per_actor, regress.threads) == (4, 1)
    gpu = plan_stages(InferConfig(stages=(2,)), {"CPU": 16.0, "GPU": 1.0})[0]
    assert gpu.calls_per_actor == 1  # one device: one batch at a time, as Ray Data does by default


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_the_gpu_plan_fits_the_cluster_and_scales_with_it(gpus):
    """Shares from the stages' measured costs: the whole chain's minimum pools fit `gpus` GPUs at once
    (on one GPU too), generation gets the lion's share, no actor asks more than one GPU."""
    for stages, kinds in (((1, 2, 3), {}), ((1, 2, 3), {"stage1_kind": "regress", "stage3_kind": "regress"}),
                          ((2,), {})):
        cfg = InferConfig(stages=stages, actors=(1, 4), allow_random_init=True, **kinds)
        plans = plan_stages(cfg, {"CPU": 16.0, "GPU": float(gpus)})
        assert sum(p.num_gpus * p.min_actors for p in plans) <= gpus
        assert all(0 < p.num_gpus <= 1 and p.device == "cuda" for p in plans)
        if not kinds and len(stages) == 3:
            assert plans[0].num_gpus >= 5 * plans[1].num_gpus  # generation ≈ 75x the refiner per tile
    two = plan_stages(InferConfig(stages=(2,), actors=(2, 4)), {"CPU": 16.0, "GPU": float(gpus)})
    assert two[0].num_gpus * 2 <= gpus  # a minimum pool of two fits too
    # Asked for more than the cluster has: one line naming both, before any work.
    with pytest.raises(DeviceError, match=f"ask 3 CPUs and 3 GPUs .* has 16 CPUs and {gpus:g} GPUs") \
            if gpus < 3 else contextlib.nullcontext():
        plan_stages(InferConfig(stages=(1, 2, 3), num_gpus=1.0, allow_random_init=True),
                    {"CPU": 16.0, "GPU": float(gpus)})


def test_user_mistakes_in_the_config(aoi, capsys):
    with pytest.raises(ConfigError, match="increasing subset"):
        run_pipeline(aoi.path, InferConfig(stages=(3, 1), allow_random_init=True))
    with pytest.raises(ConfigError, match="MIN:MAX"):
        run_pipeline(aoi.path, InferConfig(stages=(2,), actors=(2, 1), allow_random_init=True))
    code = main(["infer", aoi.path, "--stages", "2"])  # tiny refiner has no pretrained weights
    assert code == 2 and "--stage2-checkpoint" in capsys.readouterr().err
    code = main(["infer", aoi.path, "--stages", "1", "--preset", "small"])
    err = capsys.readouterr().err
    assert code == 2 and "TerraMind_v1_small.pt" in err and len(err.strip().splitlines()) == 1


def test_a_checkpoint_that_does_not_fit_is_refused_before_ray_starts(aoi, tmp_path, capsys, monkeypatch):
    """Right stage, wrong tensors: one line and exit 2 from the driver (no actor is started), for the
    refiner and for a regression stage alike."""
    import torch

    from axion_ray.models import build_stage

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    refiner = build_stage(2, allow_random_init=True).state_dict()
    refiner["head.out.weight"] = torch.zeros(5, *refiner["head.out.weight"].shape[1:])
    torch.save({"model_state_dict": refiner, "config": {"stage": 2, "preset": "tiny"}}, tmp_path / "s2.pt")
    regress = build_stage(1, kind="regress", encoder="unet", width=8, allow_random_init=True).state_dict()
    torch.save({"model_state_dict": regress, "config": {"stage": 1, "kind": "regress", "encoder": "unet",
                                                        "width": 16}}, tmp_path / "s1.pt")  # says 16, holds 8
    import ray

    was_up = ray.is_initialized()
    assert main(["infer", aoi.path, "--stages", "2", "--stage2-checkpoint", str(tmp_path / "s2.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shapes differ (head.out.weight (5, 32, 1, 1) vs (4, 32, 1, 1))" in err[0]
    assert main(["infer", aoi.path, "--stages", "1", "--stage1-checkpoint", str(tmp_path / "s1.pt")]) == 2
    assert "does not fit stage 1 (regress, unet_regress)" in capsys.readouterr().err
    assert ray.is_initialized() == was_up  # refused on the driver: no Ray was started for it
    assert not (tmp_path / "cache" / "axion_ray").exists()  # nothing remembered as passed


@pytest.mark.slow
def test_three_stages_with_bad_tiles(local_ray, tmp_path, capsys):
    store = synthesize_aoi(tmp_path / "bad.zarr", SynthConfig(rows=2, cols=2, tile_size=32, seed=3, with_prior=False))
    s1 = store.read("s1", [0, 1, 2])
    s1[0, :, 7, 9] = np.nan  # a no-data pixel: the tile runs, its outputs are NaN there only
    s1[1, 0, 5, 5] = np.inf  # a corrupt value: the tile fails
    s1[2] = 0.0
    store.write("s1", [0, 1, 2], s1)
    code = main(["infer", store.path, "--stages", "1,2,3", "--allow-random-init", "--timesteps", "1",
                 "--json", str(tmp_path / "summary.json")])
    out, err = capsys.readouterr()
    assert code == 1 and "failed" in err  # the exit code says the run had failures
    store = TileStore.open(store.path)
    for name in ("opt_v1", "opt_v2", "opt_v3"):
        assert store.indices_with_status(name, TileStatus.DONE).tolist() == [0, 3]
    failures = store.failures("opt_v1")
    assert "infinite" in failures[1] and "all zeros" in failures[2]
    assert store.failures("opt_v3")[1].startswith("stage 2 failed: stage 1 failed")
    assert "stage 1 tile 2 failed: s1 is all zeros" in out
    assert np.isfinite(store.read("opt_v3", [3])).all()
    v3 = store.read("opt_v3", [0])[0]
    assert np.isnan(v3[:, 7, 9]).all() and np.isfinite(v3).all(axis=0).sum() == 32 * 32 - 1


def test_the_progress_tracker_is_released_when_a_run_fails(local_ray, aoi):
    import ray

    from axion_ray.pipeline.run import current_tracker

    seen = {}

    def say(line):
        if line.startswith("running stages"):  # the tracker exists and the pools are built: fail here
            seen["tracker"] = current_tracker()
            raise RuntimeError("the caller's callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        run_pipeline(aoi.path, STAGE2, say=say)
    assert seen["tracker"] is not None and current_tracker() is None
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(seen["tracker"].snapshot.remote(), timeout=60)


def test_an_error_after_ray_started_is_still_one_line_on_stderr(aoi):
    """Ray's own start-up and Ray Data's notes go to Ray's log files, not the terminal (unless --verbose)."""
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a GPU")
    proc = subprocess.run([sys.executable, "-m", "axion_ray.cli", "infer", aoi.path, "--stages", "2",
                           "--allow-random-init", "--device", "cuda"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "axion-ray infer: error: --device cuda asked for, but the Ray cluster has no GPU; use --device auto or cpu"]


def test_shards_of_several_tiles_resume_from_scattered_tiles_and_a_bad_tile_fails_alone(local_ray, tmp_path, capsys):
    """Shards of 4 tiles; a partial run left scattered tiles done; one tile's inner chunk is corrupt.
    Every shard is written by one task, nothing done is redone, the bad tile fails alone."""
    from pathlib import Path

    from axion_ray.distributed._datasource import TileStoreDatasource

    store = synthesize_aoi(tmp_path / "sharded.zarr", SynthConfig(rows=4, cols=5, tile_size=32, seed=3, shard_tiles=4))
    assert store.shard_tiles == 4 and store.n_shards == 5
    marker = np.full((4, 4, 32, 32), 0.25, np.float32)
    store.write("opt_v2", [1, 6, 7, 14], marker)                           # scattered over three shards
    tiles, _ = plan_todo(store, (2,), skip_existing=True)
    tasks = TileStoreDatasource(store.path, tiles, ["opt_v1"], (32, 32), shard_tiles=4, tiles_per_task=3).task_positions()
    # whole shards per task, packed to at least 3 tiles: shard 1 has only 2 pending, so it rides with 2
    assert [sorted(set((tiles[t] // 4).tolist())) for t in tasks] == [[0], [1, 2], [3], [4]]

    damage_inner_chunk(store, "opt_v1", 9)  # inside shard 2; the shard's index stays intact

    code = main(["infer", store.path, "--stages", "2", "--allow-random-init", "--batch-size", "3"])
    out = capsys.readouterr().out
    assert code == 1 and "tile 9 failed: opt_v1 chunk of tile 9 cannot be read" in out
    after = TileStore.open(store.path)
    assert after.indices_with_status("opt_v2", TileStatus.FAILED).tolist() == [9]
    assert after.counts("opt_v2").done == 19
    np.testing.assert_array_equal(after.read("opt_v2", [1, 6, 7, 14]), marker)  # not redone
    good = [i for i in range(20) if i not in (1, 6, 7, 9, 14)]
    np.testing.assert_array_equal(after.read("opt_v2", good), after.read("opt_v1", good))
    assert sorted(p.name for p in (Path(store.path) / "tracking" / "c").iterdir()) == ["0", "1", "2", "3", "4"]
