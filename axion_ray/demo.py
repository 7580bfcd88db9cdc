"""`axion-ray demo`: what the product does, end to end on a synthetic AOI, with embedded defaults.

synthesise an AOI, write its S1 as GeoTIFF scenes in three CRSs with no-data wedges and ingest them
onto one grid → train the chain on separate synthetic train/validation AOIs (Stage 1 regression from
S1 alone, its outputs written over the training AOIs, Stage 2 on them, Stage 3 grounding; each stage
selected by the composite score and exported) → Stages 1, 2 and 3 on Ray Data (local Ray) with those
checkpoints → metrics of every stage against the truth → quicklook PNG → blended GeoTIFF mosaics →
NPZ export. No stage runs on random weights: every output is a trained model's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from axion_ray.config import ChainConfig, InferConfig, SynthConfig
from axion_ray.metrics.evaluate import FLAT_BASELINE, evaluate_store
from axion_ray.report import metrics_markdown, quicklook
from axion_ray.store.footprints import write_footprints
from axion_ray.store.geotiff import mosaic
from axion_ray.store.ingest import ingest_scenes
from axion_ray.store.npz import export_npz_dir
from axion_ray.store.scenes import scene_from_geotiff
from axion_ray.store.synth import synthesize_aoi
from axion_ray.store.synth_scenes import attach_reference, extent_geojson, write_synthetic_scenes

DEMO_AOI = SynthConfig(rows=4, cols=4, tile_size=64, overlap=8, seed=0)


#: The demo's chain: short, on three training AOIs that between them hold the seasons and the common
#: and water-rich biomes (a model that never saw water makes it worse; bench/RESULTS.md). Stage 1
#: trains on the first and third (eight months), Stages 2 and 3 on its outputs over the second; every
#: stage is selected on two small validation AOIs together.
DEMO_CHAIN = ChainConfig(epochs=20, stage2_epochs=6, stage3_epochs=40, batch_size=16, val_every_steps=15, workers=2)
DEMO_TRAIN_AOIS = 3
DEMO_VAL_AOIS = 2


def train_demo_chain(out: Path, say: Callable[[str], None], chain: ChainConfig = DEMO_CHAIN) -> dict[int, Path]:
    """The chain trained on synthetic train/validation AOIs; returns each stage's exported checkpoint."""
    import shutil

    from axion_ray.train.chain import train_chain

    trains = [synthesize_aoi(out / f"train{i}.zarr", SynthConfig(
        rows=6, cols=6, tile_size=64, seed=101 + i, months=tuple(range(1 + i, 13, DEMO_TRAIN_AOIS)),
        biomes=(1, 4, 6, 7, 8, 9, 12, 13, 14, 15)), overwrite=True) for i in range(DEMO_TRAIN_AOIS)]
    vals = [synthesize_aoi(out / f"val{i}.zarr", SynthConfig(rows=3, cols=3, tile_size=64, seed=202 + i),
                           overwrite=True) for i in range(DEMO_VAL_AOIS)]
    shutil.rmtree(out / "run_chain", ignore_errors=True)  # a new demo replaces the last one, never resumes it
    summary = train_chain([t.path for t in trains], [v.path for v in vals], out / "run_chain", chain,
                          say=lambda line: say("      " + line))
    say(f"      chain report: {summary['report']}")
    return {int(k.removeprefix("stage")): Path(v) for k, v in summary["checkpoints"].items()}


def run_demo(out_dir: str | Path, say: Callable[[str], None] = print, chain: ChainConfig = DEMO_CHAIN
             ) -> dict[str, Path]:
    """Run the demo into `out_dir` (replacing an earlier demo there) and return its outputs."""
    from axion_ray.pipeline import run_pipeline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say(f"[1/6] synthesising a 4x4-tile AOI (64 px tiles, 8 px overlap), writing its S1 as GeoTIFF scenes in "
        f"three CRSs with no-data wedges, and ingesting them onto one grid → {out / 'aoi.zarr'}")
    synthetic = synthesize_aoi(out / "synthetic.zarr", DEMO_AOI, overwrite=True)
    scenes = write_synthetic_scenes(synthetic, out / "scenes")
    store = ingest_scenes([scene_from_geotiff(p) for p in scenes["scenes"]], out / "aoi.zarr",
                          aoi=extent_geojson(synthetic, out / "scenes" / "extent.geojson"), crs=synthetic.crs,
                          resolution=DEMO_AOI.pixel_size_m, tile_size=DEMO_AOI.tile_size, overlap=DEMO_AOI.overlap,
                          overwrite=True)
    attach_reference(store, synthetic, arrays=("s2_truth",))  # the synthetic truth, on the ingested tiles
    syn = synthetic.attrs["synthetic"]
    fractions = store.valid_fractions()
    say(f"      {len(scenes['scenes'])} scenes ({', '.join(p.stem for p in scenes['scenes'])}) → {store.n_tiles} tiles, "
        f"CRS {store.crs}; valid fraction per tile {fractions.min():.2f}–{fractions.max():.2f}; months {syn['months']}, "
        f"biomes {syn['biomes']}")

    say("[2/6] training the chain on Ray Train (2 workers): Stage 1 from S1 alone, Stage 2 on its outputs, "
        "Stage 3 grounding; each selected by the composite score and exported")
    checkpoints = train_demo_chain(out, say, chain)
    say("      Stages 1, 2 and 3 on Ray Data (local Ray) with those checkpoints, from S1 alone")
    cfg = InferConfig(stages=(1, 2, 3), batch_size=16, progress_interval_s=5,
                      **{f"stage{s}_checkpoint": str(p) for s, p in checkpoints.items()})
    summary = run_pipeline(store.path, cfg, say=lambda line: say("      " + line))
    say("      " + summary.to_text().replace("\n", "\n      "))
    outputs: dict[str, Path] = {"store": out / "aoi.zarr", "chain_report": out / "run_chain" / "CHAIN_REPORT.md",
                                **{f"checkpoint_stage{s}": p for s, p in checkpoints.items()}}

    say("[3/6] metrics against s2_truth: each stage against the one before; the chain's output against the "
        "best flat image (the truth's mean spectrum) — the composite that says the product reads the land from S1")
    for pred, baseline in (("opt_v1", None), ("opt_v2", "opt_v1"), ("opt_v3", "opt_v2"), ("opt_v3", FLAT_BASELINE)):
        result = evaluate_store(store, pred=pred, baseline=baseline, truth="s2_truth")
        name = f"{pred}_vs_flat" if baseline == FLAT_BASELINE else pred
        (out / f"metrics_{name}.json").write_text(json.dumps(result, indent=2))
        (out / f"metrics_{name}.md").write_text(metrics_markdown(result))
        m = result["pred_metrics"]
        say(f"      {name}: ndvi_rmse={m['ndvi_rmse']:.4f} evi_rmse={m['evi_rmse']:.4f} sam_rad={m['sam_rad']:.4f} "
            f"psnr_db={m['psnr_db']:.2f} ssim={m['ssim']:.4f}"
            + (f" composite={result['composite_score']:+.4f}" if "composite_score" in result else ""))
        outputs[f"metrics_{name}"] = out / f"metrics_{name}.json"
    say("[4/6] quicklook PNG (RGB of truth, opt_v1, opt_v2, opt_v3)")
    outputs["quicklook"] = quicklook(store, out / "quicklook.png")
    say("[5/6] blended Cloud-Optimized GeoTIFF mosaics, and every tile's footprint for a GIS")
    for name in ("opt_v2", "opt_v3"):
        outputs[f"mosaic_{name}"] = mosaic(store, name, out / f"{name}.tif", overwrite=True)  # replaces the last demo's
    outputs["footprints"] = write_footprints(store, out / "tiles.geojson", overwrite=True)
    say("[6/6] exporting opt_v2 as Axion-Sat NPZ tiles")
    outputs["npz"] = export_npz_dir(store, out / "npz_opt_v2", "opt_v2", overwrite=True).directory
    say("outputs:")
    for name, path in outputs.items():
        say(f"  {name:16s} {path}")
    return outputs
