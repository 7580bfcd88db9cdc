import pytest
import torch

from axion_ray.models import build_stage
from axion_ray.models.stage2 import month_features


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(3, 4, 64, 64, generator=g), torch.tensor([1, 6, 0]), torch.tensor([0, 4, 15])


def test_untrained_refiner_returns_its_input_exactly(stage2_model, batch):
    opt_v1, month, biome = batch
    with torch.inference_mode():
        out = stage2_model(opt_v1, month, biome)
    assert torch.equal(out, opt_v1)  # log-gain head starts at zero: geometry preserved by construction


def test_head_output_is_a_clamped_per_band_gain(batch):
    model = build_stage(2, "tiny", allow_random_init=True)
    with torch.no_grad():
        model.head.out.bias.copy_(torch.tensor([0.3, -0.2, 0.0, 9.0]))  # the last beyond the e^4 bound
    opt_v1, month, biome = batch
    with torch.inference_mode():
        out = model(opt_v1, month, biome)
    gain = torch.exp(torch.tensor([0.3, -0.2, 0.0, 4.0])).view(1, 4, 1, 1)
    torch.testing.assert_close(out, (opt_v1 * gain).clamp(0, 1))


def test_month_and_biome_condition_the_output(batch):
    model = build_stage(2, "tiny", allow_random_init=True)
    with torch.no_grad():
        for block in model.head.blocks:
            torch.nn.init.normal_(block.film.weight, std=0.5)
        torch.nn.init.normal_(model.head.cond.biome_embed.weight, std=0.5)  # zero at init: unseen biomes stay neutral
        torch.nn.init.normal_(model.head.out.weight, std=0.05)
    opt_v1, _, _ = batch
    one = opt_v1[:1].repeat(3, 1, 1, 1)
    with torch.inference_mode():
        by_month = model(one, torch.tensor([1, 7, 7]), torch.tensor([4, 4, 9]))
    assert not torch.allclose(by_month[0], by_month[1])  # January vs July
    assert not torch.allclose(by_month[1], by_month[2])  # biome 4 vs 9


def test_a_checkpoint_from_before_the_shared_conditioning_loads_unchanged(batch, tmp_path):
    """Stage 2 checkpoints hold the head's month and biome layers at its top level (`head.month_proj.*`);
    since the head uses the regression stages' ConditionEmbedding they live under `head.cond.`."""
    model = build_stage(2, "tiny", allow_random_init=True)
    with torch.no_grad():
        for block in model.head.blocks:
            torch.nn.init.normal_(block.film.weight, std=0.5)
        torch.nn.init.normal_(model.head.cond.biome_embed.weight, std=0.5)
        torch.nn.init.normal_(model.head.out.weight, std=0.05)
    old = {k.replace("head.cond.", "head."): v for k, v in model.state_dict().items()}
    assert "head.month_proj.weight" in old and not any(".cond." in k for k in old)
    torch.save({"model_state_dict": old, "config": {"stage": 2, "preset": "tiny"}}, tmp_path / "old.pt")
    loaded = build_stage(2, checkpoint=str(tmp_path / "old.pt"))
    with torch.inference_mode():
        torch.testing.assert_close(loaded(*batch), model(*batch))


def test_month_encoding_is_cyclic_and_unknown_is_june():
    f = month_features(torch.tensor([12, 1, 0, 6]))
    assert torch.dist(f[0], f[1]) < torch.dist(f[1], f[3])  # December sits next to January
    torch.testing.assert_close(f[2], f[3])


@pytest.mark.parametrize("size", [(120, 120), (50, 70), (16, 16)])
def test_any_tile_size_is_padded_and_cropped_back(stage2_model, size):
    opt = torch.rand(1, 4, *size)
    with torch.inference_mode():
        out = stage2_model(opt, torch.tensor([6]), torch.tensor([3]))
    assert out.shape == (1, 4, *size) and torch.equal(out, opt)


def test_gradients_reach_head_and_backbone(batch):
    model = build_stage(2, "tiny", allow_random_init=True).train()
    torch.nn.init.normal_(model.head.out.weight, std=0.01)
    opt_v1, month, biome = batch
    model(opt_v1, month, biome).mean().backward()
    assert model.head.out.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())


def test_small_preset_feeds_month_to_the_temporal_backbone(batch):
    model = build_stage(2, "small", allow_random_init=True)  # prithvi_eo_v2_tiny_tl
    assert model.temporal and model.backbone.temporal_encoding and model.provenance["model"] == "prithvi_eo_v2_tiny_tl"
    opt_v1, month, biome = batch
    with torch.inference_mode():
        coords = model._temporal_coords(month)
        out = model(opt_v1, month, biome)
    assert coords.shape == (3, 1, 2) and coords[1, 0, 1] == pytest.approx(5 * 30.4 + 15)
    assert out.shape == opt_v1.shape
