"""The two-stage workflow (`axion-ray classify two-stage`), one function per step so each also runs alone.

    RUN/binary/model_best.pt      (a) binary training
    RUN/mined.json                (b) every image's p(pit), original and mined label, per-split statistics
    RUN/three_class/model_best.pt (c) 3-class head fine-tuning on the mined labels
    RUN/thresholds.json           (d) thresholds maximising accuracy with pit recall ≥ the floor
    RUN/metrics.json, REPORT.md   (e) measured results and the inspection team's model report
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from axion_ray.classify.data import MAYBE, ImageSet, load_split
from axion_ray.config import ClassifierConfig
from axion_ray.errors import ConfigError

SPLITS = ("train", "val")

# Deployment rules the report applies to measured figures (stated in the report itself).
DEPLOY_MIN_ACCURACY = 0.90
DEPLOY_MAX_MAYBE_PCT = 15.0


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(obj, indent=2, default=float))
    tmp.replace(path)


def _need(path: Path, step: str) -> Path:
    if not path.exists():
        raise ConfigError(f"{path} is missing: run `axion-ray classify {step}` first")
    return path


def _load(data_dir: str | Path, cfg: ClassifierConfig, image_size: int | None = None) -> dict[str, ImageSet]:
    return {s: load_split(data_dir, s, tuple(cfg.classes), image_size or cfg.image_size) for s in SPLITS}


def train_binary(data_dir: str | Path, run: str | Path, cfg: ClassifierConfig, say: Callable[[str], None] = print
                 ) -> dict[str, Any]:
    """(a) Binary clean/pit training; the best epoch by `cfg.select_metric` goes to RUN/binary/."""
    from axion_ray.classify.train import train_classifier

    if "pit" not in cfg.classes or len(cfg.classes) != 2:
        raise ConfigError(f"the two-stage workflow needs two classes, one named 'pit'; got {cfg.classes}")
    sets = _load(data_dir, cfg)
    for s in SPLITS:
        for item in sets[s].skipped:
            say(f"skipped unreadable image {item['path']}: {item['reason']}")
    return train_classifier(sets["train"], sets["val"], Path(run) / "binary", cfg, say=say)


def mine(data_dir: str | Path, run: str | Path, cfg: ClassifierConfig, say: Callable[[str], None] = print
         ) -> dict[str, Any]:
    """(b) Relabel uncertain or wrong predictions of the binary model as `maybe`, over train and val."""
    from axion_ray.classify.mining import mine_maybe
    from axion_ray.classify.train import load_classifier, predict_proba

    run = Path(run)
    model, mcfg = load_classifier(_need(run / "binary" / "model_best.pt", "train"))
    sets = _load(data_dir, cfg, mcfg["image_size"])
    out: dict[str, Any] = {"low": cfg.maybe_low, "high": cfg.maybe_high, "stats": {}, "images": {}}
    for split, images in sets.items():
        mined = mine_maybe(images, predict_proba(model, images.images, mcfg), low=cfg.maybe_low, high=cfg.maybe_high)
        names = mined.images.class_names
        out["stats"][split] = mined.stats()
        out["images"][split] = [{"path": p, "original": names[o], "label": names[lab], "p_pit": float(pp), "moved": bool(m)}
                                for p, o, lab, pp, m in zip(images.paths, mined.original, mined.images.labels,
                                                          mined.p_pit, mined.moved)]
        st = out["stats"][split]
        say(f"mining {split}: {st['moved']} of {st['total']} images moved to '{MAYBE}' ({st['pct']:.1f}%)")
    _write_json(run / "mined.json", out)
    return out


def _mined_sets(data_dir: str | Path, run: Path, cfg: ClassifierConfig, image_size: int) -> dict[str, ImageSet]:
    mined = json.loads(_need(run / "mined.json", "mine").read_text())
    classes = (*cfg.classes, MAYBE)
    sets = _load(data_dir, cfg, image_size)
    out = {}
    for split, images in sets.items():
        label_of = {e["path"]: classes.index(e["label"]) for e in mined["images"][split]}
        missing = [p for p in images.paths if p not in label_of]
        if missing:
            raise ConfigError(f"{len(missing)} {split} images are not in {run / 'mined.json'} (e.g. {missing[0]}); "
                              f"the data changed since mining: run `axion-ray classify mine` again")
        out[split] = ImageSet(images.images, np.array([label_of[p] for p in images.paths]), images.paths, classes,
                              images.skipped)
    return out


def train_three_class(data_dir: str | Path, run: str | Path, cfg: ClassifierConfig,
                      say: Callable[[str], None] = print) -> dict[str, Any]:
    """(c) Fine-tune a new clean/pit/maybe head on the binary model with the mined labels."""
    from axion_ray.classify.train import train_classifier

    run = Path(run)
    binary = _need(run / "binary" / "model_best.pt", "train")
    sets = _mined_sets(data_dir, run, cfg, cfg.image_size)
    return train_classifier(sets["train"], sets["val"], run / "three_class", cfg, init_from=binary, say=say)


def thresholds(data_dir: str | Path, run: str | Path, cfg: ClassifierConfig, say: Callable[[str], None] = print
               ) -> dict[str, Any]:
    """(d) Thresholds on the validation split maximising accuracy with pit recall ≥ `cfg.recall_floor`."""
    from axion_ray.classify.mining import optimise_thresholds
    from axion_ray.classify.train import load_classifier, predict_proba

    run = Path(run)
    model, mcfg = load_classifier(_need(run / "three_class" / "model_best.pt", "train --three-class"))
    val = _mined_sets(data_dir, run, cfg, mcfg["image_size"])["val"]
    probs = predict_proba(model, val.images, mcfg)
    result = optimise_thresholds(probs, val.labels, val.class_names, recall_floor=cfg.recall_floor)
    _write_json(run / "thresholds.json", result)
    say(f"thresholds: pit >= {result['pit']:.3f}, maybe >= {result['maybe']:.3f} → accuracy {result['accuracy']:.4f}, "
        f"pit recall {result['pit_recall']:.4f} (floor {cfg.recall_floor}: "
        f"{'met' if result['recall_floor_met'] else 'NOT MET'})")
    return result


def report(data_dir: str | Path, run: str | Path, cfg: ClassifierConfig, say: Callable[[str], None] = print
           ) -> dict[str, Any]:
    """(e) RUN/metrics.json and RUN/REPORT.md from the artifacts of steps a–d (measured figures only)."""
    from axion_ray.classify.mining import decide
    from axion_ray.classify.train import load_classifier, predict_proba

    run = Path(run)
    binary_hist = json.loads(_need(run / "binary" / "history.json", "train").read_text())
    three_hist = json.loads(_need(run / "three_class" / "history.json", "train --three-class").read_text())
    mined = json.loads(_need(run / "mined.json", "mine").read_text())
    th = json.loads(_need(run / "thresholds.json", "thresholds").read_text())
    model, mcfg = load_classifier(run / "three_class" / "model_best.pt")
    val = _mined_sets(data_dir, run, cfg, mcfg["image_size"])["val"]
    pred = decide(predict_proba(model, val.images, mcfg), th["pit"], th["maybe"], val.class_names)
    original = np.array([cfg.classes.index(e["original"]) for e in mined["images"]["val"]])
    pit = val.class_names.index("pit")
    is_pit = original == cfg.classes.index("pit")
    caught = float(np.isin(pred[is_pit], [pit, val.class_names.index(MAYBE)]).mean()) if is_pit.any() else 0.0
    metrics = {
        "model": mcfg["model"], "timm_name": mcfg["timm_name"],
        "binary_accuracy": float(binary_hist["best"]["accuracy"]), "binary_best_epoch": binary_hist["best_epoch"],
        "accuracy_3class": th["accuracy"], "accuracy_3class_argmax": th["argmax_accuracy"],
        "per_class": {c: {k: v[k] for k in ("precision", "recall", "f1", "support")} for c, v in th["per_class"].items()},
        "pit_caught": caught,  # original pits decided pit or maybe (sent to review): the safety figure
        "mining": mined["stats"], "mining_bounds": [mined["low"], mined["high"]],
        "thresholds": {k: th[k] for k in ("pit", "maybe", "recall_floor", "recall_floor_met", "rule")},
        "three_class_best_epoch": three_hist["best_epoch"],
        "random_init": _was_random(run),
    }
    _write_json(run / "metrics.json", metrics)
    (run / "REPORT.md").write_text(report_markdown(run, metrics, cfg))
    say(f"wrote {run / 'metrics.json'} and {run / 'REPORT.md'}")
    return metrics


def _was_random(run: Path) -> bool:
    from axion_ray.models.weights import load_checkpoint

    meta = load_checkpoint(run / "binary" / "model_best.pt", digest=False).meta
    return bool(meta.get("provenance", {}).get("random_init", False))


def recommendation(metrics: dict[str, Any], floor: float) -> tuple[str, list[str]]:
    """The deployment verdict from measured figures, and the rule each figure was checked against."""
    maybe_pct = metrics["mining"]["val"]["pct"]
    checks = [
        (metrics["thresholds"]["recall_floor_met"], f"pit recall {metrics['per_class']['pit']['recall']:.2f} ≥ {floor}"),
        (metrics["accuracy_3class"] >= DEPLOY_MIN_ACCURACY,
         f"3-class accuracy {metrics['accuracy_3class']:.2%} ≥ {DEPLOY_MIN_ACCURACY:.0%}"),
        (maybe_pct <= DEPLOY_MAX_MAYBE_PCT, f"'maybe' share of validation {maybe_pct:.1f}% ≤ {DEPLOY_MAX_MAYBE_PCT:g}%"),
        (not metrics["random_init"], "trained from pretrained weights (not a random-init smoke run)"),
    ]
    lines = [f"{'✓' if ok else '✗'} {text}" for ok, text in checks]
    if not checks[0][0]:
        return "DO NOT DEPLOY (pit recall below the safety floor)", lines
    if all(ok for ok, _ in checks):
        return "DEPLOY TO PRODUCTION", lines
    return "CANDIDATE — NEEDS REVIEW", lines


def report_markdown(run: Path, m: dict[str, Any], cfg: ClassifierConfig) -> str:
    verdict, checks = recommendation(m, cfg.recall_floor)
    rows = "\n".join(f"| **{c.capitalize()}** | {v['precision']:.2f} | {v['recall']:.2f} | {v['f1']:.2f} | {v['support']} |"
                     for c, v in m["per_class"].items())
    mining = "\n".join(f"| **{s.capitalize()}** | {v['total']} | {v['moved']} | {v['pct']:.1f}% |"
                       for s, v in m["mining"].items())
    checks_md = "\n".join(f"{i}. {line}" for i, line in enumerate(checks, 1))
    normalisation = "normalised with the backbone statistics" if cfg.normalize else "no normalisation"
    return f"""# Model Report: 2-Stage Robust Training ({m['model']})

**Date:** {_dt.date.today().isoformat()}
**Model ID:** `three_class/model_best.pt`
**Architecture:** {m['timm_name']} (timm){' — RANDOM INIT (smoke run)' if m['random_init'] else ''}
**Status:** **{verdict}**

## Executive Summary

The 3-class model (Clean/Pit/Maybe) reaches **{m['accuracy_3class']:.2%} accuracy** on the validation split with
the tuned thresholds ({m['accuracy_3class_argmax']:.2%} with plain argmax); pit recall is
**{m['per_class']['pit']['recall']:.2f}** and **{m['pit_caught']:.1%}** of all pits are flagged as Pit or Maybe.

| Class | Precision | Recall | F1-Score | Support |
|-------|-----------|--------|----------|---------|
{rows}

## Methodology

### 1. Architecture & Augmentation
- **Model:** `{m['timm_name']}`, image size {cfg.image_size}, {normalisation}.
- **Augmentation:** "Field Simulator" ({cfg.augment}): RandomAffine, ColorJitter, GaussianBlur, motion blur.
- **Training:** Ray Train DDP ({cfg.workers} workers), AdamW, cosine schedule, label smoothing {cfg.label_smoothing}.

### 2. Two-Stage Mining Workflow
1. **Stage 1 (Binary):** trained `{cfg.classes[0]}` vs `{cfg.classes[1]}` for {cfg.epochs} epochs.
   - Best binary accuracy: **{m['binary_accuracy']:.2%}** (epoch {m['binary_best_epoch']})
2. **Mining:** ran the binary model on train and val. Relabel as `maybe` if the prediction was wrong
   OR {m['mining_bounds'][0]} < p(pit) < {m['mining_bounds'][1]}.
3. **Stage 2 (3-Class):** fine-tuned a new head for Clean, Pit, Maybe ({cfg.head_epochs} epochs, backbone frozen).
4. **Thresholds:** `{m['thresholds']['rule']}` with pit = {m['thresholds']['pit']:.3f},
   maybe = {m['thresholds']['maybe']:.3f}: the highest validation accuracy with pit recall ≥ {cfg.recall_floor}
   ({'met' if m['thresholds']['recall_floor_met'] else '**not met** — best recall shown'}).

## Mining Statistics

| Dataset | Total Images | Moved to 'Maybe' | Percentage |
|---------|--------------|------------------|------------|
{mining}

## Deployment Recommendation

**{verdict}.** Rules checked on the measured figures:

{checks_md}

### Artifacts
- **Model:** `{run / 'three_class' / 'model_best.pt'}`
- **Binary model:** `{run / 'binary' / 'model_best.pt'}`
- **Mining:** `{run / 'mined.json'}` · **Thresholds:** `{run / 'thresholds.json'}` · **Metrics:** `{run / 'metrics.json'}`
- Batch inference: `axion-ray classify infer --run {run} --images DIR --out preds.parquet`
"""


def two_stage(data_dir: str | Path, run: str | Path, cfg: ClassifierConfig, say: Callable[[str], None] = print
              ) -> dict[str, Any]:
    """Steps a–e in order."""
    train_binary(data_dir, run, cfg, say)
    mine(data_dir, run, cfg, say)
    train_three_class(data_dir, run, cfg, say)
    thresholds(data_dir, run, cfg, say)
    return report(data_dir, run, cfg, say)
