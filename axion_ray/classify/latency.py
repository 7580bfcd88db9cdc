"""Latency of a classifier, measured: p50/p95 ms per image and images/s per batch size, params, size.

`compare` builds the inspection team's model-comparison table from measured runs only: accuracy and F1
from a run's `metrics.json` (or `history.json`), params/size/latency from `latency.json` files. A figure
that was not measured is shown as "not measured", never estimated.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def measure_latency(model: torch.nn.Module, *, image_size: int, batch_sizes: tuple[int, ...] = (1, 8, 32),
                    device: str = "cpu", fp16: bool = False, warmup: int = 3, iters: int = 20) -> dict[str, Any]:
    """Time `iters` forward passes per batch size after `warmup`; CUDA timings are synchronised."""
    from axion_ray.classify.models import parameter_count, size_mb

    dev = torch.device(device)
    model = model.to(dev).eval()
    if fp16:
        if dev.type != "cuda":
            raise ValueError("fp16 latency needs a CUDA device (CPU half-precision kernels are not representative)")
        model = model.half()
    dtype = torch.float16 if fp16 else torch.float32
    rows = []
    with torch.inference_mode():
        for bs in batch_sizes:
            x = torch.rand(bs, 3, image_size, image_size, device=dev, dtype=dtype)
            for _ in range(warmup):
                model(x)
            times = []
            for _ in range(iters):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            per_image = np.array(times) * 1000.0 / bs
            rows.append({"batch_size": bs, "p50_ms_per_image": float(np.percentile(per_image, 50)),
                         "p95_ms_per_image": float(np.percentile(per_image, 95)),
                         "images_per_s": float(bs / np.median(times))})
    return {"model": getattr(model, "provenance", {}).get("model"), "device": str(dev),
            "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "fp16": fp16, "image_size": image_size,
            "params": parameter_count(model), "size_mb": size_mb(model, 2 if fp16 else 4), "results": rows}


def _run_figures(run: Path) -> dict[str, Any]:
    if (run / "metrics.json").exists():
        m = json.loads((run / "metrics.json").read_text())
        f1 = np.mean([v["f1"] for v in m["per_class"].values()])
        return {"name": m["model"], "accuracy": m["accuracy_3class"], "f1": float(f1),
                "binary_accuracy": m["binary_accuracy"], "source": str(run / "metrics.json")}
    history = run / "history.json" if (run / "history.json").exists() else run / "binary" / "history.json"
    if history.exists():
        best = json.loads(history.read_text())["best"]
        return {"name": run.name, "accuracy": best["accuracy"], "f1": best["macro_f1"], "source": str(history)}
    raise FileNotFoundError(f"{run} has no metrics.json or history.json")


def compare_table(runs: list[str | Path], latencies: list[str | Path], batch_size: int = 1) -> str:
    """Markdown: model, accuracy, F1, params, size, latency (ms/image at `batch_size`), from files."""
    lat: dict[str, dict[str, Any]] = {}
    for path in latencies:
        d = json.loads(Path(path).read_text())
        lat[d["model"]] = d
    lines = [f"| Model | Accuracy | F1 Score | Params | Size | Latency (p50, batch {batch_size}) |",
             "|-------|----------|----------|--------|------|---------------|"]
    seen = set()
    for run in runs:
        f = _run_figures(Path(run))
        seen.add(f["name"])
        lines.append(_row(f["name"], f, lat.get(f["name"]), batch_size))
    for name, d in lat.items():
        if name not in seen:
            lines.append(_row(name, None, d, batch_size))
    return "\n".join(lines) + "\n"


def _row(name: str, f: dict[str, Any] | None, lat: dict[str, Any] | None, batch_size: int) -> str:
    nm = "not measured"
    acc = f"{f['accuracy']:.2%}" if f else nm
    f1 = f"{f['f1']:.4f}" if f else nm
    params = f"{lat['params'] / 1e6:.1f}M" if lat else nm
    size = f"{lat['size_mb']:.0f} MB" if lat else nm
    row = next((r for r in lat["results"] if r["batch_size"] == batch_size), None) if lat else None
    latency = f"{row['p50_ms_per_image']:.1f} ms ({lat['device_name']})" if row else nm
    return f"| {name} | {acc} | {f1} | {params} | {size} | {latency} |"
