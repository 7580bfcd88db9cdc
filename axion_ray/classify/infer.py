"""Batch inference of a trained classifier on Ray Data: an actor pool decodes and classifies images.

`RUN` is a two-stage run (3-class model + tuned thresholds) or a single training's directory (argmax).
Rows stream into one Parquet file (`path`, `class`, `p_<class>` per class, `maybe`, `error`), written
atomically; an unreadable image gets its error and no class, and the rest of the run completes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pyarrow loads inside the actor
    import pyarrow as pa

from axion_ray.classify.data import IMAGE_SUFFIXES, MAYBE
from axion_ray.errors import ConfigError, ImageDataError


def find_model(run: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """The model of a run and its thresholds (None: argmax)."""
    run = Path(run)
    if (run / "three_class" / "model_best.pt").exists():
        th = run / "thresholds.json"
        return run / "three_class" / "model_best.pt", json.loads(th.read_text()) if th.exists() else None
    for candidate in (run / "model_best.pt", run / "binary" / "model_best.pt"):
        if candidate.exists():
            return candidate, None
    if run.is_file() and run.suffix == ".pt":
        return run, None
    raise ConfigError(f"no trained classifier in {run} (looked for three_class/model_best.pt, model_best.pt, "
                      f"binary/model_best.pt)")


class ClassifierActor:
    """One model per actor; each batch of paths is decoded here, in parallel threads."""

    def __init__(self, checkpoint: str, thresholds: dict[str, Any] | None, device: str):
        import torch

        from axion_ray.classify.train import load_classifier

        dev = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.model, self.cfg = load_classifier(checkpoint, dev)
        self.device, self.thresholds = dev, thresholds
        self.names = tuple(self.cfg["class_names"])

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        import pyarrow as pa

        from axion_ray.classify.data import decode_images
        from axion_ray.classify.mining import decide
        from axion_ray.classify.train import predict_proba

        paths = [str(p) for p in batch["path"]]
        images, ok, skipped = decode_images(paths, self.cfg["image_size"], workers=4)
        probs = np.full((len(paths), len(self.names)), np.nan, np.float32)
        classes = np.array([None] * len(paths), dtype=object)
        errors = np.array([None] * len(paths), dtype=object)
        for item in skipped:
            errors[paths.index(item["path"])] = item["reason"]
        if ok:
            p = predict_proba(self.model, images, self.cfg, self.device)
            probs[ok] = p
            if self.thresholds and MAYBE in self.names:
                labels = decide(p, self.thresholds["pit"], self.thresholds["maybe"], self.names)
            else:
                labels = p.argmax(1)
            classes[ok] = [self.names[i] for i in labels]
        # Typed columns: a batch with no unreadable image must not infer a null-typed `error` column.
        columns = {"path": pa.array(paths, pa.string()), "class": pa.array(list(classes), pa.string()),
                   **{f"p_{c}": pa.array(probs[:, i], pa.float32()) for i, c in enumerate(self.names)},
                   "maybe": pa.array([c == MAYBE for c in classes], pa.bool_()),
                   "error": pa.array(list(errors), pa.string())}
        return pa.table(columns)


def classify_images(run: str | Path, images_dir: str | Path, out: str | Path, *, batch_size: int = 32,
                    actors: tuple[int, int] = (1, 1), num_cpus: float | None = None, num_gpus: float = 0.0,
                    device: str = "auto", address: str | None = None) -> dict[str, Any]:
    """Classify every image under `images_dir` into `out` (.parquet); returns counts per class."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from axion_ray.distributed import init_ray

    checkpoint, thresholds = find_model(run)
    root = Path(images_dir)
    if not root.is_dir():
        raise ImageDataError(f"{root} is not a directory of images")
    paths = sorted(str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ImageDataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    init_ray(address)
    if num_cpus is None:  # leave room for the driver's reads on a small machine
        num_cpus = 1.0 if num_gpus else max(0.5, float(ray.cluster_resources().get("CPU", 1)) / 2 / actors[1])
    ds = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, len(paths) // batch_size))
    ds = ds.map_batches(ClassifierActor, fn_constructor_args=(str(checkpoint), thresholds, device),
                        batch_size=batch_size, compute=ray.data.ActorPoolStrategy(min_size=actors[0], max_size=actors[1]),
                        num_cpus=num_cpus, num_gpus=num_gpus, batch_format="numpy")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    writer = None
    counts: dict[str, int] = {}
    try:
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            table = batch if isinstance(batch, pa.Table) else pa.Table.from_pydict(batch)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
            for c in table.column("class").to_pylist():
                key = c if c is not None else "unreadable"
                counts[key] = counts.get(key, 0) + 1
    finally:
        if writer is not None:
            writer.close()
    tmp.replace(out)
    return {"images": len(paths), "counts": counts, "out": str(out), "checkpoint": str(checkpoint),
            "thresholds": thresholds is not None}
