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
from axion_ray.models.regress import PixelStage3


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
    assert set(STAGE_KINDS[2]) == {"refine", "regress"} and stage_spec(2).kind == "refine"
    with pytest.raises(ConfigError, match="no kind 'generate'; choose one of refine, regress"):
        stage_spec(2, "generate")
    model = build_stage(3, kind="regress", encoder="unet", width=8, allow_random_init=True)
    torch.nn.init.normal_(model.decoder.out.weight, std=0.1)
    path = tmp_path / "s3.pt"
    torch.save({"model_state_dict": model.state_dict(),
                "config": {"stage": 3, "kind": "regress", "preset": "tiny", "encoder": "unet", "width": 8,
                           "norm": model.norm}}, path)
    rebuilt = build_stage(3, checkpoint=str(path))  # no kind given: the checkpoint's
    s1, opt, month, biome = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(s1, opt, month, biome), model(s1, opt, month, biome))
    prov = stage_provenance(3, checkpoint=str(path))
    assert prov["kind"] == "regress" and prov["model"] == "unet_regress" and prov["random_init"] is False


def test_a_random_regression_stage_is_drawn_from_its_seed_alone():
    # Every actor of an --allow-random-init run must build the same model, whatever the process's RNG did.
    def weights(seed, rng_seed):
        torch.manual_seed(rng_seed)
        model = build_stage(1, kind="regress", encoder="unet", width=8, allow_random_init=True, seed=seed)
        return torch.cat([p.detach().flatten() for p in model.parameters()]), torch.rand(1)

    first, after_first = weights(3, rng_seed=0)
    again, after_again = weights(3, rng_seed=1)
    other, _ = weights(4, rng_seed=0)
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(after_first, after_again)  # the caller's RNG was left to its own seed


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

    assert default_encoder("tiny") == "unet" and default_encoder("tiny", stage=3) == "pixel"
    assert stage_provenance(1, kind="regress", allow_random_init=True)["model"] == "unet_regress"
    assert stage_provenance(3, kind="regress", allow_random_init=True)["model"] == "pixel_regress"
    (tmp_path / "TerraMind_v1_tiny.pt").write_bytes(b"")
    assert default_encoder("tiny", str(tmp_path)) == "terramind" == default_encoder("tiny", str(tmp_path), stage=3)
    assert default_encoder("small", str(tmp_path)) == "unet"  # another preset's file is not this one's


def _pixel_task(stage: int = 3, **config):
    import dataclasses

    from axion_ray.config import TrainConfig
    from axion_ray.train.loop import RegressTask

    cfg = TrainConfig(stage=stage, kind="regress", encoder="pixel")
    return RegressTask({**dataclasses.asdict(cfg), **config}, stage)


def test_the_pixel_calibrator_keeps_the_stage3_contract_and_stage1_has_none(tmp_path):
    """Stage 3's default from scratch: untrained it returns opt_v2 exactly, on any tile size; a trained one
    round-trips through its checkpoint; Stage 1 has no optical input to calibrate, so it is refused."""
    from axion_ray.config import ChainConfig, TrainConfig

    s1, opt, month, biome = _inputs()
    model = build_stage(3, kind="regress", allow_random_init=True)
    assert type(model).__name__ == "PixelStage3" and model.provenance["model"] == "pixel_regress"
    with torch.no_grad():
        assert torch.equal(model(s1, opt, month, biome), opt)
        assert model(s1[:, :, :37, :21], opt[:, :, :37, :21], month, biome).shape == (3, 4, 37, 21)
    torch.nn.init.normal_(model.mlp[-1].weight, std=0.1)
    path = tmp_path / "s3.pt"
    config = {"stage": 3, "kind": "regress", "preset": "tiny", "encoder": "pixel", "width": 32}
    torch.save({"model_state_dict": model.state_dict(), "config": {**config, "features": model.features}}, path)
    rebuilt = build_stage(3, checkpoint=str(path))
    with torch.no_grad():
        out = rebuilt(s1, opt, month, biome)
        torch.testing.assert_close(out, model(s1, opt, month, biome))
    assert not torch.equal(out, opt) and stage_provenance(3, checkpoint=str(path))["model"] == "pixel_regress"
    # A checkpoint from before feature sets were recorded holds the `basic` set's 14 channels: it still loads.
    assert model.features == "texture" and model.n_features == 28
    old = PixelStage3(features="basic")
    torch.nn.init.normal_(old.mlp[-1].weight, std=0.1)
    torch.save({"model_state_dict": old.state_dict(), "config": config}, tmp_path / "old.pt")
    with torch.no_grad():
        torch.testing.assert_close(build_stage(3, checkpoint=str(tmp_path / "old.pt"))(s1, opt, month, biome),
                                   old(s1, opt, month, biome))
    for mistake in (lambda: build_stage(1, kind="regress", encoder="pixel", allow_random_init=True),
                    lambda: TrainConfig(stage=1, kind="regress", encoder="pixel").validate(),
                    lambda: ChainConfig(encoder="pixel").validate()):
        with pytest.raises(ConfigError, match="only Stages 2 and 3 have one"):
            mistake()
    assert ChainConfig(encoder="unet", stage3_encoder="pixel").stage_config(3).encoder == "pixel"


def test_stage2_has_a_regression_kind_the_pixel_calibrator_of_opt_v1(tmp_path):
    """Stage 2's contract (opt_v1 + month + biome), no S1: untrained it returns opt_v1 exactly on any
    tile size; its checkpoint carries its kind; it takes only the `pixel` encoder; the chain builds it
    with `stage2_kind`, and its training reads opt_v1 whatever the Stage 3 condition says."""
    from axion_ray.config import ChainConfig, TrainConfig
    from axion_ray.models.regress import PixelStage2

    _, opt, month, biome = _inputs()
    model = build_stage(2, kind="regress", allow_random_init=True)
    assert type(model) is PixelStage2 and model.provenance["model"] == "pixel_regress"
    assert model.INPUTS == build_stage(2, allow_random_init=True).INPUTS == ("opt_v1", "month", "biome_code")
    with torch.no_grad():
        assert torch.equal(model(opt, month, biome), opt)
        assert model(opt[:, :, :37, :21], month, biome).shape == (3, 4, 37, 21)
    torch.nn.init.normal_(model.mlp[-1].weight, std=0.1)
    config = {"stage": 2, "kind": "regress", "preset": "tiny", "encoder": "pixel", "width": 32,
              "features": model.features}
    torch.save({"model_state_dict": model.state_dict(), "config": config}, tmp_path / "s2.pt")
    rebuilt = build_stage(2, checkpoint=str(tmp_path / "s2.pt"))  # no kind asked: the file's
    with torch.no_grad():
        out = rebuilt(opt, month, biome)
        torch.testing.assert_close(out, model(opt, month, biome))
    assert not torch.equal(out, opt) and rebuilt.provenance["kind"] == "regress"
    for encoder in ("unet", "terramind"):
        with pytest.raises(ConfigError, match="Stage 2's regression kind calibrates opt_v1 and reads no S1"):
            TrainConfig(stage=2, kind="regress", encoder=encoder).validate()
    with pytest.raises(ConfigError, match="--stage2-kind is refine"):
        ChainConfig(stage2_kind="pixel").validate()
    stage2 = ChainConfig(stage2_kind="regress").stage_config(2)
    assert (stage2.kind, stage2.encoder, stage2.validate_at_start) == ("regress", "pixel", True)
    assert ChainConfig(stage2_kind="refine").stage_config(2).kind is None  # the refiner: Stage 2's default kind
    # The chain's default: the refiner only where the preset's published Prithvi file is on disk.
    assert ChainConfig().stage_config(2).kind == "regress"  # tiny's Prithvi has no published weights at all
    assert ChainConfig(preset="small", weights=str(tmp_path)).resolved_stage2_kind() == "regress"
    (tmp_path / "Prithvi_EO_V2_tiny_TL.pt").write_bytes(b"")
    assert ChainConfig(preset="small", weights=str(tmp_path)).resolved_stage2_kind() == "refine"
    assert ChainConfig(preset="small", weights=str(tmp_path)).stage_config(2).kind is None
    assert ChainConfig(preset="base", weights=str(tmp_path)).resolved_stage2_kind() == "regress"  # not its file
    task = _pixel_task(stage=2, condition="opt_v2")
    assert task.validation_inputs() == ["opt_v1"] and task.baseline_array == "opt_v1"


def test_pixel_rows_are_what_the_calibrator_sees_of_whole_tiles():
    """Training draws pixels from a table (`RegressTask.pixel_rows`); inference runs on tiles. The two must
    agree pixel for pixel — the S1 neighbourhood mean included, beside no-data too — and no-data pixels
    never become rows."""
    from axion_ray.store.validity import fill_invalid, valid_pixels

    s1, opt, month, biome = _inputs(size=32)
    truth = opt * 1.1
    truth[0, :, :5, :] = float("nan")  # a no-data band in the truth
    s1[1, 0, 7, 9] = float("nan")      # and a no-data pixel in the SAR
    tiles = {"s1": s1.numpy(), "opt_v2": opt.numpy(), "s2_truth": truth.numpy(), "month": month.numpy(),
             "biome_code": biome.numpy()}
    model = build_stage(3, kind="regress", encoder="pixel", allow_random_init=True)
    rows = _pixel_task().pixel_rows(tiles, model.pixel_features)
    valid = np.isfinite(tiles["s2_truth"]).all(1) & np.isfinite(tiles["s1"]).all(1)
    assert len(rows["features"]) == len(rows["month"]) == valid.sum() == 3 * 32 * 32 - 5 * 32 - 1
    torch.nn.init.normal_(model.mlp[-1].weight, std=0.2)
    # As the pipeline runs a tile: no-data filled from the nearest valid pixel, then the model.
    seen = valid_pixels(tiles["s1"], tiles["opt_v2"])
    s1_filled, opt_filled = (torch.from_numpy(fill_invalid(tiles[k], seen)) for k in ("s1", "opt_v2"))
    # A pixel near the tile's edge (its neighbourhoods clipped by the border), and one beside the SAR's no-data pixel.
    for tile, y, x in ((2, 17, 30), (1, 8, 10)):
        index = int(valid.reshape(-1)[:np.ravel_multi_index((tile, y, x), valid.shape)].sum())  # its row
        with torch.no_grad():
            on_tile = model(s1_filled[tile:tile + 1], opt_filled[tile:tile + 1], month[tile:tile + 1],
                            biome[tile:tile + 1])[0, :, y, x]
            on_row = model(None, torch.from_numpy(rows["optical"][index:index + 1])[..., None, None],
                           torch.from_numpy(rows["month"][index:index + 1]),
                           torch.from_numpy(rows["biome_code"][index:index + 1]),
                           features=torch.from_numpy(rows["features"][index:index + 1])[..., None, None])[0, :, 0, 0]
        torch.testing.assert_close(on_row, on_tile)
        assert int(rows["biome_code"][index]) == int(biome[tile])


@pytest.mark.parametrize("stage", [2, 3])
def test_the_calibrator_learns_a_per_biome_colour_bias_from_pixels(stage):
    """What the calibrators are for: the optical input off by a colour gain that depends on the biome.
    150 steps of pixels drawn across the tiles (the loss the training loop runs) remove most of it, on
    tiles never trained on — Stage 3's from S1 + opt_v2, Stage 2's from opt_v1 alone."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    n, size = 24, 16
    spectra = torch.tensor([[0.03, 0.06, 0.04, 0.35], [0.10, 0.13, 0.16, 0.25], [0.04, 0.04, 0.03, 0.015]])
    classes = torch.randint(0, 3, (n, size, size), generator=gen)  # vegetation, soil, water
    truth = spectra[classes].permute(0, 3, 1, 2) * (1 + 0.05 * torch.randn(n, 4, size, size, generator=gen))
    biome = torch.arange(n) % 3
    gain = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.3, 1.2, 1.25, 0.8], [0.8, 0.85, 0.8, 1.2]])[biome]
    opt = (truth * gain[:, :, None, None]).clamp(0, 1)
    s1 = torch.randn(n, 2, size, size, generator=gen) * 3 - 14
    month = torch.full((n,), 6)
    train = torch.arange(n) < 18
    task = _pixel_task(stage)
    model = build_stage(stage, kind="regress", encoder="pixel", allow_random_init=True).train()
    images = {"s1": s1, "opt_v2": opt} if stage == 3 else {"opt_v1": opt}
    rows = task.pixel_rows({**{k: v[train].numpy() for k, v in images.items()}, "s2_truth": truth[train].numpy(),
                            "month": month[train].numpy(), "biome_code": biome[train].numpy()}, model.pixel_features)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(150):
        pick = rng.integers(0, len(rows["truth"]), 2048)
        loss, _ = task.loss(model, {k: torch.from_numpy(v[pick]) for k, v in rows.items()}, torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    held = ~train
    with torch.no_grad():
        pred = model.eval()(*(v[held] for v in images.values()), month[held], biome[held])
    before, after = (float((x - truth[held]).abs().mean()) for x in (opt[held], pred))
    assert after < 0.2 * before, (before, after)


def test_test_time_views_average_the_flips_of_the_regression_unet_stages_only():
    from axion_ray.models.tta import DihedralTTA

    s1, opt, month, biome = _inputs(n=2, size=48)
    s1 = s1[..., :40]  # not square: the 8 views transpose H and W and must map back
    torch.manual_seed(0)
    plain = build_stage(1, kind="regress", encoder="unet", allow_random_init=True)
    with torch.no_grad():  # a trained-looking model: random output weights, so every view differs
        plain.decoder.out.weight.normal_(0, 0.5)
    eight, four = DihedralTTA(plain, 8), DihedralTTA(plain, 4)
    with torch.no_grad():
        once, avg8, avg4 = plain(s1, month, biome), eight(s1, month, biome), four(s1, month, biome)
        # By hand: none, W, H and both flipped; each output flipped back; the mean.
        by_hand = torch.stack([plain(s1.flip(d), month, biome).flip(d) if d else plain(s1, month, biome)
                               for d in ((), (-1,), (-2,), (-2, -1))]).mean(0)
        flipped = eight(s1.flip(-1), month, biome)
    assert avg8.shape == avg4.shape == once.shape == (2, 4, 48, 40)
    assert not torch.allclose(avg4, once, atol=1e-4)  # the views do differ
    torch.testing.assert_close(avg4, by_hand, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(flipped, avg8.flip(-1), atol=1e-5, rtol=1e-4)  # 8 views: flip-equivariant exactly
    assert eight.INPUTS == plain.INPUTS and eight.OUTPUT == plain.OUTPUT

    # Through the factory: the regression UNet stages are wrapped and say so; the others run once.
    one = build_stage(1, kind="regress", encoder="unet", allow_random_init=True, tta=4)
    calibrator = build_stage(3, kind="regress", encoder="pixel", allow_random_init=True, tta=4)
    assert isinstance(one, DihedralTTA) and one.provenance["tta"] == 4
    assert not isinstance(calibrator, DihedralTTA) and calibrator.provenance["tta"] == 1
    assert stage_provenance(1, kind="regress", encoder="unet", allow_random_init=True, tta=8)["tta"] == 8
    assert stage_provenance(3, kind="regress", encoder="pixel", allow_random_init=True, tta=8)["tta"] == 1
    with pytest.raises(ConfigError, match="--tta must be one of 1, 4, 8"):
        InferConfig(stages=(1,), stage1_kind="regress", allow_random_init=True, tta=3).validate()


def test_pixel_norm_keeps_a_pixel_to_its_neighbourhood_and_old_checkpoints_keep_tile_norm(tmp_path):
    """`pixel` (ConvNeXt's LayerNorm) makes a block's output at a pixel depend on its 7x7 neighbourhood
    only, so a 32-px training crop and a 64-px tile see the same features; `tile` (one statistic over the
    image) does not. A checkpoint from before the choice was trained with `tile` and is rebuilt so."""
    from axion_ray.models.stage2 import ConvNeXtFiLMBlock

    torch.manual_seed(0)
    x = torch.randn(1, 8, 32, 32)
    far = x.clone()
    far[..., 20:, 20:] += 5.0  # changed only > 3 px away from the pixels compared below
    cond = torch.randn(1, 32)
    for norm, local in (("pixel", True), ("tile", False)):
        block = ConvNeXtFiLMBlock(8, 32, norm=norm)
        with torch.no_grad():
            same = torch.allclose(block(x, cond)[..., :16, :16], block(far, cond)[..., :16, :16])
        assert same is local, norm
    with pytest.raises(ValueError, match="unknown block norm"):
        ConvNeXtFiLMBlock(8, 32, norm="batch")

    s1, _, month, biome = _inputs(n=2, size=32)
    new = build_stage(1, kind="regress", encoder="unet", width=8, allow_random_init=True)
    assert new.norm == "pixel" and type(new.decoder.down[0].block.norm).__name__ == "PixelLayerNorm"
    config = {"stage": 1, "kind": "regress", "preset": "tiny", "encoder": "unet", "width": 8}
    torch.save({"model_state_dict": new.state_dict(), "config": {**config, "norm": new.norm}}, tmp_path / "new.pt")
    torch.save({"model_state_dict": new.state_dict(), "config": config}, tmp_path / "old.pt")  # no `norm`
    rebuilt, old = build_stage(1, checkpoint=str(tmp_path / "new.pt")), build_stage(1, checkpoint=str(tmp_path / "old.pt"))
    assert (rebuilt.norm, old.norm) == ("pixel", "tile") and isinstance(old.decoder.down[0].block.norm, torch.nn.GroupNorm)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(s1, month, biome), new(s1, month, biome))
