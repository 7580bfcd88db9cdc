"""The chain bench's runs of record as one table, computed from their raw JSON (bench/chain_quality_cpu*.json).

Why: bench/RESULTS.md tells each run's story in prose, (A) to (W); a reader who wants where the chain
stands against issue 17's goals needs the figures side by side, and those must come from the files the
runs wrote, never retyped. Prints a Markdown table (paste it into RESULTS.md) and, per run, which goals
its means meet:

    python bench/chain_runs.py

and, for the runs re-scored with each tile's error sums kept, each later stage's change in the means
with a 95 % interval from resampling the evaluation tiles; last, chains re-scored on sixteen fresh
AOIs beside the default three, and how often a draw of three of those would meet the goal.
"""

from __future__ import annotations

import json
from pathlib import Path

from train_quality import GOALS  # Axion-Sat's Stage 2 figures, the goal of bench/train_quality.py too

HERE = Path(__file__).parent
METRICS = ("ndvi_rmse", "evi_rmse", "sam_rad")
#: Axion-Sat's published figures (issue 17): `opt_v1` from S1 alone at or below their Stage 1's, `opt_v3`
#: at or below their Stage 2's.
AXION_SAT_STAGE1 = (0.085, 0.095, 0.180)
AXION_SAT_STAGE2 = tuple(GOALS[k] for k in METRICS)
SPEED_GOAL = 20.0
#: The issue's budget for training the chain here: 2 CPU workers, at most 20 minutes.
CHAIN_SECONDS_CAP = 1200.0

#: (label in RESULTS.md, raw file, what the run changed), in the order the runs were made.
RUNS = (
    ("B", "terramind_35ep", "TerraMind encoder from scratch, training fixes"),
    ("C", "ratio_constraint", "the UNet alone"),
    ("D", "stage2_10ep", "Stage 1 chosen by edge placement"),
    ("E", "", "Stage 2 40 epochs, stages scored at step 0"),
    ("F", "pixel_stage3", "Stage 3 the per-pixel calibrator"),
    ("F again", "pixel_stage3_repeat", ""),
    ("G", "texture_stage3", "calibrator's texture features"),
    ("G again", "texture_stage3_repeat", ""),
    ("H", "stage1_crops", "Stage 1 on 32-px crops"),
    ("I", "select8", "8x8 selection AOI"),
    ("J", "stage1_1800", "Stage 1 1,800 steps"),
    ("J again", "stage1_1800_repeat", ""),
    ("J, 4 views", "stage1_1800_tta4", "test-time views"),
    ("K", "stage1_bf16", "CPU bf16, 2,500 steps"),
    ("L", "stage1_two_sets", "Stage 1 on two sets"),
    ("M", "stage1_three_sets", "Stage 1 on three sets"),
    ("N", "stage1_2200", "Stage 1 2,200 steps"),
    ("N again", "stage1_2200_repeat", ""),
    ("O", "stage1_edge1", "Stage 1 edge weight 1.0"),
    ("P", "stage1_3000", "Stage 1 3,000 steps"),
    ("Q", "averaged", "checkpoint averaging"),
    ("Q again", "averaged_repeat", ""),
    ("R", "biome_season", "biome's own season (reverted)"),
    ("S", "six_months", "six months per AOI (not kept)"),
    ("T", "stage1_two_sets_2600", "two sets, 2,600 steps"),
    ("T again", "stage1_two_sets_2600_repeat", ""),
    ("U", "pixel_norm", "UNet blocks normalised per pixel"),
    ("U again", "pixel_norm_repeat", ""),
    ("U third", "pixel_norm_third", ""),
    ("U, 4 views", "pixel_norm_tta4", "(W): test-time views"),
    ("U again, 4 views", "pixel_norm_repeat_tta4", ""),
    ("U third, 4 views", "pixel_norm_third_tta4", ""),
    ("U again, 8 views", "pixel_norm_repeat_tta8", ""),
    ("X", "pixel_norm_fourth", "(U)'s a fourth time; Stage 2's shared conditioning"),
    ("X, 4 views", "pixel_norm_fourth_tta4", ""),
    ("Y", "stage1_members", "Stage 1 as two members side by side"),
    ("Z", "pixel_norm_fifth", "(U)'s a fifth time"),
    ("Z, 4 views", "pixel_norm_fifth_tta4", ""),
    ("Z, 8-px halo", "pixel_norm_fifth_halo8", "neighbours' S1 around each tile (not kept)"),
    ("Z, 16-px halo", "pixel_norm_fifth_halo16", ""),
    ("AA", "width48", "UNet width 48, 1,640 steps (not kept)"),
    ("AB", "pixel_norm_sixth", "(U)'s a sixth time; random init drawn from the seed"),
    ("AC", "later_sets4", "Stages 2 and 3 on four held-out sets"),
    ("AD", "stage2_pixel", "Stage 2 the per-pixel calibrator of `opt_v1`"),
    ("AD again", "stage2_pixel_repeat", ""),
    ("AF", "select16", "every stage selected on sixteen 4x4 AOIs"),
    ("AG", "select16_steps", "(AF) with split validation, fewer steps"),
    ("AG again", "select16_steps_repeat", ""),
)


def _load(stem: str) -> dict:
    return json.loads((HERE / f"chain_quality_cpu{'_' + stem if stem else ''}.json").read_text())


def _speed(run: dict) -> float | None:
    """Regression Stage 1's tiles/s over generation's at 10 timesteps, as the run measured it."""
    return (run.get("speed") or {}).get("ratio")


def _figures(means: dict, name: str) -> tuple[float, float, float] | None:
    m = means.get(name)
    return tuple(float(m[k]) for k in METRICS) if m else None


def goals(run: dict) -> dict[str, bool | None]:
    """Which of issue 17's goals this run's means meet (None: the run did not measure it)."""
    means = run["means"]
    v1, v2, v3 = (_figures(means, n) for n in ("opt_v1", "opt_v2", "opt_v3"))
    base = _figures(means, "baseline_unet")
    speed = _speed(run)
    seconds = run.get("chain_seconds")
    return {
        "stage1": all(a <= b for a, b in zip(v1, AXION_SAT_STAGE1)),
        "baseline": None if base is None else all(a <= b for a, b in zip(v1, base)),
        "stage2_better": all(a < b for a, b in zip(v2, v1)),
        "stage3_better": all(a < b for a, b in zip(v3, v2)),
        "constraints": bool(run["constraints_pass"]),
        "opt_v3": all(a <= b for a, b in zip(v3, AXION_SAT_STAGE2)),
        "speed": None if speed is None else speed >= SPEED_GOAL,
        "time": None if seconds is None else seconds <= CHAIN_SECONDS_CAP,
    }


def _mark(ok: bool | None) -> str:
    return "–" if ok is None else ("yes" if ok else "**no**")


def table() -> str:
    rows = ["| run | change | chain s | `opt_v1` NDVI | `opt_v3` NDVI / EVI / SAM | Stage 2 better | Stage 3 better "
            "| `opt_v3` ≤ Axion-Sat | speed ≥ 20x | every goal (chain ≤ 1,200 s too) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for label, stem, change in RUNS:
        run = _load(stem)
        v1, v3 = _figures(run["means"], "opt_v1"), _figures(run["means"], "opt_v3")
        g = goals(run)
        seconds = run.get("chain_seconds")
        speed = _speed(run)
        over = " (**over**)" if g["time"] is False else ""
        rows.append(f"| {label} | {change} | {f'{seconds:.0f}' if seconds else '–'}{over} | {v1[0]:.4f} | "
                    f"{v3[0]:.4f} / {v3[1]:.4f} / {v3[2]:.4f} | {_mark(g['stage2_better'])} | "
                    f"{_mark(g['stage3_better'])} | {_mark(g['opt_v3'])} | "
                    f"{_mark(g['speed'])}{f' ({speed:.0f}x)' if speed else ''} | "
                    f"{_mark(all(ok is not False for ok in g.values()))} |")
    return "\n".join(rows)


def tally() -> str:
    """How often each goal held over the chains actually trained (re-scorings — "U, 4 views", "Z, 8-px halo":
    the same chain with another inference — left out)."""
    trained = [_load(stem) for label, stem, _ in RUNS if "," not in label]
    counts = {k: sum(goals(r)[k] is True for r in trained) for k in goals(trained[0])}
    return (f"over {len(trained)} trained chains: Stage 2 better on all three in {counts['stage2_better']}, "
            f"Stage 3 better on all three in {counts['stage3_better']}, `opt_v3` at or below Axion-Sat's "
            f"Stage 2 in {counts['opt_v3']}")


#: Runs whose raw file keeps each evaluation tile's error sums, from which `chain_quality.changes` draws its
#: intervals: those before (Z) re-scored once more for it (`chain_quality.py --evaluate-only --tta 1`: the
#: same figures); the bench has kept them in every run since.
RESCORED = (("U", "pixel_norm_rescored"), ("U again", "pixel_norm_repeat_rescored"),
            ("U third", "pixel_norm_third_rescored"), ("X", "pixel_norm_fourth_rescored"),
            ("Y", "stage1_members_rescored"), ("Z", "pixel_norm_fifth"), ("AA", "width48"), ("AB", "pixel_norm_sixth"),
            ("AC", "later_sets4"), ("AD", "stage2_pixel"), ("AD again", "stage2_pixel_repeat"),
            ("AF", "select16"), ("AG", "select16_steps"),
            ("AG again", "select16_steps_repeat"))


def intervals() -> str:
    """Each later stage's change in the means with its 95 % interval (tiles resampled), per re-scored run:
    whether "better" is more than which tiles the evaluation AOIs happen to hold."""
    from chain_quality import changes, interval_cells

    rows = ["| run | stage | NDVI RMSE | EVI RMSE | SAM (rad) |", "|---|---|---|---|---|"]
    for label, stem in RESCORED:
        per_aoi = _load(stem)["per_aoi"]
        for stage, (before, after) in ((2, ("opt_v1", "opt_v2")), (3, ("opt_v2", "opt_v3"))):
            rows.append(f"| {label} | {stage} | " + " | ".join(interval_cells(changes(per_aoi, before, after))) + " |")
    return "\n".join(rows)


#: Trained chains re-scored on sixteen fresh AOIs drawn as the evaluation AOIs are (`chain_quality.py
#: --evaluate-only --val-seeds 7001,...,7016`): (run, raw file of the three default AOIs, of the sixteen).
POOLED = (("Z", "pixel_norm_fifth", "pixel_norm_fifth_pool16"), ("AA", "width48", "width48_pool16"),
          ("AB", "pixel_norm_sixth", "pixel_norm_sixth_pool16"), ("AC", "later_sets4", "later_sets4_pool16"),
          ("AD", "stage2_pixel", "stage2_pixel_pool16"))


def pooled() -> str:
    """The default three evaluation AOIs beside sixteen fresh ones, per chain: the means, the oracle's,
    the range of one AOI's `opt_v3` NDVI, and the share of the 560 ways to draw three of the sixteen
    whose `opt_v3` means meet Axion-Sat's Stage 2 figures — how much the goal's verdict is the AOIs' draw."""
    from itertools import combinations

    rows = ["| run | AOIs | `opt_v1` NDVI / EVI / SAM | `opt_v3` NDVI / EVI / SAM | oracle NDVI | one AOI's `opt_v3` NDVI "
            "| draws of three meeting Axion-Sat's Stage 2 |", "|---|---|---|---|---|---|---|"]
    for label, default_stem, pool_stem in POOLED:
        for name, stem in (("default three", default_stem), ("sixteen fresh", pool_stem)):
            run = _load(stem)
            v1, v3 = _figures(run["means"], "opt_v1"), _figures(run["means"], "opt_v3")
            per_aoi = [_figures(entry["figures"], "opt_v3") for entry in run["per_aoi"].values()]
            draws = [all(sum(aoi[k] for aoi in three) / 3 <= AXION_SAT_STAGE2[k] for k in range(3))
                     for three in combinations(per_aoi, 3)]
            ndvi = [aoi[0] for aoi in per_aoi]
            rows.append(f"| {label} | {name} | {' / '.join(f'{v:.4f}' for v in v1)} | "
                        f"{' / '.join(f'{v:.4f}' for v in v3)} | {run['means']['oracle']['ndvi_rmse']:.4f} | "
                        f"{min(ndvi):.4f}–{max(ndvi):.4f} | {sum(draws)} of {len(draws)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
    print()
    print(tally())
    print()
    print(intervals())
    print()
    print(pooled())
