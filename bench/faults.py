"""Fault-injection suite: random kills during real pipeline runs on a two-node Ray cluster, counted.

A head and a second raylet run on 127.0.0.1 (local_cluster). A clean run first gives the truth (its
`opt_v2`, from a Stage 2 checkpoint with a non-zero head) and the baseline wall time. Then each round
clears `opt_v2`, starts `axion-ray infer --address …` as a user would, waits until a random fraction of
the tiles is written and kills one of, at random:

- `actor`  — the worker process of one Stage 2 actor (SIGKILL);
- `read`   — a worker process while it runs a read task (SIGKILL);
- `node`   — the second raylet and every process on it (SIGKILL; restarted before the next round);
- `driver` — the driver process (SIGKILL); a new driver then resumes the run.

Per round: tiles lost (not done, or not equal to the truth: must be 0), tiles re-written (writes beyond
one per tile), finished tiles redone by a resumed driver (must be 0) and time lost to recovery (round
wall time minus the clean run's). Then training: a Ray Train worker killed at a step must resume from
the last checkpoint; reported with the step it resumed from and the time it cost against a clean run.

    python bench/faults.py [--rounds 8] [--tiles 256] [--seed 0] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_vs_loop import make_checkpoint, make_store  # noqa: E402

from axion_ray.distributed.local_cluster import BIN, LocalCluster, processes_titled, ray_env, wait_for  # noqa: E402
from axion_ray.store import TileStatus, TileStore  # noqa: E402

FAULTS = ("actor", "read", "node", "driver")
ACTOR_TITLE = "ray::MapWorker(MapBatches(StageActor))"
READ_TITLE = "ray::ReadAxionRayTileStore"


def start_driver(cluster: LocalCluster, store: str, checkpoint: Path, summary: Path) -> subprocess.Popen:
    cmd = [str(BIN / "axion-ray"), "infer", store, "--stages", "2", "--stage2-checkpoint", str(checkpoint),
           "--address", cluster.address, "--actors", "2:2", "--batch-size", "2", "--tiles-per-read-task", "4",
           "--json", str(summary)]
    log = open(summary.with_suffix(".log"), "w")  # a file, not a pipe: Ray forwards worker logs to the driver
    driver = subprocess.Popen(cmd, env=cluster.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    driver.log_path = Path(log.name)
    log.close()
    return driver


def finish(driver: subprocess.Popen, what: str) -> None:
    driver.wait(timeout=900)
    if driver.returncode != 0:
        tail = driver.log_path.read_text()[-2000:]
        raise RuntimeError(f"{what}: the driver failed (exit {driver.returncode}): {tail}")


def done_count(store: str) -> int:
    return int((TileStore.open(store, mode="r").status("opt_v2") == TileStatus.DONE).sum())


def clear_outputs(store: str) -> None:
    s = TileStore.open(store)
    s.write("opt_v2", np.arange(s.n_tiles), np.full((s.n_tiles, 4, s.height, s.width), np.nan, np.float32),
            mark_done=False)
    s.reset("opt_v2")


def settle(store: str, quiet_s: float = 2.0, timeout: float = 60.0) -> int:
    """Wait until nothing writes tiles any more (a killed driver's workers are reaped by their raylet)."""
    deadline, last, since = time.time() + timeout, -1, time.time()
    while time.time() < deadline:
        n = done_count(store)
        if n != last:
            last, since = n, time.time()
        elif time.time() - since >= quiet_s and not processes_titled(ACTOR_TITLE):
            return n
        time.sleep(0.2)
    return last


def inject(fault: str, cluster: LocalCluster, driver: subprocess.Popen, rng: random.Random) -> str | None:
    """Kill what `fault` names; returns what was killed, or None when there was nothing to kill."""
    if fault == "actor":
        pids = processes_titled(ACTOR_TITLE)
        if pids:
            pid = rng.choice(pids)
            os.kill(pid, signal.SIGKILL)
            return f"stage actor pid {pid}"
    elif fault == "read":
        deadline = time.time() + 30
        while time.time() < deadline and driver.poll() is None:  # read tasks are short: catch one running
            pids = processes_titled(READ_TITLE)
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                return f"read-task worker pid {pids[0]}"
            time.sleep(0.005)
    elif fault == "node":
        cluster.kill_second()
        return "second node"
    elif fault == "driver":
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        return f"driver pid {driver.pid}"
    return None


def score(store: str, truth: np.ndarray) -> tuple[int, np.ndarray]:
    s = TileStore.open(store, mode="r")
    data = s.read("opt_v2", np.arange(s.n_tiles))
    good = (s.status("opt_v2") == TileStatus.DONE) & np.isclose(data, truth, atol=1e-5, rtol=0).all(axis=(1, 2, 3))
    return int((~good).sum()), s.proc_ms("opt_v2")


def run_round(i: int, fault: str, cluster: LocalCluster, store: str, checkpoint: Path, truth: np.ndarray,
              baseline_s: float, work: Path, rng: random.Random) -> dict:
    n = TileStore.open(store, mode="r").n_tiles
    clear_outputs(store)
    start = time.time()
    driver = start_driver(cluster, store, checkpoint, work / f"round{i}.json")
    if fault == "read":
        # Small blocks are read long before the actors want them (back-pressure is by bytes), so a read
        # task is caught in the read phase: a random moment after the first one appears.
        wait_for(lambda: processes_titled(READ_TITLE) or driver.poll() is not None, "a read task", 300, 0.005)
        time.sleep(rng.uniform(0.0, 1.0))
    else:
        at = rng.uniform(0.15, 0.6)
        while done_count(store) < at * n and driver.poll() is None:
            time.sleep(0.05)
    written_at_kill = done_count(store)
    killed = inject(fault, cluster, driver, rng) if driver.poll() is None else None
    row = {"round": i, "fault": fault, "killed": killed, "at_tiles": written_at_kill, "tiles": n}
    if fault == "driver" and killed:
        done_before = settle(store)
        before = TileStore.open(store, mode="r")
        finished = before.indices_with_status("opt_v2", TileStatus.DONE)
        ms_before = before.proc_ms("opt_v2")[finished]
        resume = start_driver(cluster, store, checkpoint, work / f"round{i}_resume.json")
        finish(resume, f"round {i} resume")
        summary = json.loads((work / f"round{i}_resume.json").read_text())
        writes = done_before + summary["per_stage"]["2"]["done"]
        lost, ms_after = score(store, truth)
        row.update(scheduled_on_resume=summary["scheduled_tiles"], done_before_resume=done_before,
                   finished_redone=int((ms_after[finished] != ms_before).sum())
                   + max(0, summary["scheduled_tiles"] - (n - done_before)))
    else:
        finish(driver, f"round {i}")
        summary = json.loads((work / f"round{i}.json").read_text())
        writes = summary["per_stage"]["2"]["done"]
        lost, _ = score(store, truth)
        row["finished_redone"] = 0
    row.update(wall_s=round(time.time() - start, 1), lost=lost, rewritten=int(writes - n + lost),
               recovery_s=round(time.time() - start - baseline_s, 1))
    if fault == "node" and killed:
        cluster.start_second()
    return row


def training_fault(address: str, work: Path) -> dict:
    """A Ray Train worker killed at step 8 of 12: FailureConfig restarts the group from a checkpoint."""
    import ray
    import torch

    from axion_ray.config import SynthConfig, TrainConfig
    from axion_ray.store.synth import synthesize_aoi
    from axion_ray.train import train_stage

    ray.init(address=address, logging_level="ERROR")
    train = synthesize_aoi(work / "train.zarr", SynthConfig(rows=6, cols=6, tile_size=32, seed=1), overwrite=True)
    val = synthesize_aoi(work / "val.zarr", SynthConfig(rows=3, cols=3, tile_size=32, seed=2), overwrite=True)
    cfg = TrainConfig(allow_random_init=True, epochs=4, batch_size=6, val_every_steps=3, workers=2, max_failures=2)
    out = {}
    for name, fault_step in (("clean", None), ("killed", 8)):
        start = time.time()
        summary = train_stage(train.path, val.path, work / f"train_{name}", cfg, say=lambda _: None,
                              fault_exit_at_step=fault_step)
        final = max(summary["checkpoints"], key=lambda c: c["step"])
        state = torch.load(final["path"], map_location="cpu", weights_only=True)
        out[name] = {"wall_s": round(time.time() - start, 1), "final_step": int(state["step"]),
                     "resumed_from_step": state.get("resumed_from_step")}
    ray.shutdown()
    out["killed_at_step"] = 8
    out["recovery_s"] = round(out["killed"]["wall_s"] - out["clean"]["wall_s"], 1)
    return out


def pipeline_rounds(cluster: LocalCluster, rounds: int, n_tiles: int, rng: random.Random, work: Path
                    ) -> tuple[float, list[dict]]:
    store = make_store(work / "aoi.zarr", n_tiles, 32).path
    checkpoint = make_checkpoint(work / "stage2.pt")
    finish(start_driver(cluster, store, checkpoint, work / "truth.json"), "clean run")
    s = TileStore.open(store, mode="r")
    truth = s.read("opt_v2", np.arange(s.n_tiles))
    assert np.isfinite(truth).all() and not np.array_equal(truth, s.read("opt_v1", np.arange(s.n_tiles)))
    # The baseline is a second clean run: the first one pays for cold caches (imports, page cache).
    clear_outputs(store)
    start = time.time()
    finish(start_driver(cluster, store, checkpoint, work / "clean.json"), "clean run")
    baseline_s = time.time() - start
    assert score(store, truth)[0] == 0, "two clean runs disagree: the truth is not reproducible"
    print(f"clean run: {s.n_tiles} tiles in {baseline_s:.1f}s (baseline; the first clean run is the truth)",
          flush=True)
    faults = [FAULTS[i % len(FAULTS)] for i in range(rounds)]  # each kind, in random order
    rng.shuffle(faults)
    rows = []
    for i, fault in enumerate(faults, start=1):
        row = run_round(i, fault, cluster, store, checkpoint, truth, baseline_s, work, rng)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return baseline_s, rows


def report(baseline_s: float, rows: list[dict]) -> None:
    injected = [r for r in rows if r["killed"]]
    survived = [r for r in injected if r["lost"] == 0 and r["finished_redone"] == 0]
    print("\n| round | fault | killed at | lost | re-written | finished redone | wall s | recovery s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['round']} | {r['fault']} | {r['at_tiles']}/{r['tiles']} | {r['lost']} | {r['rewritten']} | "
              f"{r['finished_redone']} | {r['wall_s']} | {r['recovery_s'] if r['killed'] else 'not injected'} |")
    print(f"\nrounds survived: {len(survived)}/{len(injected)} injected ({len(rows)} run); tiles lost: "
          f"{sum(r['lost'] for r in rows)}; baseline {baseline_s:.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8, help="pipeline rounds (0: training only)")
    parser.add_argument("--tiles", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-training", action="store_true", help="skip the training fault")
    parser.add_argument("--json", help="also write the results as JSON")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="axion-faults-"))
    os.environ.update(ray_env())  # this process connects to the token-auth cluster too (training)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the cluster on `kill` too
    cluster = LocalCluster(cpus_per_node=2)
    baseline_s, rows, training = None, [], None
    try:
        if args.rounds:
            baseline_s, rows = pipeline_rounds(cluster, args.rounds, args.tiles, rng, work)
        if not args.no_training:
            training = training_fault(cluster.address, work)
    finally:
        cluster.stop()
    if rows:
        report(baseline_s, rows)
    if training:
        print(f"training: worker killed at step {training['killed_at_step']}, resumed from step "
              f"{training['killed']['resumed_from_step']}, finished step {training['killed']['final_step']} "
              f"(clean: {training['clean']['final_step']}); {training['recovery_s']:+.1f}s against a clean run "
              f"({training['clean']['wall_s']}s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline_s": baseline_s, "rounds": rows, "training": training},
                                              indent=2))


if __name__ == "__main__":
    main()
