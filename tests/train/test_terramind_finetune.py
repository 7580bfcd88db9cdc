"""LoRA fine-tuning of TerraMind (stages 1 and 3) through the Ray Train loop: it trains, saves, exports, loads."""

import numpy as np
import pytest
import torch

from axion_ray.config import SynthConfig, TrainConfig
from axion_ray.errors import TileDataError
from axion_ray.models import build_stage
from axion_ray.store import TileStore
from axion_ray.store.synth import synthesize_aoi
from axion_ray.train import train_stage
from axion_ray.train.select import select_and_export

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("tm_train")
    train = synthesize_aoi(root / "train.zarr", SynthConfig(rows=2, cols=3, tile_size=32, seed=1))
    val = synthesize_aoi(root / "val.zarr", SynthConfig(rows=1, cols=2, tile_size=32, seed=2))
    return train, val


def test_token_objective_is_differentiable_and_only_adapters_learn():
    from axion_ray.models import LoraSettings, apply_lora

    model = apply_lora(build_stage(1, allow_random_init=True, timesteps=1), LoraSettings(rank=4, trainable=()))
    s1 = torch.randn(2, 2, 32, 32) - 15.0
    truth = torch.rand(2, 4, 32, 32) * 0.3
    loss = model.training_loss(s1, truth)
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert torch.isfinite(loss) and loss.item() > 0
    assert grads and all("lora_" in n for n in grads)
    assert not any("tokenizer" in n for n in grads)


def test_stage1_lora_trains_saves_exports_and_runs(local_ray, stores, tmp_path):
    train, val = stores
    cfg = TrainConfig(stage=1, allow_random_init=True, epochs=4, batch_size=3, val_every_steps=4, workers=1,
                      lr=3e-3, max_val_tiles=2)
    summary = train_stage(train.path, val.path, tmp_path / "run", cfg, say=lambda _: None)
    steps = sorted(summary["checkpoints"], key=lambda c: c["step"])
    assert [c["step"] for c in steps] == [4, 8]
    assert steps[-1]["loss_tokens"] < steps[0]["loss_tokens"]  # the adapters learn the training tokens

    meta = select_and_export(tmp_path / "run", tmp_path / "out" / "s1.pt", warn=lambda _: None)
    exported = torch.load(tmp_path / "out" / "s1.pt", map_location="cpu", weights_only=True)
    state = exported["model_state_dict"]
    assert state and all("lora_" in k for k in state)  # adapters only, not the ~300 M-parameter base
    assert exported["config"]["adapter_only"] and exported["config"]["stage"] == 1
    assert max(float(v.abs().max()) for k, v in state.items() if "lora_B" in k) > 0  # moved from zero init
    assert "# Stage 1 Best Checkpoint" in (tmp_path / "out" / "s1_REPORT.md").read_text()
    assert meta["selected"]["step"] in (4, 8)

    model = build_stage(1, checkpoint=str(tmp_path / "out" / "s1.pt"), timesteps=1)
    assert model.provenance["random_init"] is True and model.provenance["lora"]["rank"] == 8
    assert not any("lora_" in n for n, _ in model.named_parameters())  # merged for inference
    s1 = torch.from_numpy(TileStore.open(val.path).read("s1", np.arange(1)))
    with torch.no_grad():
        out = model(s1)
    assert out.shape == (1, 4, 32, 32) and torch.isfinite(out).all()


def test_stage3_trains_on_the_condition_it_is_given(local_ray, stores, tmp_path):
    train, val = stores
    with pytest.raises(TileDataError, match="opt_v2"):
        train_stage(train.path, val.path, tmp_path / "bad", TrainConfig(stage=3, allow_random_init=True))
    cfg = TrainConfig(stage=3, condition="opt_v1", allow_random_init=True, epochs=1, batch_size=3,
                      val_every_steps=2, workers=1, max_val_tiles=2)
    summary = train_stage(train.path, val.path, tmp_path / "run", cfg, say=lambda _: None)
    (ckpt,) = summary["checkpoints"]
    assert ckpt["step"] == 2 and np.isfinite(ckpt["loss_tokens"]) and np.isfinite(ckpt["sam_rad"])
    assert summary["config"]["lora_rank"] == 8
