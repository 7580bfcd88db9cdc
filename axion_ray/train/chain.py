"""`train_chain`: Stages 1, 2 and 3 trained in turn from S1 alone, the way Axion-Sat trains them.

1. Working copies under `RUN/data/`: the training stores pooled (with `holdout`, two pools: every
   other AOI for Stage 1, the rest for Stages 2 and 3), and the validation stores pooled (s1, s2_truth,
   metadata; no outputs). Every stage output the chain writes goes there, never into the user's
   stores; one pooled store is one pipeline run per stage, not one per AOI. Several validation AOIs:
   every stage's checkpoints are chosen on all of them together, so that no one AOI's own colour
   errors decide whether a later stage's gain of a few 1e-4 is kept (bench/RESULTS.md (AF)).
2. Stage 1 (regression) on (s1 → s2_truth); selected by the composite score, exported `stage1.pt`.
3. Stage 1's outputs written by the pipeline (Axion-Sat's `00_precompute_stage1`) over the AOIs
   Stages 2 and 3 train on, so they learn from real Stage 1 errors — with `holdout`, its errors on
   AOIs it did not train on — not from a synthetic prior.
4. Stage 2 (the per-pixel calibrator, or the refiner where its published weights are on disk:
   `ChainConfig.stage2_kind`) on (opt_v1 → truth); exported; its outputs written the same way.
5. Stage 3 (regression grounding) on (s1, opt_v2 → truth); exported; run on the validation copy.
6. One report: each stage against the truth on the validation AOIs (`CHAIN_REPORT.md`,
   `chain_summary.json`) and the one-line summary the CLI and the bench print.

Resume: each step is skipped when its product exists (copies, exports; the pipeline skips done
tiles; a stage's Ray Train run resumes from its own checkpoints), so a re-run continues a killed one.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from axion_ray.config import ChainConfig, InferConfig
from axion_ray.errors import ConfigError
from axion_ray.store.tile_store import TileStore
from axion_ray.train.run import claim_run_dir, open_stores

CHAIN_CONFIG_FILE = "chain_config.json"
CHAIN_OUTPUTS = ("opt_v1", "opt_v2", "opt_v3")


def holdout_split(n_aois: int, fraction: float) -> tuple[list[int], list[int]]:
    """Which of `n_aois` training AOIs Stage 1 trains on, and which it never sees (Stages 2 and 3 learn
    from its errors there): `fraction` of them held out, spread evenly through the list (0.5: every other
    one, from the second; 1/3: every third), at least one on each side.

    Spread, not a block at the end: users list AOIs by region or date, and each side should see them all.
    """
    held = [i for i in range(n_aois) if int((i + 1) * fraction) > int(i * fraction)]
    if not held:
        held = [n_aois - 1]
    elif len(held) == n_aois:
        held = held[1:]
    kept = set(range(n_aois)).difference(held)
    return sorted(kept), held


def _working_copy(sources: list[TileStore], dest: Path) -> TileStore:
    """`TileStore.pool_inputs` made under a temporary name and renamed: a copy is whole or absent."""
    if dest.exists():
        return TileStore.open(dest, mode="r+")
    partial = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # ours: a copy an earlier run did not finish
    TileStore.pool_inputs(sources, partial)
    partial.rename(dest)
    return TileStore.open(dest, mode="r+")


def _stage_export(stage: int, trains: list[str], val: str, out: Path, cfg: ChainConfig,
                  say: Callable[[str], None], member: int | None = None) -> Path:
    """Train one stage (or one member of Stage 1's ensemble) into its run directory, select, export."""
    from axion_ray.train.run import train_stage
    from axion_ray.train.select import select_and_export, selected_label

    stem = f"stage{stage}" if member is None else f"stage{stage}_member{member}"
    label = f"stage {stage}" if member is None else f"stage {stage} member {member}"
    export = out / f"{stem}.pt"
    if export.exists():
        say(f"{label}: already trained and exported ({export})")
        return export
    train_stage(trains, val, out / stem, cfg.stage_config(stage, member=member), say=lambda line: say("  " + line))
    meta = select_and_export(out / stem, export, cfg=cfg.select_config(), warn=lambda line: say("  " + line))
    best = meta["selected"]
    say(f"{label}: selected {selected_label(best)}, composite {best['composite_score']:+.4f} "
        f"({'PASS' if best['constraints_pass'] else 'FAIL'}) → {export}")
    if best["step"] == 0 and "averaged_steps" not in best:
        say(f"  {label}: no trained checkpoint beat its input on {val}; exported the untrained stage, which "
            "returns its input unchanged (train longer or on more AOIs to improve on it)")
    return export


def _stage1_ensemble(trains: list[str], val: str, out: Path, cfg: ChainConfig, say: Callable[[str], None]) -> Path:
    """Stage 1 as `cfg.stage1_members` members trained side by side (the workers split between them, each
    member its own seed), each selected and exported, then written into one file (models/ensemble.py).

    Side by side, not one after another: each member gets the steps one data-parallel run would have
    had, in the same wall time. Threads, because each Ray Train run blocks its caller while its
    workers (Ray actors) do the work; a killed chain resumes each member from its own run directory."""
    from concurrent.futures import ThreadPoolExecutor

    from axion_ray.distributed import init_ray, worker_cpus
    from axion_ray.models.ensemble import write_ensemble

    export = out / "stage1.pt"
    if export.exists():
        say(f"stage 1: already trained and exported ({export})")
        return export
    init_ray(None)
    # Each member's workers take the CPUs they would have had as workers of one run, not each run's share.
    cfg = dataclasses.replace(cfg, cpus_per_worker=worker_cpus(cfg.cpus_per_worker, cfg.use_gpu, cfg.workers))
    with ThreadPoolExecutor(cfg.stage1_members, thread_name_prefix="stage1-member") as pool:
        members = list(pool.map(lambda i: _stage_export(1, trains, val, out, cfg, say, member=i),
                                range(cfg.stage1_members)))
    write_ensemble(members, export)
    say(f"stage 1: the mean of {len(members)} members → {export}")
    return export


def _write_outputs(stage: int, stores: list[TileStore], checkpoint: Path, cfg: ChainConfig,
                   say: Callable[[str], None]) -> None:
    """Run one trained stage over every working copy (done tiles are skipped: resumable)."""
    from axion_ray.pipeline.run import run_pipeline

    infer = InferConfig(stages=(stage,), preset=cfg.preset, batch_size=32, device="cuda" if cfg.use_gpu else "cpu",
                        progress_interval_s=30.0, **{f"stage{stage}_checkpoint": str(checkpoint)})
    for store in stores:
        summary = run_pipeline(store.path, infer, say=lambda line: None)
        stats = summary.per_stage.get(stage, {})
        say(f"  stage {stage} outputs on {Path(store.path).name}: {stats.get('done', 0)} written, "
            f"{stats.get('skipped', 0)} already done, {stats.get('failed', 0)} failed")


def chain_line(per_stage: dict[str, dict[str, Any]], constraints_pass: bool) -> str:
    """The chain's one-line summary: each output's NDVI/EVI RMSE and SAM against the truth."""
    parts = [f"{name} ndvi={m['ndvi_rmse']:.4f} evi={m['evi_rmse']:.4f} sam={m['sam_rad']:.4f}"
             for name, m in per_stage.items()]
    return "chain " + " | ".join(parts) + f" constraints={'PASS' if constraints_pass else 'FAIL'}"


def evaluate_chain(store: TileStore) -> dict[str, Any]:
    """Each chain output against the truth; each later stage's geometry and composite score against
    the stage before it (the hard constraints are those of Stages 2 and 3 keeping their input's edges)."""
    from axion_ray.metrics.evaluate import evaluate_store

    results = {name: evaluate_store(store, pred=name, baseline=(None if i == 0 else CHAIN_OUTPUTS[i - 1]),
                                    truth="s2_truth")
               for i, name in enumerate(CHAIN_OUTPUTS)}
    constraints = all(r["constraints_pass"] for r in results.values() if "constraints_pass" in r)
    return {"per_stage": {k: r["pred_metrics"] for k, r in results.items()}, "results": results,
            "constraints_pass": bool(constraints)}


def _report(out: Path, evaluation: dict[str, Any], exports: dict[int, Path], vals: list[str]) -> Path:
    names = ", ".join(f"`{v}`" for v in vals)
    whose = "their tiles together" if len(vals) > 1 else "its tiles"
    lines = ["# Chain report", "",
             f"Validation AOI{'s' if len(vals) > 1 else ''}: {names} (every figure computed on {whose} against "
             "s2_truth).", "",
             "| output | checkpoint | NDVI RMSE | EVI RMSE | SAM (rad) | PSNR (dB) | SSIM | composite vs previous "
             "| constraints |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, name in enumerate(CHAIN_OUTPUTS):
        r = evaluation["results"][name]
        m = r["pred_metrics"]
        comp = f"{r['composite_score']:+.4f}" if "composite_score" in r else "—"
        ok = ("PASS" if r["constraints_pass"] else "FAIL") if "constraints_pass" in r else "—"
        lines.append(f"| {name} | `{exports[i + 1].name}` | {m['ndvi_rmse']:.4f} | {m['evi_rmse']:.4f} | "
                     f"{m['sam_rad']:.4f} | {m['psnr_db']:.2f} | {m['ssim']:.4f} | {comp} | {ok} |")
    lines += ["", "Each stage's own selection report lies beside its export (`stageN_REPORT.md`).", ""]
    path = out / "CHAIN_REPORT.md"
    path.write_text("\n".join(lines))
    return path


def train_chain(train_stores: Sequence[str | Path], val_stores: str | Path | Sequence[str | Path],
                out_dir: str | Path, cfg: ChainConfig = ChainConfig(),
                say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train the whole chain into `out_dir`; returns the summary written to `chain_summary.json`.
    `val_stores`: one validation AOI or several, pooled (every stage is selected on all of them)."""
    cfg.validate()
    trains, vals = open_stores(train_stores), open_stores(val_stores, "validation")
    for val in vals:
        if val.path in [t.path for t in trains]:
            raise ConfigError(f"the validation store {val.path} is also a training store: validate on AOIs the "
                              "chain does not train on")
    if len({v.path for v in vals}) < len(vals):
        raise ConfigError("a validation store is given twice: its tiles would weigh double in every selection")
    for store in [*trains, *vals]:
        if not store.has("s2_truth"):
            raise ConfigError(f"{store.path} has no s2_truth: the chain trains against a reference image")
    out = Path(out_dir).resolve()
    val_paths = [v.path for v in vals]
    # One validation store is recorded as a path, as before several could be given: such runs still resume.
    claim_run_dir(out, {"config": dataclasses.asdict(cfg), "train_stores": [t.path for t in trains],
                        "val_store": val_paths[0] if len(vals) == 1 else val_paths},
                  file=CHAIN_CONFIG_FILE, defaults=dataclasses.asdict(ChainConfig()), resumable=frozenset(),
                  what="a chain run")

    say(f"[chain] working copies of {len(trains)} training store(s) and {len(vals)} validation store(s) → "
        f"{out / 'data'}")
    if cfg.holdout and len(trains) >= 2:
        # Stage 1 trains on some AOIs (every other one by default); Stages 2 and 3 on the rest, where
        # Stage 1's outputs carry the errors it makes on AOIs it never saw — the errors it will make in
        # production. Trained on its own training AOIs' outputs, the later stages would learn residuals
        # that do not exist elsewhere.
        ones, laters = holdout_split(len(trains), cfg.holdout_fraction)
        first = _working_copy([trains[i] for i in ones], out / "data" / "train_stage1.zarr")
        later = _working_copy([trains[i] for i in laters], out / "data" / "train_stages23.zarr")
    else:
        first = later = _working_copy(trains, out / "data" / "train.zarr")
        if cfg.holdout:
            say("[chain] one training store: Stages 2 and 3 learn from Stage 1's outputs on its own training tiles "
                "(give two or more AOIs to hold some out)")
    val_copy = _working_copy(vals, out / "data" / "val.zarr")
    exports: dict[int, Path] = {}
    train_seconds: dict[str, float] = {}
    for stage in (1, 2, 3):
        say(f"[chain] stage {stage}")
        start = time.perf_counter()
        trains_of_stage = [(first if stage == 1 else later).path]
        if stage == 1 and cfg.stage1_members > 1:
            exports[stage] = _stage1_ensemble(trains_of_stage, val_copy.path, out, cfg, say)
        else:
            exports[stage] = _stage_export(stage, trains_of_stage, val_copy.path, out, cfg, say)
        train_seconds[f"stage{stage}"] = round(time.perf_counter() - start, 1)
        # Each stage's outputs feed the next stage's training; Stage 3's only the final evaluation.
        _write_outputs(stage, [later, val_copy] if stage < 3 else [val_copy], exports[stage], cfg, say)
    evaluation = evaluate_chain(val_copy)
    report = _report(out, evaluation, exports, val_paths)
    line = chain_line(evaluation["per_stage"], evaluation["constraints_pass"])
    summary = {"run_dir": str(out), "report": str(report), "line": line,
               "checkpoints": {f"stage{s}": str(p) for s, p in exports.items()},
               "train_seconds": train_seconds,  # this invocation's (a resumed stage's is only the rest)
               "validation": {"stores": val_paths, "copy": val_copy.path, **evaluation["per_stage"],
                              "constraints_pass": evaluation["constraints_pass"]}}
    (out / "chain_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    # Labelled: a bench's own last line, on AOIs never seen, has the same shape and is not this one.
    say(f"[chain] on the validation AOI{'s' if len(vals) > 1 else ''} {', '.join(Path(p).name for p in val_paths)}: "
        f"{line}")
    return summary
