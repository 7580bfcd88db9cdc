"""Serial PyTorch loop vs the Ray Data pipeline: the same Stage 2 model over the same Zarr store.

Start-up (time to the first finished tile) and steady-state throughput are reported separately: each
actor pool pays seconds to start (importing terratorch alone is ~7 s), which says nothing about
throughput over a large AOI. Each path runs in a fresh interpreter, as a user's script or
`axion-ray infer` would, and its start-up is counted from that interpreter's launch: both pay Python,
torch and terratorch imports. The pipeline runs twice: starting its own local Ray, and joining a Ray
that is already running, as a job on a cluster does. The loop is the one a user writes: the model
called on `--batch-size` tiles at a time. It also measures its model alone on in-memory batches —
whole, two at once on one thread each, and cut into the pipeline's CPU calls (`models.runner.
CPU_CALL_PIXELS`) — the ceiling of any pipeline's steady state on the same cores. Last line:
`ray/loop throughput ratio: X` (steady, the pipeline that started its own Ray).

    python bench/pipeline_vs_loop.py [--quick] [--tiles N] [--batch-size B] [--actors MIN:MAX]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_store(path: Path, n_tiles: int, tile: int):
    from axion_ray.config import SynthConfig
    from axion_ray.store.synth import synthesize_aoi

    side = int(np.ceil(np.sqrt(n_tiles)))
    return synthesize_aoi(path, SynthConfig(rows=side, cols=side, tile_size=tile, seed=11), overwrite=True)


def make_checkpoint(path: Path) -> Path:
    """A Stage 2 checkpoint with a non-zero head, so the model does real work end to end."""
    import torch

    from axion_ray.models import build_stage

    torch.manual_seed(0)
    model = build_stage(2, "tiny", allow_random_init=True)
    torch.nn.init.normal_(model.head.out.weight, std=0.01)
    torch.save({"model_state_dict": model.state_dict(), "config": {"stage": 2, "preset": "tiny"}}, path)
    return path


def serial_loop(store_path: str, checkpoint: Path, batch_size: int, launched: float) -> dict[str, float]:
    """The loop a user would write, timed from its interpreter's launch (`launched`, wall clock)."""
    import_start = time.time()
    import torch

    from axion_ray.models import build_stage
    from axion_ray.store import TileStore

    torch.set_num_threads(2)
    build_start = time.time()
    model = build_stage(2, checkpoint=str(checkpoint))
    built = time.time()
    store = TileStore.open(store_path)
    meta = store.tile_meta()
    first_done = None
    n = store.n_tiles
    marks = []
    for begin in range(0, n, batch_size):
        idx = np.arange(begin, min(n, begin + batch_size))
        opt_v1 = torch.from_numpy(store.read("opt_v1", idx))
        with torch.inference_mode():
            out = model(opt_v1, torch.from_numpy(meta["month"][idx].astype(np.int64)),
                        torch.from_numpy(meta["biome_code"][idx].astype(np.int64))).numpy()
        store.write("opt_v2", idx, out)
        marks.append((time.perf_counter(), begin + idx.size))
        if first_done is None:
            first_done = time.time()
    end, ended = time.perf_counter(), time.time()
    # Same definition as the pipeline's: after the first 10 % of tiles.
    t0, n0 = next((t, k) for t, k in marks if k >= 0.1 * n)
    # The model alone on the same batches held in memory: no store read or write.
    batches = [(torch.from_numpy(store.read("opt_v1", np.arange(b, min(n, b + batch_size)))),
                torch.from_numpy(meta["month"][b:b + batch_size].astype(np.int64)),
                torch.from_numpy(meta["biome_code"][b:b + batch_size].astype(np.int64)))
               for b in range(0, min(n, 16 * batch_size), batch_size)]
    model_start = time.perf_counter()
    with torch.inference_mode():
        for x, month, biome in batches:
            model(x, month, biome)
    model_only = sum(b[0].shape[0] for b in batches) / (time.perf_counter() - model_start)
    # The same batches as the pipeline's CPU actor runs them: two at once, each on one torch thread.
    from concurrent.futures import ThreadPoolExecutor

    def infer(batch):
        with torch.inference_mode():  # thread-local, so entered in each calling thread
            return model(*batch)

    torch.set_num_threads(1)
    model_start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(infer, batches))
    model_two_calls = sum(b[0].shape[0] for b in batches) / (time.perf_counter() - model_start)
    # ... and cut into the calls the pipeline's runner makes on the CPU (at most CPU_CALL_PIXELS each).
    from axion_ray.models.runner import cpu_call_tiles

    part = cpu_call_tiles(store.height, store.width)
    parts = [tuple(t[a:a + part] for t in b) for b in batches for a in range(0, b[0].shape[0], part)]
    model_start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(infer, parts))
    model_runner_calls = sum(b[0].shape[0] for b in parts) / (time.perf_counter() - model_start)
    return {"startup_s": first_done - launched, "total_s": ended - launched,
            "steady_tiles_per_s": (n - n0) / (end - t0), "model_only_tiles_per_s": model_only,
            "model_two_calls_tiles_per_s": model_two_calls, "model_runner_calls_tiles_per_s": model_runner_calls,
            "runner_call_tiles": part,
            "startup": {"interpreter_and_imports_s": build_start - launched,
                        "of_which_before_main_s": import_start - launched,
                        "model_build_s": built - build_start, "first_block_s": first_done - built}}


def ray_pipeline(store_path: str, checkpoint: Path, batch_size: int, launched: float,
                 address: str | None = None, actors: str = "1:1") -> dict[str, float]:
    """`run_pipeline` as `axion-ray infer` calls it, timed from launch: it starts its local Ray, or
    joins the one at `address` (a running cluster, as under `ray job submit`)."""
    from axion_ray.config import InferConfig
    from axion_ray.pipeline import run_pipeline

    cfg = InferConfig(stages=(2,), stage2_checkpoint=str(checkpoint), batch_size=batch_size,
                      tiles_per_read_task=batch_size, progress_interval_s=1.0, address=address,
                      actors=tuple(int(a) for a in actors.split(":")))
    called = time.time()
    summary = run_pipeline(store_path, cfg, say=lambda _: None)
    # Steady state: after the first 10 % of tiles (blocks queued behind the starting pool excluded).
    startup = {"interpreter_and_imports_s": called - launched, **summary.startup}
    startup.pop("total_s", None)
    return {"startup_s": called - launched + summary.startup["total_s"], "total_s": time.time() - launched,
            "steady_tiles_per_s": summary.steady_tiles_per_s, "startup": startup,
            "driver_imported_torch": "torch" in sys.modules}


def in_fresh_interpreter(path: str, store_path: str, checkpoint: Path, batch_size: int,
                         address: str | None = None, actors: str = "1:1") -> dict:
    """Run one path in a new Python process and return what it measured."""
    launched = time.time()
    proc = subprocess.run([sys.executable, __file__, "--child", path, store_path, str(checkpoint), str(batch_size),
                           repr(launched), address or "", str(actors)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{path} child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def pipeline_on_running_ray(store_path: Path, checkpoint: Path, batch_size: int, actors: str = "1:1") -> dict:
    """The pipeline in a fresh interpreter that joins a Ray this process started (and leaves idle)."""
    import ray

    from axion_ray.distributed.session import init_ray

    init_ray(None)  # a local Ray, as `axion-ray infer` would start it; this driver reserves nothing
    address = ray.get_runtime_context().gcs_address
    time.sleep(3.0)  # let its start-up settle: a cluster's Ray was up long before the job arrived
    try:
        return in_fresh_interpreter("pipeline", str(store_path), checkpoint, batch_size, address, actors)
    finally:
        ray.shutdown()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        path, store_path, checkpoint, batch_size, launched, address, actors = sys.argv[2:9]
        args = (store_path, Path(checkpoint), int(batch_size), float(launched))
        print(json.dumps(serial_loop(*args) if path == "loop" else ray_pipeline(*args, address=address or None,
                                                                              actors=actors)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,024 tiles (under two minutes)")
    parser.add_argument("--tiles", type=int, default=4096)
    parser.add_argument("--tile-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--actors", default="1:1", help="the pipeline's --actors MIN:MAX (each actor its share of the CPUs)")
    args = parser.parse_args()
    n_tiles = 1024 if args.quick else args.tiles
    import torch  # here, not at the top: the pipeline's child imports only what `run_pipeline` does, on its clock

    work = Path(tempfile.mkdtemp(prefix="axion-bench-"))
    try:
        checkpoint = make_checkpoint(work / "stage2.pt")
        loop_store = make_store(work / "loop.zarr", n_tiles, args.tile_size)
        shutil.copytree(loop_store.path, work / "ray.zarr")
        shutil.copytree(loop_store.path, work / "joined.zarr")
        from axion_ray.store import TileStore

        ray_store = TileStore.open(work / "ray.zarr")
        print(f"{loop_store.n_tiles} tiles of {args.tile_size} px, Stage 2 tiny, batch {args.batch_size}, "
              f"{torch.get_num_threads()} torch threads available; each path in a fresh interpreter")
        loop = in_fresh_interpreter("loop", loop_store.path, checkpoint, args.batch_size)
        print(f"serial loop : start-up {loop['startup_s']:.1f} s, steady {loop['steady_tiles_per_s']:.0f} tiles/s, "
              f"total {loop['total_s']:.1f} s; model alone {loop['model_only_tiles_per_s']:.0f} tiles/s "
              f"(two batches at once on one thread each: {loop['model_two_calls_tiles_per_s']:.0f}; the same cut into "
              f"the pipeline's CPU calls of {loop['runner_call_tiles']} tiles: {loop['model_runner_calls_tiles_per_s']:.0f})")
        pipe = in_fresh_interpreter("pipeline", ray_store.path, checkpoint, args.batch_size, actors=args.actors)
        print(f"ray pipeline: start-up {pipe['startup_s']:.1f} s, steady {pipe['steady_tiles_per_s']:.0f} tiles/s, "
              f"total {pipe['total_s']:.1f} s")
        print("start-up from launch, itemised (s):")
        print("  loop " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in loop["startup"].items()))
        print("  ray  " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in pipe["startup"].items())
              + f" (its driver imported torch: {pipe['driver_imported_torch']})")
        extra = pipe["startup_s"] - loop["startup_s"]
        print(f"pipeline's extra start-up over the loop: {extra:.1f} s, {extra - pipe['startup']['ray_start_s']:.1f} s "
              "without starting Ray")
        joined = pipeline_on_running_ray(work / "joined.zarr", checkpoint, args.batch_size, args.actors)
        print(f"ray pipeline joining a running Ray (as under `ray job submit`): start-up {joined['startup_s']:.1f} s, "
              f"steady {joined['steady_tiles_per_s']:.0f} tiles/s")
        print("  joined " + ", ".join(f"{k[:-2]} {v:.2f}" for k, v in joined["startup"].items()))
        print(f"pipeline's extra start-up over the loop, Ray already running: "
              f"{joined['startup_s'] - loop['startup_s']:.1f} s")
        expected = loop_store.read("opt_v2", range(loop_store.n_tiles))
        same = all(np.allclose(expected, TileStore.open(work / name).read("opt_v2", range(loop_store.n_tiles)),
                               atol=1e-5) for name in ("ray.zarr", "joined.zarr"))
        print(f"outputs identical: {same}")
        ceiling = max(loop["model_only_tiles_per_s"], loop["model_two_calls_tiles_per_s"],
                      loop["model_runner_calls_tiles_per_s"]) / loop["steady_tiles_per_s"]
        print(f"ceiling of any pipeline here (model alone, the faster way / loop): {ceiling:.2f}")
        print(f"ray/loop throughput ratio: {pipe['steady_tiles_per_s'] / loop['steady_tiles_per_s']:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
