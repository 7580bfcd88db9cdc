"""Starting (or joining) Ray, and sharing a small machine's CPUs between actors, workers and reads.

Ray's default of one CPU per actor or worker deadlocks a 2-core machine: the pools take every CPU and
no read task can run. Every pool and trainer here therefore asks for a share of the cluster's CPUs
that leaves `READ_TASK_CPUS` free for the tasks that feed it — one formula, in `cpu_share`.
"""

from __future__ import annotations

import os
from pathlib import Path

#: CPUs one Ray Data read task reserves (and what every share leaves free for one).
READ_TASK_CPUS = 0.25
#: Set (by `axion-ray --verbose`) to let Ray's own log lines through to the terminal.
VERBOSE_ENV = "AXION_RAY_VERBOSE"


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def init_ray(address: str | None = None) -> None:
    """Join the cluster at `address` (or `$RAY_ADDRESS`, as inside `ray job submit`), else start a
    local Ray without a dashboard. A no-op when Ray is already initialised in this process.

    Ray's own log lines (its start-up warnings, Ray Data's execution notes, workers' output) go to its
    log files, not the terminal, unless `--verbose`: stderr carries our words.
    """
    import logging

    import ray

    if ray.is_initialized():
        return
    loud = verbose()
    level = logging.INFO if loud else logging.ERROR
    options = {"logging_level": level, "log_to_driver": loud}
    if address:
        ray.init(address=address, **options)
    elif os.environ.get("RAY_ADDRESS"):  # inside `ray job submit`
        ray.init(**options)
    else:
        ray.init(address="local", include_dashboard=False, _system_config=local_system_config(), **options)
    import ray.data  # noqa: F401  (configures Ray Data's loggers: a session file and the console)

    for handler in logging.getLogger("ray.data").handlers:
        if type(handler).__name__ != "SessionFileHandler":  # the console: quiet; its log file keeps everything
            # CRITICAL: Ray Data logs a failed run's full stack trace at ERROR; our one line says what failed.
            handler.setLevel(logging.INFO if loud else logging.CRITICAL)
    if not loud:
        _driver_fd2_to_session_log()


def local_system_config() -> dict[str, int]:
    """Ray settings for a local Ray this process starts (a cluster's own `ray start` sets its own).

    Ray keeps at most as many idle workers as there are *unreserved* CPUs (ray#36766). Our actor pools
    reserve all but `READ_TASK_CPUS` of them, so Ray killed every read worker a second after the reads
    paused, and the first write after the model's start-up waited for a new worker and its imports:
    2-3 s of the pipeline's time to the first tile (bench/RESULTS.md). One idle worker per core costs a
    few hundred MB at most and is what Ray keeps when nothing is reserved. A Ray setting, not a public
    API: Ray has no public switch for it.
    """
    return {"num_workers_soft_limit": max(2, os.cpu_count() or 1)}


def _driver_fd2_to_session_log() -> None:
    """Send what Ray's C++ core worker writes to this process's file descriptor 2 (e.g. "constructor
    arguments in the object store", ray#53727, once per actor pool) to the session's log directory,
    while Python's `sys.stderr` — our one-line errors and warnings — keeps the terminal.

    Deliberately below Ray's API: Ray offers no switch for its driver's C++ log lines, and no level
    that does not itself print a line saying so.
    """
    import sys

    import ray

    try:
        if sys.stderr is None or sys.stderr.fileno() != 2:
            return  # stderr is not the process's fd 2 (a test's capture): nothing to separate
        logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    except Exception:  # no session directory to write to: leave stderr as it is
        return
    terminal = os.dup(2)
    log = os.open(str(logs / "axion_ray_driver_stderr.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 2)
    os.close(log)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")


def cluster_cpus() -> float:
    """The CPUs of the running Ray cluster."""
    import ray

    return float(ray.cluster_resources().get("CPU", 1))


def cpu_share(consumers: float, *, cpus: float | None = None, reserve: float = READ_TASK_CPUS,
              floor: float = 0.25, per_node: float | None = None) -> float:
    """CPUs for each of `consumers` actors or workers sharing the cluster, `reserve` left for reads.

    `per_node` caps a share at what the smallest node can give beside one read task: on two 1-CPU nodes
    two 0.875-CPU actors left no node room for a read and the run hung (the multi-node test).
    """
    cpus = cluster_cpus() if cpus is None else float(cpus)
    share = (cpus - reserve) / max(consumers, 1)
    if per_node is not None:
        share = min(share, per_node - READ_TASK_CPUS)
    return max(floor, round(share, 3))


def worker_cpus(requested: float | None, use_gpu: bool, workers: int) -> float:
    """A training worker's CPUs: as asked, else one beside each GPU, else a fair share of the cluster."""
    if requested:
        return float(requested)
    return 1.0 if use_gpu else cpu_share(workers)
