"""Axion-Sat users' own directories, built here in their layouts as docs/AXION_SAT.md documents them:
their tiler's tiles (per-band keys, DN, NaN edges and cloud masks, month/biome rasters, row/col
sidecars) and their Stage 1 → Stage 2 chain (`<stem>_opt.npz` with `s2_b*` keys)."""

import json
import zipfile

import numpy as np
import pytest
import torch

from axion_ray.cli import main
from axion_ray.models import build_stage
from axion_ray.store import TileStore
from axion_ray.store.npz import import_npz_dir

SIZE = 32


def their_tile(directory, name, rng, *, month=7, biome=4, sidecar_month=None, row=0, col=0):
    """One tile as Axion-Sat's tiler writes it: savez_compressed, per-band keys, S2 in DN with NaN
    where cloud-masked or beyond the scene edge, S1 clipped at -30 dB, month/biome as rasters."""
    s1 = np.clip(rng.normal(-14, 4, (2, SIZE, SIZE)), -30, None).astype(np.float32)
    s2 = (rng.random((4, SIZE, SIZE)) * 3000 + 200).astype(np.float32)
    s1[:, :, -6:] = np.nan  # the scene's edge: padding of an edge tile
    s2[:, :, -6:] = np.nan
    s2[:, :5, :5] = np.nan  # a cloud
    biome_raster = np.full((SIZE, SIZE), biome, np.float32)
    biome_raster[:3] = 9  # a few pixels of another biome: the tile's biome is the common one
    np.savez_compressed(directory / f"{name}.npz", s1_vv=s1[0], s1_vh=s1[1], s2_b2=s2[0], s2_b3=s2[1], s2_b4=s2[2],
                        s2_b8=s2[3], month=np.full((SIZE, SIZE), month, np.float32), biome_code=biome_raster)
    sidecar = {"tile_id": name, "row": row, "col": col, "crs": "EPSG:32633",
               "geotransform": [500000.0 + col * 320, 10.0, 0.0, 5200000.0 - row * 320, 0.0, -10.0]}
    if sidecar_month is not None:
        sidecar["month"] = sidecar_month
    (directory / f"{name}.json").write_text(json.dumps(sidecar))
    return s1, s2


def test_their_tiles_import_and_export_back_unchanged(tmp_path, capsys):
    src = tmp_path / "tiles"
    src.mkdir()
    rng = np.random.default_rng(0)
    made = {f"tile_{r}_{c}": their_tile(src, f"tile_{r}_{c}", rng, row=r, col=c,
                                        sidecar_month=3 if (r, c) == (1, 1) else None)
            for r in range(2) for c in range(2)}
    report = import_npz_dir(src, tmp_path / "store.zarr")
    store = report.store
    meta = store.tile_meta()
    assert set(report.arrays) == {"s1", "s2_truth"}
    assert (meta["month"] == 7).all() and (meta["biome_code"] == 4).all()  # from the NPZ rasters
    assert any("tile_1_1.npz: month 7 in the NPZ, 3 in its sidecar; using 7" in w for w in report.warnings)
    order = [str(t) for t in meta["tile_id"]]
    assert [(int(r), int(c)) for r, c in zip(meta["tile_row"], meta["tile_col"])] == \
        [(int(t[5]), int(t[7])) for t in order]  # grid positions from the sidecars
    truth = store.read("s2_truth", np.arange(4))
    s1 = store.read("s1", np.arange(4))
    i = order.index("tile_0_1")
    np.testing.assert_allclose(truth[i], made["tile_0_1"][1] / 10000, rtol=1e-6)  # DN → reflectance, NaN kept
    np.testing.assert_array_equal(np.isnan(s1[i]), np.isnan(made["tile_0_1"][0]))

    out = tmp_path / "back"
    assert main(["export-npz", store.path, str(out), "--array", "s2_truth", "--layout", "bands"]) == 0
    back = np.load(out / "tile_0_1.npz")
    assert sorted(back.files) == ["s2_b2", "s2_b3", "s2_b4", "s2_b8"]
    np.testing.assert_allclose(back["s2_b8"], made["tile_0_1"][1][3], rtol=1e-5)  # DN again, as they came in
    with zipfile.ZipFile(out / "tile_0_1.npz") as z:
        assert all(info.compress_type == zipfile.ZIP_DEFLATED for info in z.infolist())
    side = json.loads((out / "tile_0_1.json").read_text())
    assert side["month"] == 7 and side["row"] == 0 and side["col"] == 1 and side["crs"] == "EPSG:32633"
    assert side["geotransform"][0] == 500320.0


def test_a_store_with_a_grid_exports_each_tiles_georeference(tmp_path, small_aoi):
    assert main(["export-npz", small_aoi.path, str(tmp_path / "out"), "--array", "s1", "--layout", "bands"]) == 0
    side = json.loads((tmp_path / "out" / "tile_0001.json").read_text())
    x0, px, _, y0, _, py = TileStore.open(small_aoi.path).transform
    stride = small_aoi.height - small_aoi.overlap
    assert side["crs"] == small_aoi.crs and side["geotransform"][:4] == [x0 + stride * px * side["col"], px, 0.0,
                                                                         y0 + stride * py * side["row"]]
    assert sorted(np.load(tmp_path / "out" / "tile_0001.npz").files) == ["s1_vh", "s1_vv"]


def test_their_stage1_to_stage2_chain_runs_on_infer_npz(local_ray, tmp_path, capsys):
    """Their tiles → our Stage 1 writing their Stage 1 names and keys (`<stem>_opt.npz`, `s2_b*`) →
    our Stage 2 on that directory, with their `--device cuda:0` on a machine without CUDA."""
    tiles, stage1_out, stage2_out = tmp_path / "tiles", tmp_path / "stage1", tmp_path / "stage2"
    tiles.mkdir()
    rng = np.random.default_rng(1)
    for k in range(3):
        their_tile(tiles, f"s1_tile_{k}", rng, row=0, col=k)
    stage1 = build_stage(1, kind="regress", encoder="unet", width=8, allow_random_init=True)
    torch.save({"model_state_dict": stage1.state_dict(),
                "config": {"stage": 1, "kind": "regress", "preset": "tiny", "encoder": "unet", "width": 8,
                           "norm": stage1.norm}},
               tmp_path / "s1.pt")
    stage2 = build_stage(2, allow_random_init=True)
    torch.save({"model_state_dict": stage2.state_dict(), "config": {"stage": 2, "preset": "tiny"}}, tmp_path / "s2.pt")

    assert main(["infer-npz", "--stage", "1", "--checkpoint", str(tmp_path / "s1.pt"), "--input_dir", str(tiles),
                 "--output_dir", str(stage1_out), "--output-suffix", "_opt", "--layout", "bands",
                 "--device", "cuda:0"]) == 0
    err = capsys.readouterr().err
    if not torch.cuda.is_available():
        assert "CUDA not available; cuda:0 → cpu" in err
    assert sorted(p.name for p in stage1_out.glob("*.npz")) == [f"s1_tile_{k}_opt.npz" for k in range(3)]
    opt = np.load(stage1_out / "s1_tile_0_opt.npz")
    assert sorted(opt.files) == ["s2_b2", "s2_b3", "s2_b4", "s2_b8"]
    assert np.isnan(opt["s2_b2"][:, -6:]).all() and np.isfinite(opt["s2_b2"][:, :-6]).all()  # no-data stays

    assert main(["infer-npz", "--stage", "2", "--checkpoint", str(tmp_path / "s2.pt"), "--input_dir", str(stage1_out),
                 "--output_dir", str(stage2_out), "--device", "cpu"]) == 0
    v2 = np.load(stage2_out / "s1_tile_0_opt.npz")["opt_v2"]
    v1 = np.stack([opt[f"s2_b{b}"] for b in (2, 3, 4, 8)])
    np.testing.assert_allclose(v2, v1, atol=1e-6, equal_nan=True)  # an untrained refiner returns its input
    assert json.loads((stage2_out / "s1_tile_0_opt.json").read_text())["month"] == 7


@pytest.mark.parametrize("device", ["tpu", "cuda:x"])
def test_a_device_string_that_is_not_one_is_refused(tmp_path, capsys, device):
    src = tmp_path / "in"
    src.mkdir()
    np.savez(src / "t.npz", opt_v1=np.full((4, 32, 32), 0.1, np.float32))
    assert main(["infer-npz", "--allow-random-init", "--input_dir", str(src), "--output_dir", str(tmp_path / "o"),
                 "--device", device]) == 2
    assert "device must be auto, cpu, cuda or cuda:N" in capsys.readouterr().err


def test_their_stage3_layout_pairs_two_directories_and_tags_quality(local_ray, tmp_path, capsys):
    """`--opt-v2-dir` + `--s1-dir`, tiles paired by name; outputs `opt_final` and `opt_v3` with their
    `quality_status` (SAR agreement ≥ 0.6: production, else preview-only); a tile without its pair fails
    alone with the reason."""
    opt_dir, s1_dir, out = tmp_path / "stage2_outputs", tmp_path / "s1", tmp_path / "stage3_outputs"
    opt_dir.mkdir()
    s1_dir.mkdir()
    rng = np.random.default_rng(3)
    for k in range(3):
        their_tile(s1_dir, f"tile_{k}", rng, col=k)
    for k in range(4):  # tile_3 has no S1 tile
        np.savez_compressed(opt_dir / f"tile_{k}.npz", opt_v2=(rng.random((4, SIZE, SIZE)) * 0.3).astype(np.float32))
        (opt_dir / f"tile_{k}.json").write_text(json.dumps({"month": 5, "biome_code": 12}))
    stage3 = build_stage(3, kind="regress", encoder="unet", width=8, allow_random_init=True)
    torch.save({"model_state_dict": stage3.state_dict(),
                "config": {"stage": 3, "kind": "regress", "preset": "tiny", "encoder": "unet", "width": 8,
                           "norm": stage3.norm}},
               tmp_path / "s3.pt")
    code = main(["infer-npz", "--stage", "3", "--checkpoint", str(tmp_path / "s3.pt"), "--opt-v2-dir", str(opt_dir),
                 "--s1-dir", str(s1_dir), "--output_dir", str(out), "--device", "cpu"])
    stdout = capsys.readouterr().out
    assert code == 1 and "tile_3.npz failed: no S1 tile of the same name" in stdout
    assert sorted(p.name for p in out.glob("*.npz")) == [f"tile_{k}.npz" for k in range(3)]
    result = np.load(out / "tile_0.npz")
    assert sorted(result.files) == ["opt_final", "opt_v3"]
    v2 = np.load(opt_dir / "tile_0.npz")["opt_v2"]
    valid = np.isfinite(result["opt_final"])  # NaN where the S1 tile has no data
    np.testing.assert_allclose(result["opt_final"][valid], v2[valid], atol=1e-6)  # untrained grounding: identity
    side = json.loads((out / "tile_0.json").read_text())
    assert side["month"] == 5 and side["quality_status"] in ("production", "preview-only")
    assert 0 <= side["sar_agreement"] <= 1 and side["ars_s_v1_certified"] == (side["quality_status"] == "production")
    assert main(["infer-npz", "--stage", "3", "--checkpoint", str(tmp_path / "s3.pt"), "--opt-v2-dir", str(opt_dir),
                 "--output_dir", str(out)]) == 2  # half a pair


def test_sar_agreement_is_high_for_shared_edges_and_low_for_unrelated_ones():
    from axion_ray.metrics.geometry import sar_agreement

    yy, xx = np.mgrid[:64, :64]
    field = ((xx > 20) & (yy > 30)).astype(np.float32)
    optical = np.stack([0.05 + 0.1 * field] * 4)
    s1 = np.stack([-20 + 10 * field, -26 + 10 * field])
    noise = np.random.default_rng(0).normal(-15, 3, (2, 64, 64))
    assert sar_agreement(optical, s1) > 0.9 > 0.6 > sar_agreement(optical, noise)


def their_stage2_checkpoint(path, *, fp16=True):
    """A checkpoint laid out as Axion-Sat's train_stage2.py saves `Stage2ModelWithMetadata` (and their
    export_stage2_best.py converts to fp16): their module names, small shapes."""
    shapes = {
        "input_fusion.weight": (4, 8, 1, 1), "input_fusion.bias": (4,),
        "metadata_embed.biome_embed.weight": (16, 64), "metadata_embed.proj.0.weight": (4, 128),
        "metadata_embed.proj.0.bias": (4,),
        "prithvi_refiner.prithvi.base_model.model.encoder.patch_embed.proj.weight": (32, 6, 1, 16, 16),
        "prithvi_refiner.prithvi.base_model.model.encoder.blocks.0.attn.qkv.base_layer.weight": (96, 32),
        "prithvi_refiner.prithvi.base_model.model.encoder.blocks.0.attn.qkv.lora_A.default.weight": (8, 32),
        "prithvi_refiner.input_proj.weight": (6, 4, 1, 1),
        "prithvi_refiner.refinement_head.stem.weight": (16, 32, 1, 1),
        "prithvi_refiner.refinement_head.head.weight": (4, 16, 1, 1),
    }
    state = {k: torch.randn(s).half() if fp16 else torch.randn(s) for k, s in shapes.items()}
    obj = {"model_state_dict": state, "optimizer_state_dict": {}, "epoch": 3, "best_val_loss": 0.02,
           "config": {"stage2": {"lora_r": 8}, "training": {"lr": 1e-4}}}
    if fp16:
        obj["quantization_info"] = {"dtype": "fp16", "fp16_parameters": sum(t.numel() for t in state.values()),
                                    "non_fp16_parameters": 0, "compression_ratio": 2.0}
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("fp16", [True, False])
def test_their_stage2_checkpoint_is_one_line_naming_what_cannot_be_matched(tmp_path, capsys, fp16):
    ckpt = their_stage2_checkpoint(tmp_path / "best_fp16.pt", fp16=fp16)
    (tmp_path / "tiles").mkdir()  # their Stage 1 output: per-band optical keys, no S1 → opt_v1
    bands = np.random.default_rng(0).random((4, SIZE, SIZE), dtype=np.float32) * 0.3
    np.savez_compressed(tmp_path / "tiles" / "t0_opt.npz", **{f"s2_b{b}": bands[i] for i, b in enumerate((2, 3, 4, 8))})
    code = main(["infer-npz", "--stage", "2", "--checkpoint", str(ckpt), "--input_dir", str(tmp_path / "tiles"),
                 "--output_dir", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "Axion-Sat's Stage 2 model (Stage2ModelWithMetadata)" in err and ("(fp16 export)" in err) == fp16
    for part in ("prithvi_refiner.prithvi.* (3 tensors", "prithvi_refiner.refinement_head.* (2 tensors",
                 "metadata_embed.* (3 tensors", "input_fusion.* (2 tensors", "axion-ray train stage2"):
        assert part in err
    assert not (tmp_path / "out").exists()
