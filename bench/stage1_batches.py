"""Stage 1's batches, probed: the same regression Stage 1 and loss, trained in a plain loop on the chain
bench's Stage 1 training AOIs, three ways, scored on its evaluation AOIs (a lead for issue 17).

- `chain`: what `train chain` does per step on 2 CPU workers, in one process — 32 whole tiles a step,
  600 steps, warm-up then cosine decay (`train/base.warmup_cosine`);
- `tiles`: 16 whole tiles a step at a constant learning rate, for `--seconds`;
- `crops`: 64 random 32-px crops from 64 tiles a step (the pixels of 16 tiles), same time.

Needs the data of a finished `python bench/chain_quality.py` run (`--data`, its `--out`). Prints one
line per way: steps, seconds, mean NDVI RMSE / EVI RMSE / SAM over the evaluation AOIs.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch


def load(path: Path) -> tuple[np.ndarray, ...]:
    from axion_ray.store.tile_store import TileStore

    store = TileStore.open(path, mode="r")
    index, meta = np.arange(store.n_tiles), store.tile_meta()
    return (store.read("s1", index), store.read("s2_truth", index), meta["month"].astype(np.int64),
            meta["biome_code"].astype(np.int64))


def train(way: str, data: tuple[np.ndarray, ...], seconds: float, seed: int = 0) -> tuple[torch.nn.Module, int, float]:
    from axion_ray.config import TrainConfig
    from axion_ray.models import build_stage
    from axion_ray.train.base import warmup_cosine
    from axion_ray.train.loop import RegressTask

    s1, truth, month, biome = data
    task = RegressTask(dataclasses.asdict(TrainConfig(stage=1, kind="regress", encoder="unet")), 1)
    torch.manual_seed(seed)
    model = build_stage(1, kind="regress", encoder="unet", allow_random_init=True)
    model.start_from(np.nanmean(truth, axis=(0, 2, 3)))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    schedule = warmup_cosine(optimizer, 600, warmup_steps=20) if way == "chain" else None
    rng = np.random.default_rng(seed)
    start, steps, n = time.perf_counter(), 0, len(s1)
    while (steps < 600) if way == "chain" else (time.perf_counter() - start < seconds):
        if way == "crops":
            i, y, x = rng.integers(0, n, 64), rng.integers(0, 33, 64), rng.integers(0, 33, 64)
            batch = {"s1": np.stack([s1[a, :, u:u + 32, v:v + 32] for a, u, v in zip(i, y, x)]),
                     "s2_truth": np.stack([truth[a, :, u:u + 32, v:v + 32] for a, u, v in zip(i, y, x)])}
        else:
            i = rng.integers(0, n, 32 if way == "chain" else 16)
            batch = {"s1": s1[i], "s2_truth": truth[i]}
        batch.update(month=month[i], biome_code=biome[i])
        loss, _ = task.loss(model, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()},
                            torch.device("cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        steps += 1
    return model.eval(), steps, time.perf_counter() - start


def main() -> None:
    from chain_quality import spectral

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/axion_chain_quality")
    ap.add_argument("--val-seeds", default="9001,9002,9003")
    ap.add_argument("--seconds", type=float, default=300.0)
    ap.add_argument("--ways", default="chain,tiles,crops")
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = load(Path(args.data) / "run" / "data" / "train_stage1.zarr")
    evals = [load(Path(args.data) / f"eval_{s}.zarr") for s in args.val_seeds.split(",")]
    for way in args.ways.split(","):
        model, steps, took = train(way, data, args.seconds)
        scores = []
        for s1, truth, month, biome in evals:
            with torch.no_grad():
                pred = model(torch.nan_to_num(torch.from_numpy(s1), nan=-20.0), torch.from_numpy(month),
                             torch.from_numpy(biome)).numpy()
            m = spectral(pred, truth)
            scores.append((m["ndvi_rmse"], m["evi_rmse"], m["sam_rad"]))
        ndvi, evi, sam = np.mean(scores, axis=0)
        print(f"stage1_batches way={way} steps={steps} seconds={took:.0f} ndvi={ndvi:.4f} evi={evi:.4f} sam={sam:.4f}",
              flush=True)


if __name__ == "__main__":
    main()
