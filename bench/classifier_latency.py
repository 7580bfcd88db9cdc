"""Latency of the inspection team's classifiers, measured (the "Latency (est.)" column of their table).

For each preset: params, size (fp32, and fp16 on CUDA), p50/p95 ms per image and images/s at each batch
size, at 224 px with 3 classes. Weights do not change latency, so models are built randomly initialised.
Prints one Markdown table; `--json OUT` keeps the raw figures for `axion-ray classify compare`.

    python bench/classifier_latency.py [--device cpu|cuda] [--batch-sizes 1,8,32] [--fp16]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

MODELS = ("resnet50", "convnextv2_tiny", "efficientnet_b2", "vit_small_patch14_dinov2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--json", help="directory for one latency JSON per model")
    args = parser.parse_args()

    from axion_ray.classify.latency import measure_latency
    from axion_ray.classify.models import build_classifier

    sizes = tuple(int(b) for b in args.batch_sizes.split(","))
    print("| model | params | size | batch | p50 ms/img | p95 ms/img | images/s | device |\n|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = build_classifier(name, 3, image_size=args.image_size, allow_random_init=True)
        r = measure_latency(model, image_size=args.image_size, batch_sizes=sizes, device=args.device, fp16=args.fp16,
                            iters=args.iters)
        for row in r["results"]:
            print(f"| {name} | {r['params'] / 1e6:.1f}M | {r['size_mb']:.0f} MB | {row['batch_size']} | "
                  f"{row['p50_ms_per_image']:.2f} | {row['p95_ms_per_image']:.2f} | {row['images_per_s']:.0f} | "
                  f"{r['device_name']}{' fp16' if args.fp16 else ''} |", flush=True)
        if args.json:
            Path(args.json).mkdir(parents=True, exist_ok=True)
            Path(args.json, f"{name}{'_fp16' if args.fp16 else ''}.json").write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
