"""Helpers for tests that start their own Ray processes (a head, a second raylet) bound to 127.0.0.1."""

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


def wait_for(check, what: str, timeout: float = 120, every: float = 2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")


def stop_session(proc: subprocess.Popen) -> None:
    """Stop every process of `proc`'s session (not `ray stop`, which would stop other tests' Ray too)."""
    def members():
        out = subprocess.run(["ps", "-eo", "pid=,sid="], capture_output=True, text=True).stdout.split("\n")
        return [int(p) for p, s in (line.split() for line in out if line.strip()) if int(s) == proc.pid]

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in members():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=20)
            break
        except subprocess.TimeoutExpired:
            continue
