"""`axion-ray select RUN --export best.pt [--fp16]`: pick the checkpoint the Axion-Sat way and export it.

Best composite score among checkpoints that pass every hard constraint; if none passes, the best
overall with a loud warning (and `fallback: true` in the metadata). With `SelectConfig.average_top_k`
≥ 2, the mean of the k best passing checkpoints' weights is one more candidate: scored on the run's
validation store by the training loop's own `Validator` (the figures a checkpoint was reported with),
exported only where it beats the best single one. Writes the §4 `.pt` (no optimizer
state; `quantization_info` under `--fp16`), its selection metadata (Axion-Sat's `selection_metadata.json`,
named after the export — `best_selection_metadata.json` — so that the chain's three exports can share
a directory) and a Markdown report in the shape of the Axion-Sat "Stage 2 Best Checkpoint" report, all
beside the exported file.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from axion_ray.config import CompositeConfig, SelectConfig, TrainConfig
from axion_ray.errors import CheckpointError
from axion_ray.models.weights import load_checkpoint, save_checkpoint
from axion_ray.train.base import CHECKPOINT_FILE
from axion_ray.train.run import RUN_CONFIG_FILE

# The Axion-Sat Stage 2 report's improvement targets (reference/000_*).
TARGET_GAINS = {"ndvi_rmse": 0.015, "evi_rmse": 0.020, "sam_rad": 0.040}


def find_checkpoints(run_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    found = sorted(run_dir.rglob(CHECKPOINT_FILE))
    if not found:
        raise CheckpointError(f"no checkpoints under {run_dir}; did `axion-ray train` finish a validation?")
    return found


def select_and_export(run_dir: str | Path, export: str | Path, *, fp16: bool = False,
                      cfg: SelectConfig = SelectConfig(), warn=print) -> dict[str, Any]:
    """Choose, export, and describe the best checkpoint of a run; returns the selection metadata."""
    cfg.validate()
    export = Path(export)
    candidates, unreadable = [], []
    for path in find_checkpoints(run_dir):
        try:
            ckpt = load_checkpoint(path, digest=False)
        except CheckpointError as exc:  # cut short (seen: a sweep trial's controller died while Ray persisted it)
            unreadable.append(exc)
            continue
        state = {"model_state_dict": ckpt.state_dict, "config": ckpt.config, **ckpt.meta}
        metrics = state["metrics"]
        candidates.append({"path": str(path), "step": int(state["step"]), "epoch": int(state["epoch"]),
                           "composite_score": float(state["composite_score"]),
                           "constraints": metrics["constraints"], "constraints_pass": bool(metrics["constraints_pass"]),
                           "metrics": metrics, "_state": state})
    if not candidates:
        raise unreadable[0]
    if unreadable:
        warn(f"WARNING: {len(unreadable)} checkpoint(s) of {run_dir} cannot be read and were skipped: {unreadable[0]}")
    passing = [c for c in candidates if c["constraints_pass"]]
    fallback = not passing
    pool = passing or candidates
    best = max(pool, key=lambda c: (c["composite_score"], c["step"]))
    if fallback:
        warn(f"WARNING: no checkpoint of {run_dir} passes the hard constraints; exporting the best composite "
             f"score anyway (step {best['step']}, {best['composite_score']:+.4f}). Do not deploy it unreviewed.")
    average = average_candidate(run_dir, passing, cfg.average_top_k, warn)
    if average.get("_state") is not None and average["constraints_pass"] \
            and average["composite_score"] > best["composite_score"]:
        best = average
    average_record = {k: v for k, v in average.items() if k not in ("_state", "metrics")}
    average_record["exported"] = best is average

    state = best["_state"]
    model_state = {k: (v.half() if fp16 and v.is_floating_point() else v) for k, v in state["model_state_dict"].items()}
    exported = {"model_state_dict": model_state, "config": state["config"], "step": best["step"],
                "epoch": best["epoch"], "metrics": best["metrics"], "composite_score": best["composite_score"],
                "provenance": state.get("provenance")}
    if "averaged_steps" in best:
        exported["averaged_steps"] = best["averaged_steps"]
    if fp16:
        exported["quantization_info"] = {"dtype": "float16"}
    export.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(exported, export)

    metadata = {
        "export": str(export), "exported_at": _dt.datetime.now().isoformat(timespec="seconds"),
        "criteria": ["best composite_score among checkpoints passing every hard constraint",
                     *([f"the mean weights of the {cfg.average_top_k} best of those, scored on the validation "
                        "store, where they pass every constraint and score higher"] if cfg.average_top_k >= 2 else []),
                     "fallback: best composite_score overall, with a warning"],
        "weights": asdict(CompositeConfig.for_stage(_stage_of(best))), "fp16": fp16, "fallback": fallback,
        "selected": {k: v for k, v in best.items() if k != "_state"},
        "candidates": [{k: v for k, v in c.items() if k not in ("_state", "metrics")} for c in candidates],
        "average": average_record,
    }
    (export.parent / metadata_name(export)).write_text(json.dumps(metadata, indent=2, default=str))
    (export.parent / f"{export.stem}_REPORT.md").write_text(report_markdown(export, best, fp16, fallback))
    return metadata


def metadata_name(export: str | Path) -> str:
    """`STEM_selection_metadata.json` beside `STEM.pt` (one per export, like `STEM_REPORT.md`)."""
    return f"{Path(export).stem}_selection_metadata.json"


def average_candidate(run_dir: str | Path, passing: list[dict[str, Any]], k: int, warn=print) -> dict[str, Any]:
    """The mean of the `k` best passing checkpoints' weights, scored like a checkpoint: a candidate
    (with `_state`, `averaged_steps`), or `{"skipped": why}` where there is nothing to average."""
    if k < 2:
        return {"skipped": "off (average_top_k below 2)"}
    top = sorted(passing, key=lambda c: (c["composite_score"], c["step"]), reverse=True)[:k]
    if len(top) < 2:
        return {"skipped": f"{len(top)} checkpoint(s) pass every constraint: nothing to average"}
    states = [c["_state"]["model_state_dict"] for c in top]
    if any("lora_" in key for key in states[0]):
        # A LoRA update is B·A: the mean of the Bs times the mean of the As is not the mean update.
        return {"skipped": "LoRA adapters: the mean of the factors is not the mean of the updates"}
    if any(s.keys() != states[0].keys() or any(s[n].shape != states[0][n].shape for n in s) for s in states):
        return {"skipped": "the checkpoints hold different architectures"}
    run_config = Path(run_dir) / RUN_CONFIG_FILE
    record = json.loads(run_config.read_text()) if run_config.exists() else None
    if record is None or not Path(record["val_store"]).exists():
        where = f"its validation store {record['val_store']} is gone" if record else f"no {RUN_CONFIG_FILE}"
        warn(f"WARNING: the {len(top)} best checkpoints of {run_dir} were not averaged: {where}")
        return {"skipped": f"cannot be scored: {where}"}
    mean = {name: (sum(s[name].double() for s in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for name, v in states[0].items()}  # counters (BatchNorm's num_batches_tracked): the best one's
    state = {**top[0]["_state"], "model_state_dict": mean}
    metrics = score_checkpoint(top[0]["path"], record, weights=mean)  # as the training loop reports a checkpoint's
    return {"path": None, "step": top[0]["step"], "epoch": top[0]["epoch"],
            "averaged_steps": [c["step"] for c in top], "composite_score": float(metrics["composite_score"]),
            "constraints": metrics["constraints"], "constraints_pass": bool(metrics["constraints_pass"]),
            "metrics": metrics, "_state": {**state, "metrics": metrics}}


def score_checkpoint(checkpoint: str | Path, record: dict[str, Any],
                     weights: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """A checkpoint of a run — or, with `weights`, the same architecture holding those weights — scored
    on the run's validation store (`record`: its `run_config.json`) by the training loop's `Validator`:
    the same tiles, baseline and composite the run reported each checkpoint with."""
    from axion_ray.models import build_stage
    from axion_ray.models.common import resolve_device
    from axion_ray.train.loop import Validator, stage_task

    config = {**asdict(TrainConfig()), **record["config"]}  # a run from before a newer option: its default
    device = resolve_device("auto")
    model = build_stage(int(config["stage"]), checkpoint=str(checkpoint), device=str(device))
    if weights is not None:  # the checkpoint loaded whole (build_stage checks that), so the keys fit
        model.load_state_dict(weights)
    return Validator(record["val_store"], stage_task(config), int(config["max_val_tiles"]))(model, device)


def _stage_of(best: dict[str, Any]) -> int:
    return int(best["_state"]["config"].get("stage", 2))


def _edge_ratio_constraint(cfg: CompositeConfig, geo: dict[str, float]) -> str:
    if cfg.min_edge_ratio is None:
        return ("- Edge ratio: not a constraint against the truth's edges, whose count includes texture no SAR "
                "reading reproduces (reported below)")
    return f"- Edge ratio > {cfg.min_edge_ratio:g}: {_check(geo['edge_ratio'] > cfg.min_edge_ratio)}"


def _check(ok: bool) -> str:
    return "✓ PASS" if ok else "✗ FAIL"


_REPORT_LABELS = {  # stage -> (baseline column, model column, what the geometry is measured against)
    1: ("Prior (opt_v1)", "Stage 1 (trained)", "the truth's edges"),
    2: ("Stage 1 (v1)", "Stage 2 (v2)", "Stage 1 geometry"),
    3: ("Stage 2 input", "Stage 3 (v3)", "the grounded input's geometry"),
}


def selected_label(best: dict[str, Any]) -> str:
    """"step N", or "the mean of steps A, B, C" for an averaged export (CLI and chain lines)."""
    if "averaged_steps" in best:
        return f"the mean of steps {', '.join(map(str, best['averaged_steps']))}"
    return f"step {best['step']}"


def _averaged_line(best: dict[str, Any]) -> str:
    if "averaged_steps" not in best:
        return ""
    return (f"\n- **Weights:** {selected_label(best)} (the best checkpoints that pass every constraint), scored on "
            "the validation store; it beat each of them")


def report_markdown(export: Path, best: dict[str, Any], fp16: bool, fallback: bool) -> str:
    """The Axion-Sat "Stage 2 Best Checkpoint" report (any stage), from measured figures only."""
    stage = _stage_of(best)
    m, cfg = best["metrics"], CompositeConfig.for_stage(stage)  # what its run was scored under
    base_label, model_label, geometry_of = _REPORT_LABELS[stage]
    pred, base, geo = m["pred"], m["baseline"], m["geometry"]
    rows = [("NDVI RMSE", "ndvi_rmse"), ("EVI RMSE", "evi_rmse"), ("SAM (rad)", "sam_rad")]
    spectral = "\n".join(
        f"| {label} | {base[k]:.4f} | {pred[k]:.4f} | {base[k] - pred[k]:+.4f} | +{TARGET_GAINS[k]:.3f} |" for label, k in rows)
    geometric = "\n".join([
        f"| Mean edge displacement | {geo['edge_disp_mean_px']:.3f} px | < {cfg.mean_disp_limit_px:g} px | "
        f"{_check(geo['edge_disp_mean_px'] < cfg.mean_disp_limit_px)} |",
        f"| Max edge displacement | {geo['edge_disp_max_px']:.3f} px | < {cfg.max_disp_limit_px:g} px | "
        f"{_check(geo['edge_disp_max_px'] < cfg.max_disp_limit_px)} |",
        f"| Edge ratio | {geo['edge_ratio']:.3f} | " + (
            f"> {cfg.min_edge_ratio:g} | {_check(geo['edge_ratio'] > cfg.min_edge_ratio)} |" if cfg.min_edge_ratio is not None
            else "— | reported (no constraint against the truth) |"),
    ])
    warning = ("\n> **WARNING**: no checkpoint passed every hard constraint; this is the best composite score "
               "overall. Review before use.\n" if fallback else "")
    return f"""# Stage {stage} Best Checkpoint

**Export Date:** {_dt.datetime.now():%Y-%m-%d %H:%M:%S}
{warning}
## Checkpoint Information

- **File:** `{export.name}`
- **Training Step:** {best['step']}
- **Training Epoch:** {best['epoch']}
- **Composite Score:** {best['composite_score']:.4f}{_averaged_line(best)}

## Selection Criteria

This checkpoint was selected based on:
1. **Spectral Plausibility Improvement** (vs the {base_label} baseline)
2. **Minimal Edge Movement Penalty** (vs {geometry_of})

### Hard Constraints
- Mean edge displacement < {cfg.mean_disp_limit_px:g} pixels: {_check(geo['edge_disp_mean_px'] < cfg.mean_disp_limit_px)}
- Max edge displacement < {cfg.max_disp_limit_px:g} pixels: {_check(geo['edge_disp_max_px'] < cfg.max_disp_limit_px)}
{_edge_ratio_constraint(cfg, geo)}

## Performance Metrics (validation store, measured)

### Spectral Improvements

| Metric | {base_label} | {model_label} | Improvement | Target |
|--------|--------------|--------------|-------------|--------|
{spectral}

### Geometric Consistency

| Metric | Value | Threshold | Status |
|--------|-------|-----------|--------|
{geometric}

## Usage

```python
from axion_ray.models import build_stage
model = build_stage({stage}, checkpoint="{export}")   # rebuilds the architecture from the checkpoint's config
```

or on a whole store / an NPZ directory:

```bash
axion-ray infer STORE.zarr --stages {stage} --stage{stage}-checkpoint {export}
axion-ray infer-npz --stage {stage} --checkpoint {export} --input_dir DIR --output_dir OUT
```
{"" if not fp16 else '''
### FP16

Exported with `--fp16` (`quantization_info: {"dtype": "float16"}`): half the size on disk. `build_stage`
loads it into an fp32 model; call `.half()` on a GPU for fp16 inference.
'''}
For the selection details and every candidate's scores, see `{metadata_name(export)}`.
"""
