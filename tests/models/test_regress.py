"""The regression kind of Stages 1 and 3 (models/regress.py): contract, kinds, checkpoints, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from axion_ray.config import InferConfig, SynthConfig
from axion_ray.errors import ConfigError, WeightsNotFoundError
from axion_ray.models import build_stage
from axion_ray.models.builder import stage_provenance
from axion_ray.models.registry import STAGE_KINDS, stage_spec


def _inputs(n: int = 3, size: int = 48, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s1 = torch.randn(n, 2, size, size, generator=g) * 4 - 14
    opt = torch.rand(n, 4, size, size, generator=g) * 0.4
    return s1, opt, torch.tensor([1, 7, 0][:n]), torch.tensor([4, 12, 0][:n])


@pytest.mark.parametrize("encoder", ["terramind", "unet"])
def test_regression_stages_keep_the_stage_contract(encoder):
    s1, opt, month, biome = _inputs()
    one = build_stage(1, kind="regress", encoder=encoder, allow_random_init=True)
    three = build_stage(3, kind="regress", encoder=encoder, allow_random_init=True)
    with torch.no_grad():
        v1 = one(s1, month, biome)
        v3 = three(s1, opt, month, biome)
    assert v1.shape == v3.shape == (3, 4, 48, 48)  # 48 px: padded to the patch, cropped back
    assert 0 <= float(v1.min()) and float(v1.max()) <= 1
    assert torch.equal(v3, opt)  # an untrained grounding returns its optical input exactly
    assert one.INPUTS == ("s1", "month", "biome_code") and three.INPUTS == ("s1", "opt_v2", "month", "biome_code")
    assert one.provenance["kind"] == "regress" and one.provenance["random_init"] is True
    assert one.provenance["model"] == ("terramind_v1_tiny_regress" if encoder == "terramind" else "unet_regress")


def test_every_parameter_learns_and_month_biome_condition_the_output():
    s1, _, month, biome = _inputs()
    model = build_stage(1, kind="regress", encoder="terramind", allow_random_init=True)
    model(s1, month, biome).square().mean().backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # the encoder's tokens are used
    with torch.no_grad():  # FiLM and the biome embedding start at zero (neutral); a trained model's do not
        for name, param in model.decoder.named_parameters():
            if ".film." in name or "biome_embed" in name:
                torch.nn.init.normal_(param, std=0.5)
        same = s1[:1].repeat(2, 1, 1, 1)
        out = model(same, torch.tensor([1, 7]), torch.tensor([4, 4]))
        other = model(same, torch.tensor([1, 1]), torch.tensor([4, 12]))
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(other[0], other[1])


def test_kinds_are_data_and_a_checkpoint_carries_its_kind(tmp_path):
    assert set(STAGE_KINDS[1]) == {"generate", "regress"} and set(STAGE_KINDS[3]) == {"generate", "regress"}
    assert stage_spec(1).kind == "generate"  # generation stays the default for users with the weights
    with pytest.raises(ConfigError, match="no kind 'regress'"):
        stage_spec(2, "regress")
    model = build_stage(3, kind="regress", encoder="unet", width=8, allow_random_init=True)
    torch.nn.init.normal_(model.decoder.out.weight, std=0.1)
    path = tmp_path / "s3.pt"
    torch.save({"model_state_dict": model.state_dict(),
                "config": {"stage": 3, "kind": "regress", "preset": "tiny", "encoder": "unet", "width": 8}}, path)
    rebuilt = build_stage(3, checkpoint=str(path))  # no kind given: the checkpoint's
    s1, opt, month, biome = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(s1, opt, month, biome), model(s1, opt, month, biome))
    prov = stage_provenance(3, checkpoint=str(path))
    assert prov["kind"] == "regress" and prov["model"] == "unet_regress" and prov["random_init"] is False


def test_a_regression_stage_without_a_checkpoint_is_refused_before_any_work():
    with pytest.raises(ConfigError, match="needs a trained checkpoint"):
        InferConfig(stages=(1,), stage1_kind="regress").validate()
    with pytest.raises(WeightsNotFoundError, match="train chain"):
        stage_provenance(1, kind="regress", encoder="unet")
    with pytest.raises(ConfigError, match="unknown encoder"):
        stage_provenance(1, kind="regress", encoder="resnet")


def test_stage1_regression_learns_sar_to_optical_beyond_a_flat_image(tmp_path):
    """60 plain steps on one synthetic AOI: held-out tiles' NDVI error falls well under the best flat
    image's (the truth's own mean spectrum) — the model reads land cover from the backscatter."""
    from axion_ray.metrics.spectral import SpectralAccumulator
    from axion_ray.store.synth import synthesize_aoi
    from axion_ray.train.losses import stage2_loss

    torch.manual_seed(0)
    store = synthesize_aoi(tmp_path / "a.zarr", SynthConfig(rows=4, cols=4, seed=5, with_prior=False))
    idx = np.arange(store.n_tiles)
    s1, truth = torch.from_numpy(store.read("s1", idx)), torch.from_numpy(store.read("s2_truth", idx))
    meta = store.tile_meta()
    month, biome = torch.from_numpy(meta["month"].astype(np.int64)), torch.from_numpy(meta["biome_code"].astype(np.int64))
    train, held = idx[idx % 4 != 0], idx[idx % 4 == 0]
    model = build_stage(1, kind="regress", encoder="unet", allow_random_init=True).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(60):
        b = np.random.default_rng(step).choice(train, 8, replace=False)
        loss, _ = stage2_loss(model(s1[b], month[b], biome[b]), truth[b], truth[b])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = model.eval()(s1[held], month[held], biome[held]).numpy()
    flat = np.broadcast_to(truth[held].numpy().mean(axis=(0, 2, 3))[None, :, None, None], pred.shape)
    scores = []
    for candidate in (pred, flat):
        acc = SpectralAccumulator()
        acc.update(candidate, truth[held].numpy())
        scores.append(acc.compute()["ndvi_rmse"])
    assert scores[0] < 0.75 * scores[1], scores


def test_stage1_starts_from_the_flat_image_it_is_given():
    """`start_from`: the untrained Stage 1 returns the training truth's mean spectrum everywhere, for any
    S1 (its output layer's weights are small, its bias carries the spectrum)."""
    model = build_stage(1, kind="regress", encoder="unet", allow_random_init=True).eval()
    spectrum = [0.04, 0.07, 0.06, 0.30]
    model.start_from(spectrum)
    torch.nn.init.zeros_(model.decoder.out.weight)  # only the bias speaks: the flat image exactly
    with torch.no_grad():
        out = model(torch.randn(2, 2, 32, 32) * 4 - 12, torch.tensor([3, 9]), torch.tensor([1, 4]))
    assert torch.allclose(out, torch.tensor(spectrum).view(1, 4, 1, 1).expand_as(out), atol=1e-5)


def test_the_default_encoder_is_terramind_only_where_its_published_file_is_on_disk(tmp_path):
    """No file: the UNet alone (measured better from scratch). The preset's TerraMind file in --weights:
    its encoder (with LoRA in training), and provenance names the model built."""
    from axion_ray.models.builder import default_encoder

    assert default_encoder("tiny") == "unet"
    assert stage_provenance(1, kind="regress", allow_random_init=True)["model"] == "unet_regress"
    (tmp_path / "TerraMind_v1_tiny.pt").write_bytes(b"")
    assert default_encoder("tiny", str(tmp_path)) == "terramind"
    assert default_encoder("small", str(tmp_path)) == "unet"  # another preset's file is not this one's
