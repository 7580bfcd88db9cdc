"""The command line holds no defaults of its own: what the user does not give, the config decides."""

import dataclasses

import pytest

from axion_ray.cli import build_parser, main
from axion_ray.cli.classify import classifier_config
from axion_ray.cli.options import config_from_args
from axion_ray.config import ClassifierConfig, InferConfig, TrainConfig


def test_options_not_given_fall_through_to_the_config_defaults():
    parser = build_parser()
    args = parser.parse_args(["infer", "S.zarr"])
    assert config_from_args(InferConfig, args) == InferConfig()
    args = parser.parse_args(["train", "stage2", "--train", "T", "--val", "V", "--out", "R"])
    assert config_from_args(TrainConfig, args, stage=2) == TrainConfig()
    args = parser.parse_args(["classify", "train", "--data", "D", "--out", "R"])
    assert classifier_config(args) == ClassifierConfig()


def test_options_given_reach_the_config():
    args = build_parser().parse_args(["infer", "S.zarr", "--stages", "2", "--actors", "1:3", "--no-amp",
                                      "--no-skip-existing", "--preset", "small", "--batch-size", "8"])
    cfg = config_from_args(InferConfig, args)
    assert dataclasses.replace(InferConfig(), stages=(2,), actors=(1, 3), amp=False, skip_existing=False,
                               preset="small", batch_size=8) == cfg


def test_preset_choices_come_from_the_registry(capsys):
    from axion_ray.models.presets import PRESETS

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["infer", "S.zarr", "--preset", "huge"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and all(name in err for name in PRESETS)


@pytest.mark.parametrize("command", [["infer", "S.zarr", "--actors"], ["classify", "infer", "--run", "R", "--images", "I",
                                                                       "--out", "O.parquet", "--actors"]])
def test_one_min_max_parser_with_a_readable_error(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "two:4"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "expected MIN:MAX" in err and "lambda" not in err and len(err.strip().splitlines()) == 1
