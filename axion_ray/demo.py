"""`axion-ray demo`: what the product does, end to end on a synthetic AOI, with embedded defaults.

synthesise an AOI (with a Stage-1-like prior in opt_v1), write its S1 as GeoTIFF scenes in three CRSs
with no-data wedges and ingest them onto one grid → a short Stage 2 training on Ray Train (on
separate synthetic train/validation AOIs) → select/export the best checkpoint → Stages 2 and 3 on Ray
Data (local Ray) → metrics of every stage against the truth → quicklook PNG → blended GeoTIFF mosaics
→ NPZ export.
Without pretrained TerraMind weights on disk, Stage 3 (and Stage 1) run with random weights: allowed
here, printed loudly and recorded in the outputs' provenance. With weights found locally, Stage 1 runs
too, on a second copy of the AOI. Each later capability (training) adds its step here.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from axion_ray.config import InferConfig, SynthConfig
from axion_ray.errors import WeightsNotFoundError
from axion_ray.metrics.evaluate import evaluate_store
from axion_ray.report import metrics_markdown, quicklook
from axion_ray.store.footprints import write_footprints
from axion_ray.store.geotiff import mosaic
from axion_ray.store.ingest import ingest_scenes
from axion_ray.store.npz import export_npz_dir
from axion_ray.store.scenes import scene_from_geotiff
from axion_ray.store.synth import synthesize_aoi
from axion_ray.store.synth_scenes import attach_reference, extent_geojson, write_synthetic_scenes

DEMO_AOI = SynthConfig(rows=4, cols=4, tile_size=64, overlap=8, seed=0)


def _terramind_available() -> bool:
    from axion_ray.models.builder import stage_provenance

    try:
        stage_provenance(1, "tiny")
        return True
    except WeightsNotFoundError:
        return False


def train_demo_refiner(out: Path, say: Callable[[str], None], epochs: int = 8) -> Path:
    """A short Stage 2 training on synthetic train/validation AOIs; returns the exported checkpoint."""
    from axion_ray.config import TrainConfig
    from axion_ray.train import train_stage
    from axion_ray.train.select import select_and_export

    # Two training AOIs, pooled: between them the seasons, the common biomes and water-rich ones (a
    # refiner that never saw water makes it worse; bench/RESULTS.md).
    trains = [synthesize_aoi(out / f"train{i}.zarr", SynthConfig(
        rows=6, cols=6, tile_size=64, seed=101 + i, months=tuple(range(1 + i, 13, 2)),
        biomes=(1, 4, 6, 7, 8, 9, 12, 13, 14, 15)), overwrite=True) for i in range(2)]
    val = synthesize_aoi(out / "val.zarr", SynthConfig(rows=3, cols=3, tile_size=64, seed=202), overwrite=True)
    cfg = TrainConfig(allow_random_init=True, epochs=epochs, batch_size=16, val_every_steps=8, workers=2)
    shutil.rmtree(out / "run_stage2", ignore_errors=True)  # a new demo replaces the last one, never resumes it
    train_stage([t.path for t in trains], val.path, out / "run_stage2", cfg, say=lambda line: say("      " + line))
    export = out / "stage2_best.pt"
    meta = select_and_export(out / "run_stage2", export, warn=lambda line: say("      " + line))
    best = meta["selected"]
    say(f"      selected step {best['step']}: composite {best['composite_score']:+.4f} "
        f"({'PASS' if best['constraints_pass'] else 'FAIL'}); report {out / 'stage2_best_REPORT.md'}")
    return export


def run_demo(out_dir: str | Path, say: Callable[[str], None] = print, timesteps: int = 1,
             train_epochs: int = 8) -> dict[str, Path]:
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
    attach_reference(store, synthetic)  # the synthetic truth and Stage-1 prior, on the ingested tiles
    syn = synthetic.attrs["synthetic"]
    fractions = store.valid_fractions()
    say(f"      {len(scenes['scenes'])} scenes ({', '.join(p.stem for p in scenes['scenes'])}) → {store.n_tiles} tiles, "
        f"CRS {store.crs}; valid fraction per tile {fractions.min():.2f}–{fractions.max():.2f}; months {syn['months']}, "
        f"biomes {syn['biomes']}; opt_v1 = synthetic Stage-1 prior")

    pretrained = _terramind_available()
    if not pretrained:
        say("      NOTE: no TerraMind weights on this machine — Stage 3 runs with RANDOM weights (a placeholder "
            "output, recorded as random_init in its provenance). Put weights in $AXION_RAY_WEIGHTS for real output.")
    say("[2/6] a short Stage 2 training on Ray Train (2 workers), then select/export the best checkpoint")
    checkpoint = train_demo_refiner(out, say, epochs=train_epochs)
    say("      Stages 2 and 3 on Ray Data (local Ray) with that checkpoint")
    cfg = InferConfig(stages=(2, 3), allow_random_init=True, timesteps=timesteps, batch_size=4, progress_interval_s=5,
                      stage2_checkpoint=str(checkpoint))
    summary = run_pipeline(store.path, cfg, say=lambda line: say("      " + line))
    say("      " + summary.to_text().replace("\n", "\n      "))
    outputs: dict[str, Path] = {"store": out / "aoi.zarr", "checkpoint": checkpoint,
                                "checkpoint_report": out / "stage2_best_REPORT.md"}
    if pretrained:
        say("      TerraMind weights found: Stage 1 on a copy of the AOI without the prior")
        s1_store = synthesize_aoi(out / "aoi_stage1.zarr", dataclasses.replace(DEMO_AOI, with_prior=False),
                                  overwrite=True)
        run_pipeline(s1_store.path, InferConfig(stages=(1,), timesteps=timesteps), say=lambda line: say("      " + line))
        outputs["store_stage1"] = out / "aoi_stage1.zarr"

    say("[3/6] metrics against s2_truth")
    for pred, baseline in (("opt_v1", None), ("opt_v2", "opt_v1"), ("opt_v3", "opt_v2")):
        result = evaluate_store(store, pred=pred, baseline=baseline, truth="s2_truth")
        (out / f"metrics_{pred}.json").write_text(json.dumps(result, indent=2))
        (out / f"metrics_{pred}.md").write_text(metrics_markdown(result))
        m = result["pred_metrics"]
        say(f"      {pred}: ndvi_rmse={m['ndvi_rmse']:.4f} evi_rmse={m['evi_rmse']:.4f} sam_rad={m['sam_rad']:.4f} "
            f"psnr_db={m['psnr_db']:.2f} ssim={m['ssim']:.4f}"
            + (f" composite={result['composite_score']:+.4f}" if "composite_score" in result else ""))
        outputs[f"metrics_{pred}"] = out / f"metrics_{pred}.json"
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
