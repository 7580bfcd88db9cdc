"""Stage 1s of several chain-bench runs, alone and averaged: what an ensemble of whole runs would give.

Why: the lead behind `train chain --stage1-members` (bench/RESULTS.md, (Y)). Each run directory given is
a `bench/chain_quality.py --out DIR` of the same configuration; their exported Stage 1s are scored on
the evaluation AOIs of the first (the same seeds in every run), one process, one view each, alone and as
the mean of every pair and of all:

    python bench/stage1_ensembles.py /tmp/axion_chain_U /tmp/axion_chain_U2 /tmp/axion_chain_U3 /tmp/axion_chain_X
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
from chain_quality import spectral, stage_predict

METRICS = ("ndvi_rmse", "evi_rmse", "sam_rad")


def main() -> None:
    import torch

    from axion_ray.models import build_stage
    from axion_ray.store.tile_store import TileStore

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="chain-bench output directories (their run/stage1.pt)")
    ap.add_argument("--val-seeds", default="9001,9002,9003")
    args = ap.parse_args()
    torch.set_num_threads(2)
    stores = {int(s): TileStore.open(args.runs[0] / f"val_{s}.zarr", mode="r") for s in args.val_seeds.split(",")}
    truth = {s: st.read("s2_truth", np.arange(st.n_tiles)) for s, st in stores.items()}
    preds = {}
    for run in args.runs:
        model = build_stage(1, checkpoint=str(run / "run" / "stage1.pt"))
        for s, st in stores.items():
            preds[run.name, s] = stage_predict(model, st)

    def means(members: tuple[str, ...]) -> list[float]:
        per_aoi = [spectral(np.mean([preds[m, s] for m in members], axis=0), truth[s]) for s in stores]
        return [float(np.mean([f[k] for f in per_aoi])) for k in METRICS]

    names = [run.name for run in args.runs]
    print("| Stage 1 of | NDVI RMSE | EVI RMSE | SAM (rad) |\n|---|---|---|---|")
    for k in sorted({1, 2, len(names)}):
        for members in itertools.combinations(names, k):
            print(f"| {' + '.join(members)} | " + " | ".join(f"{v:.4f}" for v in means(members)) + " |")


if __name__ == "__main__":
    main()
