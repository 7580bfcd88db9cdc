"""How much room a trained chain leaves Stages 2 and 3, measured on a chain bench run (issue 17).

Why: over the chain bench's runs Stage 2 moves `opt_v1` by at most ±0.00013 in each mean, and Stage 3
by a few 1e-4. Two questions decide whether a better later stage is worth building:

1. *What could Stage 2 learn from `opt_v1` alone?* Stage 3's recipe — one per-pixel network on pixels
   drawn across every training tile at each step, which is how Stage 3 learns at all (RESULTS (F)) —
   trained here on the run's Stage-2 training store (`opt_v1` where Stage 1 never trained, month,
   biome) and scored on the evaluation AOIs, at several step counts, with and without month and biome.
   It is an upper bound on Stage 2's *spectral* correction, the only kind its input allows.
2. *Where is `opt_v1`'s NDVI error, and could a later stage reach it?* The synthesiser replays each
   pixel's land-cover class and crop parcel (`store.synth.replay_tiles`). Printed: each class's share of
   the squared error; for crops, how much of it is one error shared by a parcel (Stage 1 misjudging the
   parcel's greenness) rather than pixel to pixel; and crop NDVI RMSE from a linear read, fitted on two
   evaluation AOIs and scored on the third, of segment means of `opt_v1`'s NDVI and S1 (VV and VH − VV)
   — over the true parcels (an oracle), and over segments found in `opt_v1` (scikit-image's
   felzenszwalb and SLIC), what a later stage could do without the map.

    python bench/later_stage_room.py --out DIR [--json F]

DIR is a `bench/chain_quality.py --out DIR` run (its `run/` and `eval_<seed>.zarr`); its `opt_v1` is
what its last evaluation wrote (re-score with `--evaluate-only` to choose the views). ~4 minutes here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from chain_quality import eval_config, spectral  # noqa: E402  the bench's own AOIs and figures

METRICS = ("ndvi_rmse", "evi_rmse", "sam_rad")
CEILING_STEPS = (200, 600, 1500)
PIXELS_PER_STEP = 32_768  # as Stage 3's calibrator (TrainConfig.pixel_batch)


def _means(per_aoi: list[dict]) -> list[float]:
    return [float(np.mean([p[k] for p in per_aoi])) for k in METRICS]


def _read(path: Path, *arrays: str):
    from axion_ray.store.tile_store import TileStore

    store = TileStore.open(path, mode="r")
    idx = np.arange(store.n_tiles)
    meta = store.tile_meta()
    return [store.read(a, idx) for a in arrays] + [meta["month"].astype(np.int64), meta["biome_code"].astype(np.int64)]


def stage2_ceiling(train_store: Path, evals: dict[int, Path], steps: int, conditioned: bool, seed: int = 0) -> list[float]:
    """Means over the evaluation AOIs after a per-pixel log-gain network on `opt_v1` alone (its
    reflectance, log-reflectance and their 5x5 means; month and biome when `conditioned`) trains
    `steps` steps on the Stage-2 training store. Stage 3's calibrator with S1 taken out; written here
    because the library's calibrator always reads S1 (a bench probe, not a product model)."""
    import torch
    import torch.nn.functional as F

    from axion_ray.bands import N_BIOMES
    from axion_ray.models.regress import _box_mean
    from axion_ray.models.stage2 import image_features, month_features
    from axion_ray.train.losses import stage2_loss

    torch.manual_seed(seed)

    def per_pixel(opt_v1, month, biome):
        image = torch.from_numpy(np.nan_to_num(opt_v1)).clamp(0, 1)
        optical = image_features(image)
        cond = torch.cat([month_features(torch.from_numpy(month)), F.one_hot(torch.from_numpy(biome), N_BIOMES).float()], 1)
        cond = cond * float(conditioned)
        h, w = image.shape[-2:]
        feats = torch.cat([optical, _box_mean(optical, 5), cond[:, :, None, None].expand(-1, -1, h, w)], 1)
        return image, feats

    opt_v1, truth, month, biome = _read(train_store, "opt_v1", "s2_truth")
    image, feats = per_pixel(opt_v1, month, biome)
    rows = lambda t: t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])  # noqa: E731
    x, o, t = rows(feats), rows(image), rows(torch.from_numpy(truth))
    keep = torch.isfinite(t).all(1)
    x, o, t = x[keep], o[keep], t[keep]
    net = torch.nn.Sequential(torch.nn.Conv2d(x.shape[1], 64, 1), torch.nn.GELU(), torch.nn.Conv2d(64, 64, 1),
                              torch.nn.GELU(), torch.nn.Conv2d(64, 4, 1))
    torch.nn.init.zeros_(net[-1].weight)
    torch.nn.init.zeros_(net[-1].bias)  # untrained: returns opt_v1
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    for _ in range(steps):
        i = torch.randint(len(x), (PIXELS_PER_STEP,))
        xi, oi, ti = (a[i].T[None, :, :, None] for a in (x, o, t))  # (1, C, N, 1): pixels as a column
        pred = oi * torch.exp(torch.tanh(net(xi)))
        loss, _ = stage2_loss(pred, ti, oi, w_l1=1.0, w_sam=0.5, w_ndvi=2.0, w_evi=1.0, w_edge=0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    per_aoi = []
    with torch.no_grad():
        for path in evals.values():
            v1, tr, m, b = _read(path, "opt_v1", "s2_truth")
            image, feats = per_pixel(v1, m, b)
            per_aoi.append(spectral((image * torch.exp(torch.tanh(net(feats)))).clamp(0, 1).numpy(), tr))
    return _means(per_aoi)


def _segments(kind: str, opt_v1: np.ndarray) -> np.ndarray:
    """Segment labels per tile of `opt_v1`'s log-reflectance (scikit-image), (N, H, W)."""
    import warnings

    from skimage.segmentation import felzenszwalb, slic

    out = []
    for tile in np.log(np.clip(np.nan_to_num(opt_v1), 1e-3, None)).astype(np.float64):
        image = np.moveaxis(tile, 0, -1)
        if kind.startswith("felzenszwalb"):
            with warnings.catch_warnings():  # four bands are meant: it only warns that they are not RGB
                warnings.simplefilter("ignore", RuntimeWarning)
                out.append(felzenszwalb(image, scale=int(kind.split("-")[1]), sigma=0.5, min_size=30, channel_axis=-1))
        else:
            out.append(slic(image, n_segments=int(kind.split("-")[1]), compactness=0.1, channel_axis=-1, start_label=0))
    return np.stack(out)


def error_map(evals: dict[int, Path], segmentations=("felzenszwalb-10", "felzenszwalb-50", "slic-16", "slic-30")) -> dict:
    """Part 2 of the module docstring, over the evaluation AOIs."""
    from axion_ray.metrics.spectral import ndvi
    from axion_ray.store.synth import replay_tiles
    from axion_ray.store.synth_scene import CROPS, LAND_COVER

    aois = {}
    for seed, path in evals.items():
        opt_v1, truth, s1, _, _ = _read(path, "opt_v1", "s2_truth", "s1")
        cover, parcel = replay_tiles(eval_config(seed), "cover"), replay_tiles(eval_config(seed), "parcel")
        aois[seed] = dict(v1=ndvi(opt_v1), truth=ndvi(truth), s1=np.nan_to_num(s1), cover=cover, parcel=parcel, opt_v1=opt_v1)
    def segment_mean(labels: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Each pixel's mean of `values` over its tile's segment (`labels`, per tile), flattened."""
        _, group = np.unique((np.arange(len(labels))[:, None, None] * 10**6 + labels).ravel(), return_inverse=True)
        return (np.bincount(group, values.ravel()) / np.bincount(group))[group]

    shares, between = {}, {}
    for seed, a in aois.items():
        err = a["v1"] - a["truth"]
        ok = np.isfinite(err)
        shares[seed] = {LAND_COVER[c]: [float((err[ok & (a["cover"] == c)] ** 2).sum() / (err[ok] ** 2).sum()),
                                        float((a["cover"] == c).mean())] for c in range(len(LAND_COVER))}
        crops = ok & (a["cover"] == CROPS)  # one segment per parcel's valid crop pixels; the rest set aside
        shared = segment_mean(np.where(crops, a["parcel"], -1), np.where(crops, err, 0.0))[crops.ravel()]
        between[seed] = float(np.mean(shared ** 2) / np.mean(err[crops] ** 2))

    def crop_rmse(labels: dict[int, np.ndarray], columns) -> float:
        """Leave one AOI out: fit truth NDVI on crop pixels' features, score on the AOI left out."""
        feats, target, aoi = [], [], []
        for seed, a in aois.items():
            f = np.stack([a["v1"].ravel()] + [segment_mean(labels[seed], v) for v in
                                              (a["v1"], a["s1"][:, 1] - a["s1"][:, 0], a["s1"][:, 0])], 1)
            crops = (a["cover"] == CROPS).ravel() & np.isfinite(f).all(1) & np.isfinite(a["truth"].ravel())
            feats.append(f[crops][:, columns])
            target.append(a["truth"].ravel()[crops])
            aoi.append(np.full(crops.sum(), seed))
        feats, target, aoi = np.concatenate(feats), np.concatenate(target), np.concatenate(aoi)
        design = np.c_[feats, np.ones(len(feats))]
        pred = np.empty_like(target)
        for seed in aois:
            fit = np.linalg.lstsq(design[aoi != seed], target[aoi != seed], rcond=None)[0]
            pred[aoi == seed] = design[aoi == seed] @ fit
        return float(np.sqrt(np.mean((pred - target) ** 2)))

    whole = {seed: np.zeros_like(a["cover"]) for seed, a in aois.items()}
    parcels = {seed: a["parcel"] * 8 + a["cover"] for seed, a in aois.items()}  # a parcel's pixels of one class
    reads = {"opt_v1 as it is": crop_rmse(whole, [0]),
             "true parcels: segment mean of opt_v1": crop_rmse(parcels, [1]),
             "true parcels: segment means of opt_v1 and S1": crop_rmse(parcels, [0, 1, 2, 3])}
    for kind in segmentations:
        found = {seed: _segments(kind, a["opt_v1"]) for seed, a in aois.items()}
        reads[f"{kind} segments of opt_v1: segment means of opt_v1 and S1"] = crop_rmse(found, [0, 1, 2, 3])
    return {"error_share_by_class": shares, "crop_error_shared_by_parcel": between, "crop_ndvi_rmse_by_read": reads}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="a bench/chain_quality.py --out directory")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    out = Path(args.out)
    train_store = out / "run" / "data" / "train_stages23.zarr"
    evals = {int(p.name[len("eval_"):-len(".zarr")]): p for p in sorted(out.glob("eval_*.zarr"))}
    if not train_store.exists() or not evals:
        sys.exit(f"error: {out} holds no chain bench run (run/data/train_stages23.zarr, eval_<seed>.zarr); "
                 "run bench/chain_quality.py --out DIR first")
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    per_aoi = []
    for path in evals.values():
        v1, tr, _, _ = _read(path, "opt_v1", "s2_truth")
        per_aoi.append(spectral(v1, tr))
    record = {"opt_v1": _means(per_aoi), "stage2_ceiling": []}
    print("1. Stage 2's ceiling from opt_v1 alone (means over the evaluation AOIs: NDVI / EVI RMSE / SAM)")
    print("   opt_v1 as Stage 1 wrote it: " + " / ".join(f"{v:.4f}" for v in record["opt_v1"]))
    for conditioned in (True, False):
        for steps in CEILING_STEPS:
            means = stage2_ceiling(train_store, evals, steps, conditioned)
            record["stage2_ceiling"].append({"steps": steps, "conditioned": conditioned, "means": means})
            print(f"   per-pixel network, {steps:>5} steps, {'with' if conditioned else 'without'} month and biome: "
                  + " / ".join(f"{v:.4f}" for v in means), flush=True)
    record.update(error_map(evals))
    print("2. Where opt_v1's NDVI error is (share of squared error / share of pixels, per AOI)")
    for seed, shares in record["error_share_by_class"].items():
        print(f"   {seed}: " + ", ".join(f"{c} {e:.2f}/{p:.2f}" for c, (e, p) in shares.items())
              + f"; crops' error shared by the parcel: {record['crop_error_shared_by_parcel'][seed]:.0%}")
    print("   crop NDVI RMSE, linear read fitted on two AOIs and scored on the third:")
    for read, rmse in record["crop_ndvi_rmse_by_read"].items():
        print(f"     {rmse:.4f}  {read}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
