"""`train chain` refuses what would mix or mislead before any work. The chain itself — trained,
exported, reported, resumed, the users' stores untouched — is exercised end to end by the demo's
test (tests/test_demo.py), which trains one."""

import dataclasses
import re

import pytest

from axion_ray.cli import main
from axion_ray.config import ChainConfig, SynthConfig
from axion_ray.errors import ConfigError
from axion_ray.store.synth import synthesize_aoi
from axion_ray.train.chain import chain_line, train_chain

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
    with pytest.raises(ConfigError, match="unknown encoder"):
        train_chain([train.path], val.path, tmp_path / "r", ChainConfig(encoder="resnet"))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "chain_config.json").write_text('{"config": {"epochs": 99}}')
    with pytest.raises(ConfigError, match="another configuration"):
        train_chain([train.path], val.path, tmp_path / "r", ChainConfig())
    assert not (tmp_path / "r" / "data").exists()


def test_later_stages_are_scored_as_the_identity_they_start_as():
    """Stages 2 and 3 start as their input: the chain scores them at step 0 too, so one whose training
    never beats its input is exported unchanged rather than making the chain worse. Stage 1 has no input."""
    cfg = ChainConfig()
    assert [cfg.stage_config(s).validate_at_start for s in (1, 2, 3)] == [False, True, True]
    with pytest.raises(ConfigError, match="only Stage 2 and the regression Stage 3"):
        dataclasses.replace(cfg.stage_config(1), validate_at_start=True).validate()


def test_stage1_batch_size_and_crop_reach_the_stages_they_name():
    cfg = ChainConfig(batch_size=16, stage1_batch_size=8, crop=0)
    assert [cfg.stage_config(s).batch_size for s in (1, 2, 3)] == [8, 16, 16]
    assert [cfg.stage_config(s).crop for s in (1, 3)] == [0, 0]
    assert ChainConfig().stage_config(1).crop == 32  # TrainConfig's default


def test_a_run_directory_from_before_a_new_option_still_resumes(tmp_path):
    """A run recorded before an option existed resumes when the option is at its default, and only then."""
    import json

    from axion_ray.config import TrainConfig
    from axion_ray.train.run import RUN_CONFIG_FILE, _claim_run_dir

    record = {"config": dataclasses.asdict(TrainConfig()), "train_stores": ["t"], "val_store": "v"}
    older = {**record, "config": {k: v for k, v in record["config"].items() if k != "validate_at_start"}}
    (tmp_path / RUN_CONFIG_FILE).write_text(json.dumps(older))
    assert _claim_run_dir(tmp_path, record) is True
    with pytest.raises(ConfigError, match=r"validate_at_start differ"):
        _claim_run_dir(tmp_path, {**record, "config": {**record["config"], "validate_at_start": True}})
