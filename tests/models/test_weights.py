import pytest
import torch

from axion_ray.errors import CheckpointError, WeightsNotFoundError
from axion_ray.models import build_stage
from axion_ray.models.presets import WEIGHT_FILES
from axion_ray.models.weights import load_checkpoint, resolve_weights, sha256_file

PRITHVI_SMALL = WEIGHT_FILES["prithvi_eo_v2_tiny_tl"]


def test_missing_weights_name_every_place_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("AXION_RAY_WEIGHTS", str(tmp_path / "env_dir"))
    with pytest.raises(WeightsNotFoundError) as info:
        build_stage(2, "small", weights=str(tmp_path / "my_weights"))
    message = str(info.value)
    assert "Prithvi_EO_V2_tiny_TL.pt" in message and "ibm-nasa-geospatial/Prithvi-EO-2.0-tiny-TL" in message
    assert str(tmp_path / "my_weights") in message
    assert str(tmp_path / "env_dir" / "Prithvi_EO_V2_tiny_TL.pt") in message
    assert "Hugging Face cache" in message and "--allow-random-init" in message


def test_a_preset_without_published_weights_needs_random_init_or_a_checkpoint():
    with pytest.raises(WeightsNotFoundError, match="prithvi_eo_tiny has no published weights"):
        build_stage(2, "tiny")


def _published_prithvi_small(directory):
    """A stand-in for the published file: a randomly initialised backbone saved under the Hub name."""
    source = build_stage(2, "small", allow_random_init=True)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / PRITHVI_SMALL.filename
    torch.save(source.backbone.state_dict(), path)
    return source, path


def test_weights_load_from_a_local_directory(tmp_path):
    source, path = _published_prithvi_small(tmp_path / "weights")
    model = build_stage(2, "small", weights=str(tmp_path / "weights"))
    for name, param in source.backbone.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[name], param)
    assert model.provenance["random_init"] is False
    assert model.provenance["weights"]["sha256"]["prithvi_eo_v2_tiny_tl"] == sha256_file(path)


def test_weights_load_from_a_hugging_face_cache_layout(tmp_path, monkeypatch):
    repo_dir = tmp_path / "hub" / ("models--" + PRITHVI_SMALL.repo_id.replace("/", "--"))
    _, path = _published_prithvi_small(repo_dir / "snapshots" / "abc123")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("AXION_RAY_WEIGHTS", str(tmp_path / "hub"))
    record = resolve_weights(["prithvi_eo_v2_tiny_tl"], None, allow_random_init=False)
    assert record.files["prithvi_eo_v2_tiny_tl"] == str(path)


@pytest.mark.slow
def test_terramind_weights_load_from_published_file_layout(tmp_path, stage1_model):
    # The published TerraMind file holds the transformer without the "sampler.model." prefix; the
    # tokenizer (diffusion decoder) comes in its own file. Save ours that way and load it back.
    prefix = "generator.sampler.model."
    state = stage1_model.state_dict()
    torch.save({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)},
               tmp_path / WEIGHT_FILES["terramind_v1_tiny"].filename)
    torch.save(stage1_model.generator.tokenizer["tok_sen2l2a@224"].state_dict(),
               tmp_path / WEIGHT_FILES["terramind_v1_tokenizer_s2l2a"].filename)
    loaded = build_stage(1, "tiny", weights=str(tmp_path), timesteps=1)
    loaded_state = loaded.state_dict()
    for key in (f"{prefix}encoder.0.attn.qkv.weight", "generator.tokenizer.tok_sen2l2a@224.decoder.out.2.weight"):
        torch.testing.assert_close(loaded_state[key], state[key])
    assert set(loaded.provenance["weights"]["files"]) == {"terramind_v1_tiny", "terramind_v1_tokenizer_s2l2a"}
    s1 = torch.randn(1, 2, 32, 32) * 4 - 14
    with torch.inference_mode():
        torch.testing.assert_close(loaded(s1), stage1_model(s1))


def test_checkpoints_round_trip_with_sha256(tmp_path):
    model = build_stage(2, "tiny", allow_random_init=True)
    torch.nn.init.normal_(model.head.out.weight, std=0.01)
    path = tmp_path / "stage2.pt"
    torch.save({"model_state_dict": model.state_dict(), "config": {"stage": 2, "preset": "tiny"},
                "step": 10, "epoch": 1, "metrics": {}, "composite_score": 0.01}, path)
    ckpt = load_checkpoint(path)
    assert ckpt.sha256 == sha256_file(path) and ckpt.meta["step"] == 10
    again = build_stage(2, checkpoint=str(path))  # no pretrained weights needed with a checkpoint
    assert again.provenance["checkpoint_sha256"] == ckpt.sha256 and again.provenance["random_init"] is False
    torch.testing.assert_close(again.head.out.weight, model.head.out.weight)
    with pytest.raises(CheckpointError, match="stage 2 checkpoint, not stage 3"):
        build_stage(3, checkpoint=str(path))


def test_bad_checkpoints_are_clear_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no model_state_dict"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(WeightsNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"model_state_dict": {"x": torch.zeros(1)}, "config": {"stage": 2}}, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="does not fit"):
        build_stage(2, checkpoint=str(tmp_path / "wrong.pt"))
    # A refiner from before the log-gain head: its stem took 4 image channels, not 8.
    state = build_stage(2, allow_random_init=True).state_dict()
    state["head.stem.weight"] = torch.zeros(32, 36, 1, 1)
    torch.save({"model_state_dict": state, "config": {"stage": 2}}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="shapes differ.*head.stem.weight"):
        build_stage(2, checkpoint=str(tmp_path / "old.pt"))
