"""`axion-ray demo`: what the product does, end to end on a synthetic AOI, with embedded defaults.

synthesise an AOI (with a Stage-1-like prior in opt_v1) → Stages 2 and 3 on Ray Data (local Ray) →
metrics of every stage against the truth → quicklook PNG → blended GeoTIFF mosaics → NPZ export.
Without pretrained TerraMind weights on disk, Stage 3 (and Stage 1) run with random weights: allowed
here, printed loudly and recorded in the outputs' provenance. With weights found locally, Stage 1 runs
too, on a second copy of the AOI. Each later capability (training) adds its step here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

from axion_ray.config import InferConfig, SynthConfig
from axion_ray.errors import WeightsNotFoundError
from axion_ray.metrics.evaluate import evaluate_store
from axion_ray.report import metrics_markdown, quicklook
from axion_ray.store.geotiff import mosaic
from axion_ray.store.npz import export_npz_dir
from axion_ray.store.synth import synthesize_aoi

DEMO_AOI = SynthConfig(rows=4, cols=4, tile_size=64, overlap=8, seed=0)


def _terramind_available() -> bool:
    from axion_ray.models.builder import stage_provenance

    try:
        stage_provenance(1, "tiny")
        return True
    except WeightsNotFoundError:
        return False


def run_demo(out_dir: str | Path, say: Callable[[str], None] = print, timesteps: int = 1) -> dict[str, Path]:
    """Run the demo into `out_dir` (replacing an earlier demo there) and return its outputs."""
    from axion_ray.pipeline import run_pipeline

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say(f"[1/6] synthesising a 4x4-tile AOI (64 px tiles, 8 px overlap) → {out / 'aoi.zarr'}")
    store = synthesize_aoi(out / "aoi.zarr", DEMO_AOI, overwrite=True)
    syn = store.attrs["synthetic"]
    say(f"      months {syn['months']}, biomes {syn['biomes']}, {store.n_tiles} tiles, CRS {store.crs}; "
        "opt_v1 = synthetic Stage-1 prior")

    pretrained = _terramind_available()
    if not pretrained:
        say("      NOTE: no TerraMind weights on this machine — Stage 3 runs with RANDOM weights (a placeholder "
            "output, recorded as random_init in its provenance). Put weights in $AXION_RAY_WEIGHTS for real output.")
    say("[2/6] Stages 2 and 3 on Ray Data (local Ray); Stage 2 untrained until a checkpoint is given")
    cfg = InferConfig(stages=(2, 3), allow_random_init=True, timesteps=timesteps, batch_size=4, progress_interval_s=5)
    summary = run_pipeline(store.path, cfg, say=lambda line: say("      " + line))
    say("      " + summary.to_text().replace("\n", "\n      "))
    outputs: dict[str, Path] = {"store": out / "aoi.zarr"}
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
    say("[5/6] blended GeoTIFF mosaics")
    for name in ("opt_v2", "opt_v3"):
        outputs[f"mosaic_{name}"] = mosaic(store, name, out / f"{name}.tif")
    say("[6/6] exporting opt_v2 as Axion-Sat NPZ tiles")
    outputs["npz"] = export_npz_dir(store, out / "npz_opt_v2", "opt_v2").directory
    say("outputs:")
    for name, path in outputs.items():
        say(f"  {name:16s} {path}")
    return outputs
