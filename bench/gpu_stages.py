"""Per-stage GPU throughput of the three stage models, AMP vs fp32, against the Axion-Sat figures.

Axion-Sat claims: Stage 2 ~80 tiles/s on an RTX 3060 at batch 4; Stage 3 ~1 s/tile at 10 timesteps
on an RTX 3090 (120x120 tiles). Models are built with random weights (speed does not depend on the
values), tiles are 120x120 (TerraMind pads to 128). Prints a Markdown table and writes JSON.

    python bench/gpu_stages.py [--json OUT] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def measure(runner, inputs, repeats: int) -> float:
    runner(inputs)  # warm-up (cuDNN autotune, allocator)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        runner(inputs)
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tile", type=int, default=120)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU: this benchmark needs one")

    from axion_ray.models import build_stage
    from axion_ray.models.runner import StageRunner

    device = torch.device("cuda")
    rng = np.random.default_rng(0)
    t = args.tile
    rows = []
    plans = [
        (2, {}, [4, 16, 64]),
        (1, {"timesteps": 10}, [1, 4, 16]),
        (3, {"timesteps": 10}, [1, 4, 16]),
        (3, {"timesteps": 1}, [4]),
    ]
    if args.quick:
        plans = [(2, {}, [4]), (3, {"timesteps": 10}, [1])]
    print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, tiles {t}x{t}")
    for stage, kwargs, batches in plans:
        model = build_stage(stage, "tiny", allow_random_init=True, device="cuda", **kwargs)
        for amp in (torch.bfloat16, torch.float16, None):
            runner = StageRunner(model, device, amp=amp is not None, amp_dtype=amp)
            for b in batches:
                inputs = {"s1": rng.normal(-14, 4, (b, 2, t, t)).astype(np.float32),
                          "opt_v1": rng.random((b, 4, t, t), dtype=np.float32) * 0.4,
                          "opt_v2": rng.random((b, 4, t, t), dtype=np.float32) * 0.4,
                          "month": np.full(b, 6), "biome_code": np.full(b, 4)}
                torch.cuda.reset_peak_memory_stats()
                try:
                    seconds = measure(runner, inputs, repeats=3 if stage != 2 else 10)
                    row = {"stage": stage, "timesteps": kwargs.get("timesteps"), "batch": b,
                           "amp": str(amp).replace("torch.", "") if amp else "fp32",
                           "tiles_per_s": b / seconds, "s_per_tile": seconds / b,
                           "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
                except Exception as exc:  # report, do not hide, a configuration that fails
                    row = {"stage": stage, "timesteps": kwargs.get("timesteps"), "batch": b,
                           "amp": str(amp).replace("torch.", "") if amp else "fp32",
                           "error": f"{type(exc).__name__}: {str(exc)[:120]}"}
                rows.append(row)
                print(json.dumps(row), flush=True)
        del model
        torch.cuda.empty_cache()

    print("\n| stage | timesteps | batch | precision | tiles/s | s/tile | peak GiB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['stage']} | {r['timesteps'] or '-'} | {r['batch']} | {r['amp']} | error: {r['error']} | | |")
        else:
            print(f"| {r['stage']} | {r['timesteps'] or '-'} | {r['batch']} | {r['amp']} | "
                  f"{r['tiles_per_s']:.1f} | {r['s_per_tile']:.4f} | {r['peak_gib']:.2f} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"gpu": torch.cuda.get_device_name(0), "tile": t, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
