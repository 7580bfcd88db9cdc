"""Two-stage "maybe" mining and 3-class threshold optimisation — the inspection team's rules, measured.

Mining (step b): with the binary model, an image is relabelled `maybe` when its prediction is wrong or
its p(pit) lies strictly between `low` and `high` (defaults 0.35, 0.65). Thresholds (step d): a 3-class
decision rule — `pit` when p(pit) ≥ t_pit, else `maybe` when p(maybe) ≥ t_maybe, else `clean` — with
both thresholds searched on a grid to maximise validation accuracy subject to pit recall ≥ a floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from axion_ray.classify.data import MAYBE, ImageSet


@dataclass
class MinedSplit:
    images: ImageSet          # relabelled: classes + (maybe,)
    p_pit: np.ndarray
    original: np.ndarray      # the binary labels
    moved: np.ndarray         # bool

    def stats(self) -> dict[str, Any]:
        total, moved = len(self.moved), int(self.moved.sum())
        return {"total": total, "moved": moved, "pct": 100.0 * moved / total if total else 0.0,
                "moved_by_class": {c: int((self.moved & (self.original == i)).sum())
                                   for i, c in enumerate(self.images.class_names[:-1])}}


def mine_maybe(images: ImageSet, probs: np.ndarray, *, positive: str = "pit", low: float = 0.35,
               high: float = 0.65) -> MinedSplit:
    """Relabel the uncertain and the misclassified as `maybe` (a third class appended after the others)."""
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"mining bounds must satisfy 0 <= low < high <= 1, got {low}, {high}")
    pos = images.class_names.index(positive)
    p_pit = probs[:, pos]
    wrong = probs.argmax(1) != images.labels
    uncertain = (p_pit > low) & (p_pit < high)
    moved = wrong | uncertain
    maybe_label = len(images.class_names)
    labels = np.where(moved, maybe_label, images.labels)
    relabelled = ImageSet(images.images, labels, images.paths, (*images.class_names, MAYBE), images.skipped)
    return MinedSplit(relabelled, p_pit, images.labels.copy(), moved)


def decide(probs: np.ndarray, t_pit: float, t_maybe: float, class_names: tuple[str, ...]) -> np.ndarray:
    """3-class decisions from (N, 3) probabilities with the two thresholds."""
    pit, maybe, clean = (class_names.index(c) for c in ("pit", MAYBE, "clean"))
    out = np.full(len(probs), clean)
    out[probs[:, maybe] >= t_maybe] = maybe
    out[probs[:, pit] >= t_pit] = pit
    return out


def optimise_thresholds(probs: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], *,
                        recall_floor: float = 0.95, grid: np.ndarray | None = None) -> dict[str, Any]:
    """Best (t_pit, t_maybe) by accuracy among those with pit recall ≥ `recall_floor`.

    If no pair reaches the floor, the pair with the highest pit recall (then accuracy) is returned with
    `recall_floor_met: false` — the caller must not present it as meeting the requirement.
    """
    from axion_ray.metrics.classification import classification_metrics

    grid = np.round(np.concatenate([[0.01], np.arange(0.025, 0.976, 0.025)]), 3) if grid is None else grid
    pit = class_names.index("pit")
    is_pit = labels == pit
    best, best_key, fallback, fallback_key = None, None, None, None
    for t_pit in grid:
        for t_maybe in grid:
            pred = decide(probs, t_pit, t_maybe, class_names)
            acc = float((pred == labels).mean())
            recall = float((pred[is_pit] == pit).mean()) if is_pit.any() else 0.0
            key = (acc, recall, -abs(t_pit - 0.5))
            if recall >= recall_floor and (best_key is None or key > best_key):
                best, best_key = (t_pit, t_maybe), key
            fkey = (recall, acc)
            if fallback_key is None or fkey > fallback_key:
                fallback, fallback_key = (t_pit, t_maybe), fkey
    met = best is not None
    t_pit, t_maybe = best if met else fallback
    pred = decide(probs, t_pit, t_maybe, class_names)
    argmax = classification_metrics(labels, probs.argmax(1), class_names)
    chosen = classification_metrics(labels, pred, class_names)
    return {"pit": float(t_pit), "maybe": float(t_maybe), "recall_floor": recall_floor, "recall_floor_met": met,
            "accuracy": chosen["accuracy"], "pit_recall": chosen["per_class"]["pit"]["recall"],
            "per_class": chosen["per_class"], "confusion_matrix": chosen["confusion_matrix"],
            "argmax_accuracy": argmax["accuracy"], "argmax_pit_recall": argmax["per_class"]["pit"]["recall"],
            "rule": "pit if p(pit) >= pit; else maybe if p(maybe) >= maybe; else clean"}
