import json

import numpy as np
import pytest
import torch

from axion_ray.cli import main
from axion_ray.models import build_stage


@pytest.fixture
def checkpoint(tmp_path):
    model = build_stage(2, "tiny", allow_random_init=True)
    torch.nn.init.constant_(model.head.out.bias, 0.05)  # a "trained" refiner: gain e^0.05 everywhere
    path = tmp_path / "best.pt"
    torch.save({"model_state_dict": model.state_dict(), "config": {"stage": 2, "preset": "tiny"}}, path)
    return path


def tile(directory, name, data, sidecar=None, key="opt_v1"):
    np.savez(directory / f"{name}.npz", **{key: data})
    if sidecar is not None:
        (directory / f"{name}.json").write_text(json.dumps(sidecar))


def test_axion_sat_options_any_size_bad_tiles_listed_and_resume(local_ray, tmp_path, checkpoint, capsys):
    src, out = tmp_path / "stage1_outputs", tmp_path / "stage2_outputs"
    src.mkdir()
    rng = np.random.default_rng(0)
    tile(src, "tile_0001", rng.random((4, 32, 32), dtype=np.float32) * 0.5, {"month": "jun", "biome_code": 3,
                                                                           "tile_id": "tile_0001", "site": "iowa"})
    tile(src, "tile_0002", rng.random((4, 48, 40), dtype=np.float32) * 0.5, {"month": 11})  # another size
    tile(src, "tile_0003", rng.random((4, 32, 32), dtype=np.float32) * 0.5)                 # no sidecar
    tile(src, "tile_0004", np.full((4, 32, 32), np.nan, np.float32), {"month": 2})            # NaN
    (src / "tile_0005.npz").write_bytes(b"corrupt")                                          # unreadable
    argv = ["infer-npz", "--checkpoint", str(checkpoint), "--input_dir", str(src), "--output_dir", str(out),
            "--batch_size", "4", "--device", "cpu", "--no_amp"]
    assert main(argv) == 1  # some tiles failed, the rest were written
    stdout, stderr = capsys.readouterr()
    assert "tile_0004.npz failed" in stdout and "NaN" in stdout and "tile_0005.npz failed" in stdout
    assert sorted(p.name for p in out.glob("*.npz")) == ["tile_0001.npz", "tile_0002.npz", "tile_0003.npz"]

    v2 = np.load(out / "tile_0001.npz")["opt_v2"]
    v1 = np.load(src / "tile_0001.npz")["opt_v1"]
    np.testing.assert_allclose(v2, np.clip(v1 * np.exp(0.05), 0, 1), atol=1e-6)
    assert np.load(out / "tile_0002.npz")["opt_v2"].shape == (4, 48, 40)
    meta = json.loads((out / "tile_0001.json").read_text())
    assert meta["month"] == 6 and meta["biome_code"] == 3 and meta["site"] == "iowa"
    assert meta["stage"] == "stage2_refined" and "timestamp" in meta
    assert meta["processing"]["input_file"].endswith("stage1_outputs/tile_0001.npz")
    assert meta["processing"]["checkpoint"] == str(checkpoint) and meta["processing"]["device"] == "cpu"
    assert meta["processing"]["use_amp"] is False and meta["processing"]["processing_time_ms"] > 0
    assert not (out / ".axion_ray_work").exists()

    assert main(argv) == 1  # the broken inputs still fail; the finished ones are skipped
    assert "3 skipped (output exists)" in capsys.readouterr()[0]


def test_missing_checkpoint_and_no_gpu_are_user_errors(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    tile(src, "t", np.zeros((4, 32, 32), np.float32) + 0.1)
    code = main(["infer-npz", "--checkpoint", str(tmp_path / "nope.pt"), "--input_dir", str(src),
                 "--output_dir", str(tmp_path / "out"), "--device", "cpu"])
    assert code == 2 and "nope.pt does not exist" in capsys.readouterr().err


def test_config_yaml_maps_known_keys(tmp_path):
    from axion_ray.errors import ConfigError
    from axion_ray.pipeline.npz_job import load_infer_config

    (tmp_path / "hw.yaml").write_text("batch_size: 8\ntimesteps: 5\ngpu_memory_gb: 12\n")  # Axion-Sat style
    cfg = load_infer_config(tmp_path / "hw.yaml", batch_size=2)
    assert cfg.timesteps == 5 and cfg.batch_size == 2  # command-line options win over the file
    (tmp_path / "sec.yaml").write_text("infer:\n  preset: small\n  actors: [1, 3]\n")
    assert load_infer_config(tmp_path / "sec.yaml").actors == (1, 3)
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_infer_config(tmp_path / "bad.yaml")
