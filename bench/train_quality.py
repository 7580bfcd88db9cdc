"""Does Stage 2 learn? Train on one synthetic AOI, evaluate on another, against the Stage 1 prior.

Trains the tiny refiner on Ray Train (2 CPU workers) on a training store and measures it on a separate
validation store (another seed: other months, biomes and land cover). Prints the Stage 1 prior vs
trained Stage 2 table; the last line is `stage2 ndvi_rmse=X evi_rmse=Y sam_rad=Z constraints=PASS|FAIL`.
Goal (the Axion-Sat Stage 2 figures): NDVI RMSE <= 0.0625, EVI RMSE <= 0.076, SAM <= 0.131 rad.

    python bench/train_quality.py [--epochs 6] [--rows 12]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

GOALS = {"ndvi_rmse": 0.0625, "evi_rmse": 0.076, "sam_rad": 0.131}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=12, help="train AOI is rows x rows tiles of 64 px")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--val-every", type=int, default=25)
    args = parser.parse_args()

    from axion_ray.config import SynthConfig, TrainConfig
    from axion_ray.store.synth import synthesize_aoi
    from axion_ray.train import train_stage
    from axion_ray.train.select import select_and_export

    work = Path(tempfile.mkdtemp(prefix="axion-train-"))
    try:
        # The training AOI spans the seasons and common biomes, as a real training set does; validation
        # is an independent AOI (another seed: other land cover, parcels, months subset, noise).
        train = synthesize_aoi(work / "train.zarr", SynthConfig(
            rows=args.rows, cols=args.rows, tile_size=64, seed=101, months=tuple(range(1, 13)),
            biomes=(1, 2, 4, 5, 6, 7, 8, 12, 13, 15)))
        val = synthesize_aoi(work / "val.zarr", SynthConfig(rows=6, cols=6, tile_size=64, seed=202))
        print(f"train: {train.n_tiles} tiles, months {train.attrs['synthetic']['months']}, biomes "
              f"{train.attrs['synthetic']['biomes']}; val: {val.n_tiles} tiles, months "
              f"{val.attrs['synthetic']['months']}, biomes {val.attrs['synthetic']['biomes']}")
        start = time.time()
        cfg = TrainConfig(allow_random_init=True, epochs=args.epochs, batch_size=args.batch_size,
                          val_every_steps=args.val_every, workers=2)
        train_stage(train.path, val.path, work / "run", cfg, say=print)
        elapsed = time.time() - start
        meta = select_and_export(work / "run", work / "best.pt")
        m = meta["selected"]["metrics"]
        pred, base, geo = m["pred"], m["baseline"], m["geometry"]
        print(f"\ntraining + validation: {elapsed:.0f} s on 2 CPU workers; selected step {meta['selected']['step']}")
        print("| metric | Stage 1 prior | Stage 2 trained | goal |\n|---|---|---|---|")
        for k in ("ndvi_rmse", "evi_rmse", "sam_rad"):
            print(f"| {k} | {base[k]:.4f} | {pred[k]:.4f} | <= {GOALS[k]} |")
        for k in ("edge_disp_mean_px", "edge_disp_max_px", "edge_ratio"):
            print(f"| {k} | - | {geo[k]:.3f} | |")
        print(f"composite_score {meta['selected']['composite_score']:+.4f}")
        verdict = "PASS" if m["constraints_pass"] else "FAIL"
        print(f"stage2 ndvi_rmse={pred['ndvi_rmse']:.4f} evi_rmse={pred['evi_rmse']:.4f} sam_rad={pred['sam_rad']:.4f} "
              f"constraints={verdict}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
