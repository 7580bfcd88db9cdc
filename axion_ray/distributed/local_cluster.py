"""Ray processes on one machine: start a head and extra raylets on 127.0.0.1, find them, kill them.

For the multi-node and job-submission tests, the fault-injection bench (`bench/faults.py`) and laptop
experiments with a real multi-node cluster. Every process started here runs in its own session, so a
caller stops exactly what it started (never `ray stop`, which would stop every Ray on the machine).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env() -> dict:
    """Token auth on (Ray's default), this venv's python first on PATH (jobs inherit the head's env)."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def start_ray(args: list[str], env: dict) -> subprocess.Popen:
    """`ray start --block …` in its own session, so the test can stop exactly what it started."""
    return subprocess.Popen([str(BIN / "ray"), "start", "--block", "--disable-usage-stats", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def processes_titled(prefix: str) -> list[int]:
    """PIDs whose command line starts with `prefix`: Ray titles a worker `ray::<task or actor>` while
    it runs one (e.g. "ray::ReadAxionRayTileStore", "ray::MapWorker(MapBatches(StageActor))")."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout.splitlines()
    rows = (line.strip().split(None, 1) for line in out)
    return [int(r[0]) for r in rows if len(r) == 2 and r[1].startswith(prefix)]


def wait_for(check, what: str, timeout: float = 120, every: float = 2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


def session_members(proc: subprocess.Popen) -> list[int]:
    """Every live process of `proc`'s session: Ray's workers sit in their own process groups, not `proc`'s."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True).stdout.split("\n")
    rows = (line.split() for line in out if line.strip())
    return [int(p) for p, s, stat in rows if int(s) == proc.pid and not stat.startswith("Z")]


def signal_session(proc: subprocess.Popen, sig: int) -> None:
    for pid in session_members(proc):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def kill_session(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGKILL the whole session (a crash, not a shutdown) and wait until none of it can still write."""
    deadline = time.time() + timeout
    while True:
        signal_session(proc, signal.SIGKILL)
        if proc.poll() is not None and not session_members(proc):
            return
        if time.time() > deadline:
            raise TimeoutError(f"processes of session {proc.pid} outlived SIGKILL: {session_members(proc)}")
        time.sleep(0.1)


def stop_session(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """Stop every process of `proc`'s session (not `ray stop`, which would stop other tests' Ray too):
    SIGTERM, then SIGKILL for whatever is left after `grace_s` (`ray start --block` often outlives a
    SIGTERM to its raylet by 20 s and more)."""
    signal_session(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    kill_session(proc)


def nodes_alive(address: str, env: dict) -> int:
    """Alive nodes of the cluster at `address`, asked from a fresh process (0 while it is not up)."""
    code = f"import ray; ray.init(address={address!r}, logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))"
    out = subprocess.run([str(BIN / "python"), "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0


class LocalCluster:
    """A head and a second raylet on 127.0.0.1, with custom resources `head_node` and `second_node`.

    The second node can be lost (`kill_second`: SIGKILL, a crash) and started again (`start_second`).
    """

    def __init__(self, cpus_per_node: int = 1):
        self.env = ray_env()
        self.cpus = str(cpus_per_node)
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self.head = start_ray(["--head", "--port", str(port), "--node-ip-address", "127.0.0.1", "--num-cpus", self.cpus,
                               "--resources", '{"head_node": 1}', "--include-dashboard", "false"], self.env)
        self.second: subprocess.Popen | None = None
        try:
            wait_for(lambda: nodes_alive(self.address, self.env) == 1, "the head")
            self.start_second()
        except BaseException:
            self.stop()
            raise

    def start_second(self) -> None:
        self.second = start_ray(["--address", self.address, "--node-ip-address", "127.0.0.1", "--num-cpus", self.cpus,
                                 "--resources", '{"second_node": 1}'], self.env)
        wait_for(lambda: nodes_alive(self.address, self.env) == 2, "the second node joining", timeout=180)

    def kill_second(self) -> None:
        kill_session(self.second)
        self.second = None

    def stop(self) -> None:
        if self.second is not None:
            stop_session(self.second)
        stop_session(self.head)
