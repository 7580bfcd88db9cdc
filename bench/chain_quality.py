"""SAR → optical, learned and measured: the chain trained from scratch, scored on AOIs it never saw.

What it does, in one run (2 CPU workers here; figures into bench/RESULTS.md):
1. Synthesises training AOIs that cover every biome the synthesiser draws and all twelve months —
   in sets: Stage 1 trains on `--stage1-sets` of them, Stages 2 and 3 on its outputs over `--later-sets`
   more (four: with one, what they learned of each biome came from one AOI and hurt elsewhere) —, the
   selection AOIs (`--select-seeds`: sixteen drawn as the evaluation AOIs are, the chain's validation
   stores, pooled, for checkpoint selection) and the evaluation AOIs (`--val-seeds`, never used in
   training or selection).
2. `train_chain` (Ray Train): Stage 1 (regression, S1 → opt_v1), Stage 1's outputs written over the
   held-out training AOIs, Stage 2 (from scratch the per-pixel calibrator of opt_v1, `--stage2-kind`),
   its outputs written, Stage 3 (regression grounding; from scratch the per-pixel spectral calibrator,
   `--stage3-encoder`).
3. A plain convolutional baseline — segmentation_models_pytorch's UNet (ResNet-18 encoder, 3 levels,
   no pretrained weights), fed the same inputs (S1, month, biome) and the same loss — trained for
   the same wall-clock time as Stage 1 on Stage 1's AOIs, in a plain PyTorch loop on the same 2 cores.
4. An oracle floor: the synthesiser replays each evaluation AOI's land-cover map, and each pixel is
   painted with the mean truth spectrum of its class in its tile's month and biome on that AOI — what
   a model that knew the land cover exactly, but nothing of within-class texture, parcel phase or
   vigour, would score. A SAR model can beat it only by reading that texture from the backscatter.
5. Each evaluation AOI through the three exported stages on the Ray pipeline, each output scored
   against the truth; the means over the evaluation AOIs on the last line:
   `chain opt_v1 ndvi=… evi=… sam=… | opt_v2 … | opt_v3 … constraints=PASS|FAIL`; before it, per AOI and
   land-cover class, where `opt_v1`'s, `opt_v3`'s and the oracle's NDVI error lies (at class edges or inside).
6. Speed, model only, same process and tile size: regression Stage 1 vs TerraMind generation at 10
   timesteps (random weights: the cost of generation does not depend on its weights).
7. The encoder comparison: Stage 1 alone with the other Stage 1 encoder (`terramind` ViT + UNet, or the UNet
   alone), same data and schedule, scored on the same evaluation AOIs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np

# Training AOIs: the ten biomes of the synthesiser's pool in pairs, three months each. The chain holds
# half B out of Stage 1 (Stages 2 and 3 learn from its errors there), so each half on its own covers all
# ten biomes and all twelve months (`training_aois`).
_HALF_A = [((4, 5), (1, 6, 11)), ((6, 7), (2, 7, 12)), ((8, 12), (3, 8, 1)), ((15, 1), (4, 9, 2)),
           ((2, 13), (5, 10, 3))]
_HALF_B = [((5, 6), (4, 9, 2)), ((7, 8), (5, 10, 3)), ((12, 15), (6, 11, 4)), ((1, 2), (7, 12, 5)),
           ((13, 4), (8, 1, 6))]
#: What every training set covers (an 8 x 8 selection AOI holds the same biomes).
TRAIN_BIOMES = sorted({b for biomes, _ in _HALF_A + _HALF_B for b in biomes})
TRAIN_MONTHS = sorted({m for _, months in _HALF_A + _HALF_B for m in months})
SELECTION_SEED = 8000  # the one 8 x 8 selection AOI of every run before (AF) (`--select-rows 8 --select-seeds 8000`)


def training_aois(stage1_sets: int, later_sets: int = 1) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """(biomes, months, seed) of the training AOIs in the chain's order. Five groups of biome pairs and
    months; `stage1_sets` AOIs of each for Stage 1 (half A's, then more draws of the same patterns, new
    seeds) and `later_sets` held out for Stages 2 and 3 (half B's, then more draws, B's and A's patterns in
    turn: seeds 5000 + 100 k + i).
    Ordered so that the chain's `holdout_split` at `holdout_fraction` holds out exactly the later ones.
    One set each is the data and seeds of the runs before (L) in bench/RESULTS.md (seed 100 + position);
    later sets of one are the runs before (AC), and their order is unchanged."""
    from axion_ray.train.chain import holdout_split

    first, later = [], []
    for i, (a, b) in enumerate(zip(_HALF_A, _HALF_B)):
        first += [(*a, 100 + 2 * i)] + [(*(_HALF_B if k % 2 else _HALF_A)[i], 300 + 100 * (k - 1) + i)
                                        for k in range(1, stage1_sets)]
        later += [(*b, 101 + 2 * i)] + [(*(_HALF_B if k % 2 else _HALF_A)[i], 5000 + 100 * (k - 1) + i)
                                        for k in range(1, later_sets)]
    n = len(first) + len(later)
    kept, held = holdout_split(n, holdout_fraction(stage1_sets, later_sets))
    if (len(kept), len(held)) != (len(first), len(later)):
        raise ValueError(f"holdout_split cannot hold out {len(later)} of {n} AOIs at {stage1_sets} to {later_sets} sets")
    order = [None] * n
    for positions, aois in ((kept, first), (held, later)):
        for position, aoi in zip(positions, aois):
            order[position] = aoi
    return order


def holdout_fraction(stage1_sets: int, later_sets: int = 1) -> float:
    return later_sets / (stage1_sets + later_sets)


def stage1_part(trains: list, stage1_sets: int, later_sets: int = 1) -> list:
    """The training stores Stage 1 (and the plain baseline) trains on, as the chain splits them."""
    from axion_ray.train.chain import holdout_split

    ones, _ = holdout_split(len(trains), holdout_fraction(stage1_sets, later_sets))
    return [trains[i] for i in ones]


def synth(out: Path, seeds_and_cfg):
    from axion_ray.store.synth import synthesize_aoi

    return [synthesize_aoi(out / name, cfg, overwrite=True) for name, cfg in seeds_and_cfg]


def spectral(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    from axion_ray.metrics.spectral import SpectralAccumulator

    acc = SpectralAccumulator()
    acc.update(pred, truth)
    return acc.compute()


def oracle(cfg, store) -> np.ndarray:
    """Per (class, month, biome) mean truth spectrum, painted on the replayed land-cover map."""
    from axion_ray.store.synth import replay_land_cover

    cover = replay_land_cover(cfg)
    truth = store.read("s2_truth", np.arange(store.n_tiles))
    meta = store.tile_meta()
    key = (meta["month"].astype(np.int64) * 16 + meta["biome_code"].astype(np.int64))[:, None, None] * 16 + cover
    pred = np.empty_like(truth)
    for k in np.unique(key):
        mask = key == k
        for band in range(4):
            pred[:, band][mask] = truth[:, band][mask].mean()
    return pred


def ndvi_error_by_class(cfg, truth: np.ndarray, outputs: dict[str, np.ndarray]) -> dict:
    """Where each output's NDVI error lies: per land-cover class of the replayed map, its share of the
    AOI's pixels and its part of the NDVI mean squared error (the parts sum to the MSE), split into
    pixels within 2 px of another class (`edge`: where SAR's speckle blurs where a class ends) and the
    rest (`interior`: a spectral bias the class, month and biome would explain)."""
    from scipy import ndimage

    from axion_ray.metrics.spectral import ndvi
    from axion_ray.store.synth import LAND_COVER, replay_land_cover

    cover = replay_land_cover(cfg)
    edge = np.stack([ndimage.maximum_filter(c, 5) != ndimage.minimum_filter(c, 5) for c in cover])
    truth_ndvi = ndvi(truth)
    errors = {name: ndvi(pred) - truth_ndvi for name, pred in outputs.items()}
    table = {}
    for k in np.unique(cover):
        cls = cover == k
        row = {"fraction": float(cls.mean())}
        for name, error in errors.items():
            sq = error ** 2
            row[name] = {"edge": float(sq[cls & edge].sum() / sq.size), "interior": float(sq[cls & ~edge].sum() / sq.size),
                         "bias": float(error[cls].mean())}
        table[LAND_COVER[int(k)]] = row
    return table


class BaselineInputs:
    """S1 features + month (sin, cos) + biome one-hot as image channels: what the baseline sees."""

    @staticmethod
    def make(s1, month, biome):
        import torch

        from axion_ray.bands import N_BIOMES
        from axion_ray.models.regress import s1_features
        from axion_ray.models.stage2 import month_features

        h, w = s1.shape[-2:]
        m = month_features(month)[:, :, None, None].expand(-1, -1, h, w)
        b = torch.nn.functional.one_hot(biome.long().clamp(0, N_BIOMES - 1), N_BIOMES).float()[:, :, None, None]
        return torch.cat([s1_features(s1), m, b.expand(-1, -1, h, w)], dim=1)


def train_baseline(train_stores, seconds: float, seed: int = 0, bf16: bool = False):
    """smp UNet for `seconds` of wall-clock time on the pooled training tiles; returns (model, steps).
    `bf16`: its forward under CPU bf16 autocast, as Stage 1's when the chain trains Stage 1 so (same time,
    same help)."""
    import segmentation_models_pytorch as smp
    import torch

    from axion_ray.models.common import autocast
    from axion_ray.train.losses import stage2_loss

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    s1 = np.concatenate([s.read("s1", np.arange(s.n_tiles)) for s in train_stores])
    truth = np.concatenate([s.read("s2_truth", np.arange(s.n_tiles)) for s in train_stores])
    month = np.concatenate([s.tile_meta()["month"] for s in train_stores]).astype(np.int64)
    biome = np.concatenate([s.tile_meta()["biome_code"] for s in train_stores]).astype(np.int64)
    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(64, 32, 16),
                     in_channels=21, classes=4)
    # Start from the flat image of the training truth's mean spectrum (output bias = its logit): from a
    # sigmoid's 0.5 the EVI term's denominator crosses zero for blue and the baseline never recovers
    # (measured: blue 0.61 against 0.044, SAM 1.1 rad). Our models need no such help; the baseline gets it.
    mean = np.clip(np.nanmean(truth, axis=(0, 2, 3)), 1e-3, 1 - 1e-3)
    with torch.no_grad():
        model.segmentation_head[0].bias.copy_(torch.from_numpy(np.log(mean / (1 - mean))).float())
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    rng = np.random.default_rng(seed)
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        idx = rng.choice(len(s1), size=16, replace=False)
        x = BaselineInputs.make(torch.from_numpy(s1[idx]), torch.from_numpy(month[idx]), torch.from_numpy(biome[idx]))
        t = torch.from_numpy(truth[idx])
        with autocast(torch.device("cpu"), cpu_bf16=bf16):
            pred = torch.sigmoid(model(x))
        loss, _ = stage2_loss(pred.float(), t, t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    return model.eval(), steps


def baseline_predict(model, store) -> np.ndarray:
    import torch

    idx = np.arange(store.n_tiles)
    meta = store.tile_meta()
    with torch.no_grad():
        x = BaselineInputs.make(torch.from_numpy(store.read("s1", idx)), torch.from_numpy(meta["month"].astype(np.int64)),
                                torch.from_numpy(meta["biome_code"].astype(np.int64)))
        return torch.sigmoid(model(x)).numpy()


def stage_predict(model, store) -> np.ndarray:
    import torch

    idx = np.arange(store.n_tiles)
    meta = store.tile_meta()
    with torch.no_grad():
        return model(torch.from_numpy(store.read("s1", idx)), torch.from_numpy(meta["month"].astype(np.int64)),
                     torch.from_numpy(meta["biome_code"].astype(np.int64))).numpy()


def model_rates(stage1_checkpoint: str, tiles: int = 32, size: int = 64, tta: int = 1) -> dict[str, float]:
    """Model-only tiles/s, same process and tile size: regression Stage 1 (with its `tta` test-time views,
    as evaluated) vs generation at 10 steps."""
    import torch

    from axion_ray.models import build_stage

    torch.set_num_threads(2)
    s1 = torch.randn(tiles, 2, size, size) * 4 - 12
    month, biome = torch.full((tiles,), 6), torch.full((tiles,), 4)
    regress = build_stage(1, checkpoint=stage1_checkpoint, tta=tta)
    with torch.no_grad():
        regress(s1[:4], month[:4], biome[:4])
        start = time.perf_counter()
        for i in range(0, tiles, 16):
            regress(s1[i:i + 16], month[i:i + 16], biome[i:i + 16])
        regress_rate = tiles / (time.perf_counter() - start)
    del regress
    generate = build_stage(1, kind="generate", allow_random_init=True, timesteps=10)
    with torch.no_grad():
        generate(s1[:1])
        start = time.perf_counter()
        n = 4
        generate(s1[:n])
        generate_rate = n / (time.perf_counter() - start)
    rates = {"regress_tiles_s": regress_rate, "generate10_tiles_s": generate_rate,
             "ratio": regress_rate / generate_rate, "tta": tta}
    print(f"\nspeed (model only, {size} px, 2 threads): regression Stage 1 with {tta} view(s) "
          f"{regress_rate:.1f} tiles/s, generation at 10 timesteps {generate_rate:.2f} tiles/s, "
          f"ratio {rates['ratio']:.0f}x")
    return rates


def rerun_baseline(out: Path, result_file: Path) -> None:
    """Re-measure only the plain baseline of an earlier full run (its AOIs, Stage 1's measured time)
    and rewrite that run's JSON and tables: for a fix to the baseline alone."""
    from axion_ray.store.tile_store import TileStore
    from axion_ray.train.chain import CHAIN_OUTPUTS, chain_line

    result = json.loads(result_file.read_text())
    sets, later = int(result.get("stage1_sets", 1)), int(result.get("later_sets", 1))  # 1 before (AC)
    trains = stage1_part([TileStore.open(out / f"train_{i}.zarr") for i in range(len(training_aois(sets, later)))],
                         sets, later)
    seconds = float(result["train_seconds"]["stage1"])
    print(f"baseline UNet for Stage 1's {seconds:.0f} s, on Stage 1's AOIs")
    baseline, steps = train_baseline(trains, seconds, bf16=1 in result.get("cpu_bf16_stages", ()))
    for seed, entry in result["per_aoi"].items():
        store = TileStore.open(out / f"val_{seed}.zarr")
        truth = store.read("s2_truth", np.arange(store.n_tiles))
        entry["figures"]["baseline_unet"] = spectral(baseline_predict(baseline, store), truth)
    result["means"] = report(result["per_aoi"], list(next(iter(result["per_aoi"].values()))["figures"]))
    result["baseline_steps"] = steps
    result_file.write_text(json.dumps(result, indent=2, default=str))
    print(f"baseline: {steps} steps of 16 tiles in {seconds:.0f} s")
    print(chain_line({n: result["means"][n] for n in CHAIN_OUTPUTS}, result["constraints_pass"]))


def selection_config(seed: int, rows: int = 4):
    """A selection AOI (one of the chain's validation stores, pooled): `rows` x `rows` tiles.

    Below 8 rows, drawn as the evaluation AOIs are (the synthesiser's own biomes and months; other
    seeds): from (AF), sixteen of them. From 8 rows, one AOI holding every training biome and as many
    months as it has swaths — the one selection AOI of the runs before (AF), made large because a later
    stage's gain is a fraction of a percent and one 16-tile AOI's own noise exceeded it (run (H)). That
    one AOI's own colour errors then rejected Stages 2 and 3 that sixteen fresh AOIs found better
    (`selection_check.py`, (AF) in bench/RESULTS.md): many small AOIs average those errors away."""
    from axion_ray.config import SynthConfig

    if rows < 8:
        return dataclasses.replace(eval_config(seed), rows=rows, cols=rows)
    return SynthConfig(rows=rows, cols=rows, seed=seed, biomes=tuple(TRAIN_BIOMES), months=tuple(range(1, 13)))


def selection_store(seed: int) -> str:
    """A selection AOI's store name in a run's directory (the one of the runs before (AF): `select.zarr`)."""
    return "select.zarr" if seed == SELECTION_SEED else f"select_{seed}.zarr"


def seeds_arg(text: str) -> list[int]:
    """'7001-7016' or '7001,7005': a list of AOI seeds."""
    if "-" in text:
        first, last = (int(part) for part in text.split("-"))
        return list(range(first, last + 1))
    return [int(part) for part in text.split(",") if part]


def eval_config(seed: int):
    """An evaluation AOI: 4 x 4 tiles, the synthesiser's own biomes and months for `seed`, no prior."""
    from axion_ray.config import SynthConfig

    return SynthConfig(rows=4, cols=4, seed=seed, with_prior=False)


def evaluate(out: Path, vals: dict, val_cfgs: dict, checkpoints: dict[str, str], tta: int,
             more_figures=lambda store, truth: {}) -> dict:
    """Each evaluation AOI through the three exported stages on the Ray pipeline (`tta` test-time views),
    scored against its truth beside the oracle and `more_figures`; per AOI, as the JSON records it."""
    from axion_ray.config import InferConfig
    from axion_ray.models import build_stage
    from axion_ray.models.ensemble import is_ensemble
    from axion_ray.models.weights import load_checkpoint
    from axion_ray.pipeline.run import run_pipeline
    from axion_ray.store.tile_store import TileStore
    from axion_ray.train.chain import CHAIN_OUTPUTS, evaluate_chain

    # An ensemble Stage 1 (--stage1-members): each member alone too, one view, from its own export beside it.
    members = {}
    if is_ensemble(load_checkpoint(checkpoints["stage1"], digest=False).config):
        members = {f"opt_v1 member {path.stem.removeprefix('stage1_member')}": build_stage(1, checkpoint=str(path))
                   for path in sorted(Path(checkpoints["stage1"]).parent.glob("stage1_member*.pt"))}
    per_aoi = {}
    for seed, store in vals.items():
        shutil.rmtree(out / f"eval_{seed}.zarr", ignore_errors=True)
        work = TileStore.pool_inputs([store], out / f"eval_{seed}.zarr")
        run_pipeline(work.path, InferConfig(stages=(1, 2, 3), batch_size=32, device="cpu", tta=tta,
                                            **{f"stage{s}_checkpoint": checkpoints[f"stage{s}"] for s in (1, 2, 3)}),
                     say=lambda line: None)
        evaluation = evaluate_chain(work)
        truth = store.read("s2_truth", np.arange(store.n_tiles))
        painted = oracle(val_cfgs[seed], store)
        figures = {**evaluation["per_stage"], **more_figures(store, truth), "oracle": spectral(painted, truth),
                   **{name: spectral(stage_predict(model, store), truth) for name, model in members.items()}}
        outputs = {name: work.read(name, np.arange(work.n_tiles)) for name in CHAIN_OUTPUTS}
        by_class = ndvi_error_by_class(val_cfgs[seed], truth, {
            "opt_v1": outputs["opt_v1"], "opt_v3": outputs["opt_v3"], "oracle": painted})
        per_aoi[seed] = {"figures": figures, "constraints_pass": evaluation["constraints_pass"], "ndvi_by_class": by_class,
                         "tile_sums": {name: tile_sums(pred, truth) for name, pred in outputs.items()},
                         "composite": {k: r.get("composite_score") for k, r in evaluation["results"].items()}}
    return per_aoi


def member_names(per_aoi: dict) -> list[str]:
    """The figures of an ensemble Stage 1's members alone, where `evaluate` scored them."""
    return [name for name in next(iter(per_aoi.values()))["figures"] if name.startswith("opt_v1 member")]


def tile_sums(pred: np.ndarray, truth: np.ndarray) -> dict[str, list[float]]:
    """Per tile, the sums each spectral mean is made of (NDVI and EVI squared errors, spectral angles) and
    the valid pixels: what `changes` resamples. The same pixels as `spectral` counts."""
    from axion_ray.metrics.spectral import evi, ndvi, spectral_angle

    valid = np.isfinite(pred).all(axis=1) & np.isfinite(truth).all(axis=1)
    parts = {"ndvi_sq": (ndvi(pred) - ndvi(truth)) ** 2, "evi_sq": (evi(pred) - evi(truth)) ** 2,
             "sam": spectral_angle(np.nan_to_num(pred), np.nan_to_num(truth))}
    sums = {k: np.where(valid, v, 0.0).sum(axis=(1, 2)).tolist() for k, v in parts.items()}
    return {**sums, "pixels": valid.sum(axis=(1, 2)).astype(float).tolist()}


def changes(per_aoi: dict, before: str, after: str, resamples: int = 2000, seed: int = 0) -> dict[str, list[float]]:
    """How much `after` changes the means over the evaluation AOIs against `before` (NDVI RMSE, EVI RMSE,
    SAM), with a 95 % interval from resampling each AOI's tiles (the same tiles for both outputs: paired).

    Why: a later stage's change is a few 1e-4 on 48 tiles, and whether it is "better" should be read
    against what other tiles of the same AOIs would have said. Hand-written rather than
    scipy.stats.bootstrap: the statistic pairs two outputs per tile and averages three AOIs resampled
    together. Returns {metric: [change, low, high]}."""
    rng = np.random.default_rng(seed)

    def figures(sums: dict, idx) -> np.ndarray:
        n = np.asarray(sums["pixels"])[idx].sum(axis=-1)
        return np.stack([np.sqrt(np.asarray(sums["ndvi_sq"])[idx].sum(axis=-1) / n),
                         np.sqrt(np.asarray(sums["evi_sq"])[idx].sum(axis=-1) / n),
                         np.asarray(sums["sam"])[idx].sum(axis=-1) / n], axis=-1)

    point, draws = [], []
    for entry in per_aoi.values():
        sums = entry["tile_sums"]
        n_tiles = len(sums[before]["pixels"])
        every = np.arange(n_tiles)
        point.append(figures(sums[after], every) - figures(sums[before], every))
        idx = rng.integers(0, n_tiles, (resamples, n_tiles))
        draws.append(figures(sums[after], idx) - figures(sums[before], idx))
    mean_point, mean_draws = np.mean(point, axis=0), np.mean(draws, axis=0)
    low, high = np.percentile(mean_draws, [2.5, 97.5], axis=0)
    return {k: [float(mean_point[i]), float(low[i]), float(high[i])] for i, k in enumerate(("ndvi_rmse", "evi_rmse", "sam_rad"))}


def interval_cells(change: dict[str, list[float]]) -> list[str]:
    """`changes`' figures as table cells: the change and its interval."""
    return [f"{c:+.5f} [{lo:+.5f}, {hi:+.5f}]" for c, lo, hi in change.values()]


def report(per_aoi: dict, names: list[str]) -> dict:
    """Print the per-AOI and mean tables; the means."""
    print("\n| AOI seed | output | NDVI RMSE | EVI RMSE | SAM (rad) | PSNR (dB) |\n|---|---|---|---|---|---|")
    for seed, entry in per_aoi.items():
        for name, m in entry["figures"].items():
            print(f"| {seed} | {name} | {m['ndvi_rmse']:.4f} | {m['evi_rmse']:.4f} | {m['sam_rad']:.4f} | {m['psnr_db']:.2f} |")
    means = {n: {k: float(np.mean([per_aoi[s]["figures"][n][k] for s in per_aoi]))
                 for k in ("ndvi_rmse", "evi_rmse", "sam_rad", "psnr_db")} for n in names}
    print("\n| AOI seed | class | pixels | NDVI MSE x1e4 of opt_v1 / opt_v3 / oracle: edge + interior | opt_v3 NDVI bias |"
          "\n|---|---|---|---|---|")
    for seed, entry in per_aoi.items():
        for cls, row in entry.get("ndvi_by_class", {}).items():
            parts = " / ".join(f"{1e4 * row[n]['edge']:.1f} + {1e4 * row[n]['interior']:.1f}"
                               for n in ("opt_v1", "opt_v3", "oracle"))
            print(f"| {seed} | {cls} | {row['fraction']:.1%} | {parts} | {row['opt_v3']['bias']:+.3f} |")
    print("\n| mean over evaluation AOIs | NDVI RMSE | EVI RMSE | SAM (rad) |\n|---|---|---|---|")
    for n in names:
        print(f"| {n} | {means[n]['ndvi_rmse']:.4f} | {means[n]['evi_rmse']:.4f} | {means[n]['sam_rad']:.4f} |")
    if all("tile_sums" in entry for entry in per_aoi.values()):
        print("\n| change in the means (95 % interval, tiles resampled) | NDVI RMSE | EVI RMSE | SAM (rad) |"
              "\n|---|---|---|---|")
        for before, after in (("opt_v1", "opt_v2"), ("opt_v2", "opt_v3")):
            means[f"{after} - {before}"] = change = changes(per_aoi, before, after)
            print(f"| {after} against {before} | " + " | ".join(interval_cells(change)) + " |")
    return means


def evaluate_only(out: Path, val_seeds: list[int], tta: int, json_out: str | None) -> None:
    """Re-score the chain already trained in `out` (its exported checkpoints) with `tta` test-time views,
    on `val_seeds`: the same trained stages, only the inference or the evaluation AOIs differ. An AOI the
    run did not evaluate is synthesised as the evaluation AOIs are (`eval_config`)."""
    from axion_ray.store.tile_store import TileStore
    from axion_ray.train.chain import CHAIN_OUTPUTS, chain_line

    checkpoints = {f"stage{s}": str(out / "run" / f"stage{s}.pt") for s in (1, 2, 3)}
    synth(out, [(f"val_{s}.zarr", eval_config(s)) for s in val_seeds if not (out / f"val_{s}.zarr").exists()])
    vals = {s: TileStore.open(out / f"val_{s}.zarr", mode="r") for s in val_seeds}
    val_cfgs = {s: eval_config(s) for s in val_seeds}
    per_aoi = evaluate(out, vals, val_cfgs, checkpoints, tta)
    means = report(per_aoi, [*CHAIN_OUTPUTS, "oracle", *member_names(per_aoi)])
    constraints = all(per_aoi[s]["constraints_pass"] for s in per_aoi)
    rates = model_rates(checkpoints["stage1"], tta=tta)
    if json_out:
        Path(json_out).write_text(json.dumps({"tta": tta, "per_aoi": {str(k): v for k, v in per_aoi.items()},
                                              "means": means, "speed": rates, "constraints_pass": constraints},
                                             indent=2, default=str))
    print(chain_line({n: means[n] for n in CHAIN_OUTPUTS}, constraints))


def main() -> None:
    from axion_ray.config import ChainConfig, SynthConfig
    from axion_ray.models import build_stage
    from axion_ray.models.builder import default_encoder, default_stage2_kind
    from axion_ray.models.presets import encoders_for
    from axion_ray.train.chain import CHAIN_OUTPUTS, chain_line, train_chain
    from axion_ray.train.run import train_stage
    from axion_ray.train.select import select_and_export

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/axion_chain_quality")
    ap.add_argument("--val-seeds", default="9001,9002,9003", help="evaluation AOIs (never trained or selected on)")
    ap.add_argument("--rows", type=int, default=8, help="training AOI size (rows = cols); five AOIs per set")
    ap.add_argument("--select-rows", type=int, default=4,
                    help="each selection AOI's size (rows = cols): below 8 drawn as the evaluation AOIs are, from 8 "
                         "holding every training biome (selection_config)")
    ap.add_argument("--select-seeds", default="8101-8116",
                    help="the selection AOIs, pooled by the chain for every stage's selection (before (AF): one 8 x 8 "
                         "AOI, --select-rows 8 --select-seeds 8000)")
    ap.add_argument("--stage1-sets", type=int, default=2,
                    help="Stage 1's training AOIs: sets of five, each covering every biome and month")
    ap.add_argument("--later-sets", type=int, default=4,
                    help="sets of five held out of Stage 1, on whose Stage 1 outputs Stages 2 and 3 learn (one "
                         "before (AC): each biome pair in one AOI, and what they learned did not carry over)")
    ap.add_argument("--stage1-epochs", type=int, default=60,
                    help="60 at two sets is 2,400 steps (65 from (T) to (AF): the chain's time with sixteen selection "
                         "AOIs, bench/RESULTS.md (AG)); at --stage1-sets 1, 90 is (J)'s 1,800")
    ap.add_argument("--stage1-batch-size", type=int, default=8, help="Stage 1's tiles of pixels per worker and step")
    ap.add_argument("--stage1-w-edge", type=float, default=None,
                    help="Stage 1's weight of the gradient term against the truth's edges (default: TrainConfig's)")
    ap.add_argument("--stage1-members", type=int, default=1,
                    help="Stage 1 as the mean of this many members trained side by side, the workers split between "
                         "them (train chain --stage1-members)")
    ap.add_argument("--width", type=int, default=None,
                    help="the regression stages' width (ChainConfig.width: Stage 1's UNet and Stage 3's calibrator; "
                         "default models/presets.REGRESSION_WIDTH)")
    ap.add_argument("--stage2-kind", choices=["refine", "regress"], default=None,
                    help="Stage 2 as the per-pixel calibrator of opt_v1 (regress; from (AD)) or the Prithvi refiner "
                         "(refine), which learned at most 4e-5 NDVI RMSE in every run to (AC); default: the chain's "
                         "(models/builder.default_stage2_kind: here the calibrator)")
    ap.add_argument("--stage2-epochs", type=int, default=None,
                    help="default: the refiner 10 over one later set, fewer over more (about 100 steps); the "
                         "calibrator as Stage 3's (480 steps of pixels at four later sets)")
    ap.add_argument("--stage3-epochs", type=int, default=None,
                    help="default: 48 over one later set, fewer over more (480 steps at four; 600 to (AF))")
    ap.add_argument("--cpu-bf16-stages", default="",
                    help="stages trained under CPU bf16 autocast (the baseline too where 1 is); '' for none")
    ap.add_argument("--encoder", default=None, help="Stage 1's (default: models/builder.default_encoder)")
    ap.add_argument("--stage3-encoder", default=None, help="Stage 3's (default: models/builder.default_encoder)")
    ap.add_argument("--compare-encoder", default="auto",
                    help="also train Stage 1 alone with this encoder (auto: the other one; none: skip)")
    ap.add_argument("--tta", type=int, default=1,
                    help="test-time views of the regression UNet stages in the evaluation (1, 4 or 8; models/tta.py)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--baseline-only", action="store_true",
                    help="re-measure only the plain baseline of the run in --out (needs its --json)")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="re-score the chain trained in --out with --tta views on --val-seeds (AOIs it lacks are synthesised)")
    args = ap.parse_args()
    out = Path(args.out)
    val_seeds = seeds_arg(args.val_seeds)
    if args.stage1_sets < 1 or args.later_sets < 1:
        ap.error("--stage1-sets and --later-sets are counts of sets of five AOIs, at least 1")
    # Stages 2 and 3 keep their steps whatever their data: 10 and 60 epochs were tuned on one later set
    # (48 for the calibrators from (AG), the chain's time with sixteen selection AOIs).
    args.stage2_kind = args.stage2_kind or default_stage2_kind("tiny")
    args.stage2_epochs = args.stage2_epochs or math.ceil((48 if args.stage2_kind == "regress" else 10) / args.later_sets)
    args.stage3_epochs = args.stage3_epochs or math.ceil(48 / args.later_sets)
    if args.baseline_only:
        rerun_baseline(out, Path(args.json))
        return
    if args.evaluate_only:
        evaluate_only(out, val_seeds, args.tta, args.json)
        return

    trains = synth(out, [(f"train_{i}.zarr", SynthConfig(rows=args.rows, cols=args.rows, seed=seed, biomes=b,
                                                          months=m))
                         for i, (b, m, seed) in enumerate(training_aois(args.stage1_sets, args.later_sets))])
    select_seeds = seeds_arg(args.select_seeds)
    if set(select_seeds) & set(val_seeds):
        ap.error("a selection AOI's seed is an evaluation seed: selection never sees the evaluation AOIs")
    selects = synth(out, [(selection_store(s), selection_config(s, args.select_rows)) for s in select_seeds])
    val_cfgs = {seed: eval_config(seed) for seed in val_seeds}
    vals = dict(zip(val_seeds, synth(out, [(f"val_{s}.zarr", c) for s, c in val_cfgs.items()])))
    print(f"training AOIs: {len(trains)} x {trains[0].n_tiles} tiles, biomes "
          f"{TRAIN_BIOMES}, months {TRAIN_MONTHS}")
    print(f"selection AOIs: {len(selects)} x {selects[0].n_tiles} tiles, seeds {args.select_seeds}")
    print("evaluation AOIs: " + ", ".join(f"seed {s} (biomes {v.attrs['synthetic']['biomes']}, months "
                                          f"{v.attrs['synthetic']['months']})" for s, v in vals.items()))

    shutil.rmtree(out / "run", ignore_errors=True)
    # What the chain picks here for each regression stage, named in the results.
    args.encoder = args.encoder or default_encoder("tiny", stage=1)
    args.stage3_encoder = args.stage3_encoder or default_encoder("tiny", stage=3)
    chain_cfg = ChainConfig(encoder=args.encoder, stage3_encoder=args.stage3_encoder, epochs=args.stage1_epochs,
                            width=args.width, stage2_kind=args.stage2_kind,
                            stage2_epochs=args.stage2_epochs,
                            stage3_epochs=args.stage3_epochs, batch_size=16, stage1_batch_size=args.stage1_batch_size,
                            stage1_w_edge=args.stage1_w_edge, stage1_members=args.stage1_members,
                            # 120 from (AG) (100 in (AF), 60 before): each validation scores 256 selection
                            # tiles, not 64
                            val_every_steps=120, workers=2,
                            holdout_fraction=holdout_fraction(args.stage1_sets, args.later_sets),
                            cpu_bf16_stages=tuple(int(s) for s in args.cpu_bf16_stages.split(",") if s))
    start = time.perf_counter()
    chain = train_chain([t.path for t in trains], [s.path for s in selects], out / "run", chain_cfg, say=print)
    chain_s = time.perf_counter() - start
    stage1_s = chain["train_seconds"]["stage1"]
    print(f"chain trained in {chain_s:.0f} s (stage 1 {stage1_s:.0f} s); baseline UNet for the same {stage1_s:.0f} s")
    baseline, baseline_steps = train_baseline(stage1_part(trains, args.stage1_sets, args.later_sets), stage1_s,  # Stage 1's AOIs
                                              bf16=1 in chain_cfg.cpu_bf16_stages)
    other = {"auto": next(e for e in encoders_for(1) if e != args.encoder), "none": None}.get(args.compare_encoder,
                                                                                            args.compare_encoder)
    other_model = None
    if other:
        print(f"Stage 1 alone with encoder={other}, same schedule, for the encoder comparison")
        run = out / f"stage1_{other}"
        shutil.rmtree(run, ignore_errors=True)
        cfg1 = dataclasses.replace(chain_cfg.stage_config(1), encoder=other)
        train_stage([str(out / "run" / "data" / "train_stage1.zarr")], str(out / "run" / "data" / "val.zarr"), run, cfg1,
                    say=lambda line: print("  " + line))
        select_and_export(run, out / f"stage1_{other}.pt", warn=print)
        other_model = build_stage(1, checkpoint=str(out / f"stage1_{other}.pt"))

    def more_figures(store, truth):
        figures = {"baseline_unet": spectral(baseline_predict(baseline, store), truth)}
        if other_model is not None:
            figures[f"opt_v1 encoder={other}"] = spectral(stage_predict(other_model, store), truth)
        return figures

    per_aoi = evaluate(out, vals, val_cfgs, chain["checkpoints"], args.tta, more_figures)
    names = [*CHAIN_OUTPUTS, "baseline_unet", "oracle", *member_names(per_aoi)] + (
        [f"opt_v1 encoder={other}"] if other_model else [])
    means = report(per_aoi, names)
    rates = model_rates(chain["checkpoints"]["stage1"], tta=args.tta)
    print(f"baseline: {baseline_steps} steps of 16 tiles in {stage1_s:.0f} s")
    constraints = all(per_aoi[s]["constraints_pass"] for s in per_aoi)
    result = {"train_seconds": chain["train_seconds"], "chain_seconds": chain_s, "baseline_steps": baseline_steps,
              "per_aoi": {str(k): v for k, v in per_aoi.items()}, "means": means, "speed": rates,
              "constraints_pass": constraints, "encoder": args.encoder,
              "stage3_encoder": args.stage3_encoder, "compared_encoder": other, "stage2_kind": args.stage2_kind,
              "epochs": {"stage1": args.stage1_epochs, "stage2": args.stage2_epochs, "stage3": args.stage3_epochs},
              "stage1_batch_size": args.stage1_batch_size, "stage1_sets": args.stage1_sets,
              "later_sets": args.later_sets,
              "stage1_members": args.stage1_members,
              "stage1_w_edge": chain_cfg.stage_config(1).w_edge,
              "select_rows": args.select_rows, "select_seeds": select_seeds, "tta": args.tta,
              "stage1_crop": chain_cfg.stage_config(1).crop, "cpu_bf16_stages": chain_cfg.cpu_bf16_stages,
              "width": chain_cfg.width}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    print(chain_line({n: means[n] for n in CHAIN_OUTPUTS}, constraints))


if __name__ == "__main__":
    main()
