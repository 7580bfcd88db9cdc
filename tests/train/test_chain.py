"""`train chain` refuses what would mix or mislead before any work. The chain itself — trained,
exported, reported, resumed, the users' stores untouched — is exercised end to end by the demo's
test (tests/test_demo.py), which trains one."""

import dataclasses
import re

import numpy as np
import pytest

from axion_ray.cli import main
from axion_ray.config import ChainConfig, SelectConfig, SynthConfig
from axion_ray.errors import ConfigError
from axion_ray.store.synth import synthesize_aoi
from axion_ray.train.chain import chain_line, holdout_split, train_chain

LINE = re.compile(r"^chain opt_v1 ndvi=[\d.]+ evi=[\d.]+ sam=[\d.]+ \| opt_v2 ndvi=[\d.]+ evi=[\d.]+ sam=[\d.]+ "
                  r"\| opt_v3 ndvi=[\d.]+ evi=[\d.]+ sam=[\d.]+ constraints=(PASS|FAIL)$")


def test_the_chain_line_has_the_benchmarks_shape():
    m = {"ndvi_rmse": 0.08, "evi_rmse": 0.09, "sam_rad": 0.1}
    assert LINE.match(chain_line({"opt_v1": m, "opt_v2": m, "opt_v3": m}, True))


def test_mistakes_are_refused_before_any_work(tmp_path, capsys):
    train = synthesize_aoi(tmp_path / "t.zarr", SynthConfig(rows=2, cols=2, tile_size=32, seed=1))
    val = synthesize_aoi(tmp_path / "v.zarr", SynthConfig(rows=2, cols=2, tile_size=32, seed=2))
    assert main(["train", "chain", "--train", train.path, "--val", train.path, "--out", str(tmp_path / "r")]) == 2
    assert "also a training store" in capsys.readouterr().err
    assert main(["train", "chain", "--train", train.path, "--val", val.path, "--out", str(tmp_path / "r"),
                 "--kind", "generate"]) == 2
    assert "do not apply" in capsys.readouterr().err
    assert main(["train", "stage3", "--kind", "regress", "--train", train.path, "--val", val.path,
                 "--out", str(tmp_path / "r"), "--stage3-encoder", "pixel"]) == 2
    assert "a single stage takes --encoder" in capsys.readouterr().err
    assert main(["train", "chain", "--train", train.path, "--val", val.path, "--out", str(tmp_path / "r"),
                 "--crop", "8"]) == 2
    assert "crop must be 0 (whole tiles) or at least 16 px, got 8" in capsys.readouterr().err
    for extra, words in ((["--cpu-bf16-stages", "1,4"], "stages of 1, 2, 3, got 1,4"),
                         (["--cpu-bf16"], "takes --cpu-bf16-stages")):
        assert main(["train", "chain", "--train", train.path, "--val", val.path, "--out", str(tmp_path / "r"),
                     *extra]) == 2
        assert words in capsys.readouterr().err
    assert main(["train", "stage1", "--kind", "regress", "--train", train.path, "--val", val.path,
                 "--out", str(tmp_path / "r"), "--cpu-bf16-stages", "1"]) == 2
    assert "a single stage takes --cpu-bf16" in capsys.readouterr().err
    for fraction in ("0", "1", "1.5"):
        assert main(["train", "chain", "--train", train.path, "--val", val.path, "--out", str(tmp_path / "r"),
                     "--holdout-fraction", fraction]) == 2
        assert "share of the training AOIs between 0 and 1" in capsys.readouterr().err
    assert main(["train", "stage1", "--kind", "regress", "--train", train.path, "--val", val.path,
                 "--out", str(tmp_path / "r"), "--holdout-fraction", "0.5"]) == 2
    assert "a single stage trains on every --train store" in capsys.readouterr().err
    assert main(["train", "stage2", "--train", train.path, "--val", val.path, "--out", str(tmp_path / "r"),
                 "--average-top-k", "3"]) == 2
    assert "pass it to `axion-ray select`" in capsys.readouterr().err
    assert main(["train", "chain", "--train", train.path, "--val", val.path, "--out", str(tmp_path / "r"),
                 "--average-top-k", "-2"]) == 2
    assert "0: no average), got -2" in capsys.readouterr().err
    for members in ("0", "3"):  # the chain's 2 workers: one or two members
        assert main(["train", "chain", "--train", train.path, "--val", val.path, "--out", str(tmp_path / "r"),
                     "--stage1-members", members]) == 2
        assert f"1 to 2, got {members}" in capsys.readouterr().err
    assert main(["train", "stage1", "--kind", "regress", "--train", train.path, "--val", val.path,
                 "--out", str(tmp_path / "r"), "--stage1-members", "2"]) == 2
    assert "a single stage trains one model" in capsys.readouterr().err
    other = synthesize_aoi(tmp_path / "w.zarr", SynthConfig(rows=2, cols=2, tile_size=32, seed=3))
    assert main(["train", "stage1", "--kind", "regress", "--train", train.path, "--val", val.path, other.path,
                 "--out", str(tmp_path / "r")]) == 2
    assert "a single stage validates on one --val store" in capsys.readouterr().err
    for vals, words in (([val.path, val.path], "given twice"), ([val.path, train.path], "also a training store")):
        assert main(["train", "chain", "--train", train.path, "--val", *vals, "--out", str(tmp_path / "r")]) == 2
        assert words in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown encoder"):
        train_chain([train.path], val.path, tmp_path / "r", ChainConfig(encoder="resnet"))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "chain_config.json").write_text('{"config": {"epochs": 99}}')
    with pytest.raises(ConfigError, match="another configuration"):
        train_chain([train.path], val.path, tmp_path / "r", ChainConfig())
    assert not (tmp_path / "r" / "data").exists()


def test_the_holdout_split_spreads_the_held_out_aois_and_keeps_both_sides():
    assert holdout_split(10, 0.5) == ([0, 2, 4, 6, 8], [1, 3, 5, 7, 9])  # every other, as before the option
    ones, held = holdout_split(15, 1 / 3)  # Stage 1 on two AOIs of every three
    assert held == [2, 5, 8, 11, 14] and len(ones) == 10
    for n in range(2, 12):
        for fraction in (0.01, 0.2, 0.5, 0.8, 0.99):
            ones, held = holdout_split(n, fraction)
            assert ones and held and sorted(ones + held) == list(range(n)), (n, fraction)
            assert abs(len(held) - fraction * n) <= 1, (n, fraction)


def test_later_stages_are_scored_as_the_identity_they_start_as():
    """Stages 2 and 3 start as their input: the chain scores them at step 0 too, so one whose training
    never beats its input is exported unchanged rather than making the chain worse. Stage 1 has no input."""
    cfg = ChainConfig()
    assert [cfg.stage_config(s).validate_at_start for s in (1, 2, 3)] == [False, True, True]
    with pytest.raises(ConfigError, match="only Stage 2 and the regression Stage 3"):
        dataclasses.replace(cfg.stage_config(1), validate_at_start=True).validate()


def test_stage1_batch_size_edge_weight_crop_and_averaging_reach_what_they_name():
    cfg = ChainConfig(batch_size=16, stage1_batch_size=8, crop=0, stage1_w_edge=1.0)
    assert [cfg.stage_config(s).batch_size for s in (1, 2, 3)] == [8, 16, 16]
    assert [cfg.stage_config(s).crop for s in (1, 3)] == [0, 0]
    assert [cfg.stage_config(s).w_edge for s in (1, 2, 3)] == [1.0, 0.5, 0.5]
    assert ChainConfig().stage_config(1).crop == 32  # TrainConfig's default
    assert ChainConfig(stage1_w_edge=0.0).stage_config(1).w_edge == 0.0  # 0 is a weight, not "unset"
    assert ChainConfig().select_config() == SelectConfig() and ChainConfig(average_top_k=0).select_config().average_top_k == 0


def test_each_stage1_member_gets_its_share_of_the_workers_its_own_seed_and_the_steps_of_one_run():
    cfg = ChainConfig(workers=4, stage1_members=2, epochs=65, seed=7, stage1_batch_size=8)
    one = cfg.stage_config(1)
    members = [cfg.stage_config(1, member=i) for i in range(2)]
    assert [m.workers for m in members] == [2, 2] and [m.seed for m in members] == [7, 8]
    assert [m.epochs for m in members] == [32, 32] and one.epochs == 65 and one.workers == 4
    # Steps: an epoch of a member is twice as many steps (half the workers per step), so the same total.
    assert abs(members[0].epochs * 640 / (2 * 8) - one.epochs * 640 / (4 * 8)) <= 640 / (2 * 8)
    assert {m.batch_size for m in members} == {one.batch_size} and cfg.stage_config(2).workers == 4


def test_stage1_members_use_every_worker_when_the_workers_do_not_divide_evenly():
    cfg = ChainConfig(workers=5, stage1_members=2, epochs=60)
    members = [cfg.stage_config(1, member=i) for i in range(2)]
    assert [m.workers for m in members] == [3, 2]
    # Each member keeps the steps of one run over all five workers (640 tiles, 16 a step per worker).
    steps = [m.epochs * -(-640 // (m.workers * 16)) for m in members]
    one = 60 * -(-640 // (5 * 16))
    assert all(abs(s - one) <= 0.1 * one for s in steps), (steps, one)
    three = ChainConfig(workers=3, stage1_members=3)
    assert [three.stage_config(1, member=i).workers for i in range(3)] == [1, 1, 1]


def test_cpu_bf16_reaches_the_stages_it_names_and_runs_their_forward_in_bf16():
    """bf16 autocast on CPU is a per-stage training choice (the UNet Stage 1 ran 1.3-1.5x the steps
    here); the forward runs in bf16, the loss and the fp32 weights' gradients stay finite."""
    import torch

    from axion_ray.models import build_stage
    from axion_ray.train.loop import RegressTask

    assert [ChainConfig(cpu_bf16_stages=(1,)).stage_config(s).cpu_bf16 for s in (1, 2, 3)] == [True, False, False]
    batch = {"s1": torch.randn(2, 2, 32, 32) * 3 - 12, "s2_truth": torch.rand(2, 4, 32, 32) * 0.3,
             "month": torch.tensor([1, 7]), "biome_code": torch.tensor([0, 3])}
    for bf16, dtype in ((False, torch.float32), (True, torch.bfloat16)):
        stage1 = ChainConfig(cpu_bf16_stages=(1,) if bf16 else ()).stage_config(1)
        task = RegressTask(dataclasses.asdict(stage1), 1)
        model = build_stage(1, kind="regress", encoder="unet", width=8, allow_random_init=True)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        seen = []
        conv.register_forward_hook(lambda _m, _i, out, seen=seen: seen.append(out.dtype))
        loss, _ = task.loss(model, batch, torch.device("cpu"))
        loss.backward()
        assert seen[0] == dtype and torch.isfinite(loss)
        assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
                   for p in model.parameters() if p.grad is not None)


def test_a_chain_run_directory_resumes_with_tuple_options_and_from_before_a_new_option(tmp_path):
    """The chain's record is JSON: a tuple option reads back as a list and is still the same run."""
    from axion_ray.train.chain import CHAIN_CONFIG_FILE
    from axion_ray.train.run import claim_run_dir

    def claim(cfg, drop=()):
        config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in drop}
        return claim_run_dir(tmp_path, {"config": config, "train_stores": ["t"], "val_store": "v"},
                             file=CHAIN_CONFIG_FILE, defaults=dataclasses.asdict(ChainConfig()),
                             resumable=frozenset(), what="a chain run")

    assert claim(ChainConfig(), drop=("cpu_bf16_stages",)) is False   # recorded before the option existed
    assert claim(ChainConfig()) is True
    with pytest.raises(ConfigError, match=r"a chain run with another configuration \(cpu_bf16_stages differ"):
        claim(ChainConfig(cpu_bf16_stages=(1,)))
    (tmp_path / CHAIN_CONFIG_FILE).unlink()
    assert claim(ChainConfig(cpu_bf16_stages=(1,))) is False
    assert claim(ChainConfig(cpu_bf16_stages=(1,))) is True


def test_a_run_directory_from_before_a_new_option_still_resumes(tmp_path):
    """A run recorded before an option existed resumes when the option is at its default, and only then."""
    import json

    from axion_ray.config import TrainConfig
    from axion_ray.train.run import RUN_CONFIG_FILE, claim_run_dir

    record = {"config": dataclasses.asdict(TrainConfig()), "train_stores": ["t"], "val_store": "v"}
    older = {**record, "config": {k: v for k, v in record["config"].items() if k != "validate_at_start"}}
    (tmp_path / RUN_CONFIG_FILE).write_text(json.dumps(older))
    assert claim_run_dir(tmp_path, record) is True
    with pytest.raises(ConfigError, match=r"validate_at_start differ"):
        claim_run_dir(tmp_path, {**record, "config": {**record["config"], "validate_at_start": True}})


def test_validation_beyond_max_val_tiles_is_drawn_across_every_pooled_aoi(tmp_path):
    """A chain's validation copy pools its AOIs one after another: capped at `max_val_tiles`, the tiles
    scored must come from all of them, not only from the first AOIs of the pool."""
    from axion_ray.store.tile_store import TileStore
    from axion_ray.train.loop import Validator, stage_task

    aois = [synthesize_aoi(tmp_path / f"v{i}.zarr", SynthConfig(rows=2, cols=3, tile_size=32, seed=10 + i))
            for i in range(3)]
    pooled = TileStore.pool_inputs(aois, tmp_path / "val.zarr")
    task = stage_task(dataclasses.asdict(dataclasses.replace(ChainConfig().stage_config(1), encoder="unet")))
    validator = Validator(pooled.path, task, max_tiles=6)
    ids = np.asarray(pooled.tile_meta()["tile_id"])[validator.tiles]
    assert len(validator.tiles) == 6 and {str(t).split("_")[0] for t in ids} == {"aoi0", "aoi1", "aoi2"}
    np.testing.assert_array_equal(validator.truth, pooled.read("s2_truth", validator.tiles))
    assert len(Validator(pooled.path, task, max_tiles=256).tiles) == pooled.n_tiles == 18

    # Split between two workers in whole batches, merged on the first: the figures of one worker's run.
    import torch

    model, cpu = task.build().eval(), torch.device("cpu")
    whole = Validator(pooled.path, task, max_tiles=256, batch_size=4)(model, cpu)
    second = Validator(pooled.path, task, max_tiles=256, batch_size=4, shard=(1, 2))
    sent = []
    assert second(model, cpu, gather=lambda share: sent.append(share)) is None  # not rank 0: nothing back
    first = Validator(pooled.path, task, max_tiles=256, batch_size=4, shard=(0, 2))
    assert (len(first.truth), len(second.truth)) == (10, 8)  # batches 0, 2, 4 (two tiles) and 1, 3
    merged = first(model, cpu, gather=lambda share: [share, *sent])
    for key in ("pred", "geometry", "baseline"):
        assert merged[key] == pytest.approx(whole[key], rel=1e-9), key
    assert merged["composite_score"] == pytest.approx(whole["composite_score"], rel=1e-9)
