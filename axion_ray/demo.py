"""`axion-ray demo`: run what the product can do end to end on a synthetic AOI, with embedded defaults.

Today: synthesise an AOI → status → metrics of the Stage 1 prior → quicklook PNG → NPZ export.
Each later capability (training, three-stage inference on Ray) adds its step here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from axion_ray.config import SynthConfig
from axion_ray.metrics.evaluate import evaluate_store
from axion_ray.report import metrics_markdown, quicklook
from axion_ray.store.npz import export_npz_dir
from axion_ray.store.synth import synthesize_aoi


def run_demo(out_dir: str | Path, say: Callable[[str], None] = print) -> dict[str, Path]:
    """Run the demo into `out_dir` (replacing an earlier demo there) and return its outputs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say(f"[1/4] synthesising a 4x4-tile AOI (64 px tiles, 8 px overlap) → {out / 'aoi.zarr'}")
    store = synthesize_aoi(out / "aoi.zarr", SynthConfig(rows=4, cols=4, tile_size=64, overlap=8, seed=0), overwrite=True)
    say(f"      months {store.attrs['synthetic']['months']}, biomes {store.attrs['synthetic']['biomes']}, "
        f"{store.n_tiles} tiles, CRS {store.crs}")
    say("[2/4] measuring the Stage 1 prior (opt_v1) against s2_truth")
    result = evaluate_store(store, pred="opt_v1", baseline=None, truth="s2_truth")
    (out / "metrics_opt_v1.json").write_text(json.dumps(result, indent=2))
    (out / "metrics_opt_v1.md").write_text(metrics_markdown(result))
    m = result["pred_metrics"]
    say(f"      ndvi_rmse={m['ndvi_rmse']:.4f} evi_rmse={m['evi_rmse']:.4f} sam_rad={m['sam_rad']:.4f} "
        f"psnr_db={m['psnr_db']:.2f} ssim={m['ssim']:.4f}")
    say("[3/4] quicklook PNG")
    png = quicklook(store, out / "quicklook.png")
    say("[4/4] exporting opt_v1 as Axion-Sat NPZ tiles")
    report = export_npz_dir(store, out / "npz_opt_v1", "opt_v1")
    outputs = {"store": out / "aoi.zarr", "metrics": out / "metrics_opt_v1.json", "report": out / "metrics_opt_v1.md",
               "quicklook": png, "npz": report.directory}
    say("outputs:")
    for name, path in outputs.items():
        say(f"  {name:10s} {path}")
    return outputs
