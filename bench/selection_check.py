"""Does the chain's selection AOI judge Stages 2 and 3 the way evaluation AOIs do? (issue 17)

Why: a later stage's change is a few 1e-4, and in run (Z) the selection AOI rejected every trained
Stage 3 checkpoint while the same checkpoints were better on all three evaluation means. Either the
selection AOI (8 x 8 tiles, every training biome) is unlike the evaluation AOIs (4 x 4, the
synthesiser's own two biomes), or the three evaluation AOIs are too few to say. This scores every
checkpoint that selection weighed for Stages 2 and 3 (`stage<N>_selection_metadata.json`) on three
sets: the run's selection AOIs (pooled by its chain), the run's evaluation AOIs, and a pool of fresh AOIs drawn exactly as the
evaluation AOIs are (`chain_quality.eval_config`; seeds used nowhere else), with a 95 % interval
from resampling the pool's AOIs; with `--select-seeds`, a fourth: fresh AOIs drawn as a selection
AOI is (`chain_quality.selection_config`, `--select-rows`), each alone and pooled — whether one
selection AOI's verdict is its draw's or its recipe's. Each stage's input is the exported stage before it, one view.

    python bench/selection_check.py --out DIR [--pool-seeds 7001-7016] [--json F]

DIR is a `bench/chain_quality.py --out DIR` run. The pool's stores are written into DIR
(`pool_<seed>.zarr`). ~1 minute here for 16 pool AOIs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from chain_quality import eval_config, seeds_arg, selection_config, selection_store, spectral, stage_predict, synth  # noqa: E402  the bench's own AOIs and figures

METRICS = ("ndvi_rmse", "evi_rmse", "sam_rad")


def _aoi(store) -> dict:
    idx = np.arange(store.n_tiles)
    meta = store.tile_meta()
    return {"store": store, "s1": store.read("s1", idx), "truth": store.read("s2_truth", idx),
            "month": meta["month"].astype(np.int64), "biome": meta["biome_code"].astype(np.int64)}


def _figures(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    scores = spectral(pred, truth)
    return np.array([scores[k] for k in METRICS])


def _change(before: list[np.ndarray], after: list[np.ndarray], resamples: int = 2000, seed: int = 0) -> dict:
    """Change in the means over AOIs (after − before), with a 95 % interval from resampling the AOIs
    (paired) where there are several."""
    per_aoi = np.array(after) - np.array(before)
    point = per_aoi.mean(axis=0)
    if len(per_aoi) < 4:
        return {k: [float(point[i])] for i, k in enumerate(METRICS)}
    draws = per_aoi[np.random.default_rng(seed).integers(0, len(per_aoi), (resamples, len(per_aoi)))].mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5], axis=0)
    return {k: [float(point[i]), float(low[i]), float(high[i])] for i, k in enumerate(METRICS)}


def check(out: Path, val_seeds: list[int], pool_seeds: list[int], select_seeds: list[int] = (),
          select_rows: int = 8) -> dict:
    import torch

    from axion_ray.models import build_stage
    from axion_ray.store.tile_store import TileStore

    # The run's own selection AOIs, as its chain recorded them (one path before (AF), a list after).
    chosen = json.loads((out / "run" / "chain_config.json").read_text())["val_store"]
    chosen = [Path(p) for p in ([chosen] if isinstance(chosen, str) else chosen)]
    clash = set(pool_seeds + list(select_seeds)) & set(val_seeds)
    clash |= {s for s in select_seeds if (out / selection_store(s)).resolve() in [p.resolve() for p in chosen]}
    if clash:
        raise SystemExit(f"seeds {sorted(clash)} are the run's own evaluation or selection AOIs; choose others")
    synth(out, [(f"pool_{s}.zarr", eval_config(s)) for s in pool_seeds if not (out / f"pool_{s}.zarr").exists()])
    synth(out, [(selection_store(s), selection_config(s, select_rows)) for s in select_seeds
                if not (out / selection_store(s)).exists()])
    paths = {"selection": chosen, "evaluation": [out / f"val_{s}.zarr" for s in val_seeds],
             "pool": [out / f"pool_{s}.zarr" for s in pool_seeds]}
    if select_seeds:  # more AOIs drawn as the selection AOIs are, each scored alone and pooled
        paths["selections"] = [out / selection_store(s) for s in select_seeds]
    sets = {name: [_aoi(TileStore.open(p, mode="r")) for p in group] for name, group in paths.items()}
    run = out / "run"
    stage1, stage2 = (build_stage(s, checkpoint=str(run / f"stage{s}.pt")) for s in (1, 2))

    def tensor(a):
        return torch.from_numpy(np.nan_to_num(a))

    def apply(stage: int, model, aoi: dict) -> np.ndarray:
        cond = (tensor(aoi["month"]), tensor(aoi["biome"]))
        if stage == 2:
            return model(tensor(aoi["opt_v1"]), *cond).numpy()
        return model(tensor(aoi["s1"]), tensor(aoi["opt_v2"]), *cond).numpy()

    with torch.no_grad():
        for aois in sets.values():
            for aoi in aois:
                aoi["opt_v1"] = stage_predict(stage1, aoi["store"])
                aoi["opt_v2"] = apply(2, stage2, aoi)
                # Each stage's input scored once: Stage 2's is opt_v1, Stage 3's opt_v2.
                aoi["input_figures"] = {2: _figures(aoi["opt_v1"], aoi["truth"]),
                                        3: _figures(aoi["opt_v2"], aoi["truth"])}
    result = {"pool_seeds": pool_seeds, "val_seeds": val_seeds, "select_seeds": list(select_seeds),
              "opt_v1": {name: np.mean([a["input_figures"][2] for a in aois], axis=0).tolist()
                         for name, aois in sets.items()},
              "stages": {}}
    for stage in (2, 3):
        meta = json.loads((run / f"stage{stage}_selection_metadata.json").read_text())
        rows = []
        for candidate in sorted(meta["candidates"], key=lambda c: c["step"]):
            model = build_stage(stage, checkpoint=candidate["path"])
            row = {"step": candidate["step"], "selected": candidate["path"] == meta["selected"]["path"],
                   "selection_composite": candidate["composite_score"]}
            with torch.no_grad():
                for name, aois in sets.items():
                    before = [a["input_figures"][stage] for a in aois]
                    after = [_figures(apply(stage, model, a), a["truth"]) for a in aois]
                    row[name] = _change(before, after)
                    if name == "selections":  # each AOI's own change: do draws of one recipe agree?
                        row["selections_each"] = (np.array(after) - np.array(before)).tolist()
            rows.append(row)
        result["stages"][stage] = rows
    return result


def cells(change: dict) -> str:
    return " | ".join(f"{v[0]:+.5f}" + (f" [{v[1]:+.5f}, {v[2]:+.5f}]" if len(v) == 3 else "") for v in change.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="a bench/chain_quality.py --out directory")
    ap.add_argument("--val-seeds", default="9001,9002,9003", help="the run's evaluation AOIs")
    ap.add_argument("--pool-seeds", default="7001-7016", help="fresh AOIs drawn as the evaluation AOIs are")
    ap.add_argument("--select-seeds", default="",
                    help="fresh AOIs drawn as a selection AOI is (chain_quality.selection_config), e.g. 8001-8006")
    ap.add_argument("--select-rows", type=int, default=8,
                    help="their size (8: the one selection AOI's of the runs before (AF))")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    out = Path(args.out)
    if not (out / "run" / "stage3_selection_metadata.json").exists():
        print(f"{out} holds no trained chain (run/stage3_selection_metadata.json); "
              "give the --out of a bench/chain_quality.py run", file=sys.stderr)
        raise SystemExit(2)
    import torch

    torch.set_num_threads(2)
    result = check(out, seeds_arg(args.val_seeds), seeds_arg(args.pool_seeds), seeds_arg(args.select_seeds), args.select_rows)
    print("\n| opt_v1, mean over | NDVI RMSE | EVI RMSE | SAM (rad) |\n|---|---|---|---|")
    for name, figures in result["opt_v1"].items():
        print(f"| {name} | " + " | ".join(f"{v:.4f}" for v in figures) + " |")
    print("\nChange each checkpoint makes to its stage's input (NDVI RMSE | EVI RMSE | SAM), per set of AOIs:")
    for stage, rows in result["stages"].items():
        for row in rows:
            mark = " (exported)" if row["selected"] else ""
            print(f"Stage {stage} step {row['step']}{mark}, selection composite {row['selection_composite']:+.5f}")
            for name in ("selection", "evaluation", "pool", "selections"):
                if name in row:
                    print(f"  {name:>10}: {cells(row[name])}")
            for seed, change in zip(result["select_seeds"], row.get("selections_each", [])):
                print(f"  {'select ' + str(seed):>10}: " + " | ".join(f"{v:+.5f}" for v in change))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
