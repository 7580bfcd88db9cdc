"""One run owns a store at a time: a lease with a heartbeat, and a fencing epoch on every write.

The lease is the attributes of a small Zarr group, `lease/`, in the store (a plain file there would not
be part of the Zarr hierarchy, and zarr and xarray warn about it). It holds the owner (a random token,
host, pid, command), when it started, its last heartbeat and an **epoch** that grows by one at every
acquisition. A run acquires the lease before it plans, heartbeats while it runs and releases it at the
end (the record stays, marked released, so the epoch keeps growing). A second run finds a live lease
and stops with one line naming the owner, or waits for it (`--wait`). A lease whose owner stopped
heartbeating for `ttl_s` expires; one whose owner is a dead process on this host expires at once.
Writers carry the epoch they started under and check it before each block of tiles (`LeaseGuard`): the
workers of a killed driver, still running after a new run took the store over, find a newer epoch and
write nothing.

Local stores serialise acquisition with `fcntl.flock` on the `lease/` directory; object stores cannot
lock, so acquisition there writes and then reads back its own token (a concurrent taker loses on the
read-back). The check before a block is not atomic with the block's write: a stale writer can finish the
block it had already checked (milliseconds) — the new run plans after acquiring, so such a block is a
tile it redoes, never one it reads as done with missing data (data is written before status).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axion_ray.errors import StoreBusyError
from axion_ray.store.location import filesystem, is_url

LEASE_GROUP = "lease"
LEASE_KEY = f"{LEASE_GROUP}/zarr.json"
DEFAULT_TTL_S = 30.0


def _read(store: str) -> dict[str, Any] | None:
    try:
        if is_url(store):
            fs, path = filesystem(store)
            # One GET of the whole object. Not `fs.open`: s3fs reads an open file by ranges pinned to the
            # ETag it saw first, so a heartbeat that replaced the record in between failed the read with
            # FileExpired — a pipeline's write task failed on it (seen in the object-store test).
            meta = json.loads(fs.cat_file(f"{path}/{LEASE_KEY}"))
        else:
            meta = json.loads((Path(store) / LEASE_KEY).read_text())
        return meta.get("attributes") or None
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, ValueError, AttributeError):
        return None


def _write(store: str, record: dict[str, Any]) -> None:
    text = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": record})
    if is_url(store):
        fs, path = filesystem(store)
        with fs.open(f"{path}/{LEASE_KEY}", "w") as fh:  # one PUT: whole or absent
            fh.write(text)
        return
    target = Path(store) / LEASE_KEY
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_name(f".zarr.json.{uuid.uuid4().hex}")
    tmp.write_text(text)
    tmp.replace(target)


@contextlib.contextmanager
def _locked(store: str) -> Iterator[None]:
    if is_url(store):
        yield
        return
    import fcntl

    directory = Path(store) / LEASE_GROUP
    directory.mkdir(exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(record: dict[str, Any] | None, ttl_s: float, now: float | None = None) -> dict[str, Any] | None:
    """The live owner described by a lease record, or None when it is free (released, expired, or a
    dead process on this host)."""
    if not record or record.get("released"):
        return None
    now = time.time() if now is None else now
    if now - float(record.get("heartbeat", 0)) > float(record.get("ttl_s", ttl_s)):
        return None
    if record.get("host") == socket.gethostname() and not _pid_alive(int(record.get("pid", -1))):
        return None
    return record


def describe(record: dict[str, Any]) -> str:
    age = time.time() - float(record.get("heartbeat", 0))
    return (f"run {record.get('token', '?')[:8]} ({record.get('command', '?')}) on {record.get('host', '?')}, "
            f"pid {record.get('pid', '?')}, since {record.get('started_iso', '?')}, last heartbeat {age:.0f}s ago")


@dataclass
class Lease:
    """A held lease: its epoch fences every write of this run."""

    store: str
    epoch: int
    token: str
    ttl_s: float
    record: dict[str, Any] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def heartbeat(self) -> bool:
        """Refresh the heartbeat; False when the lease is no longer ours (someone took it over)."""
        with _locked(self.store):
            current = _read(self.store)
            if not current or current.get("token") != self.token or current.get("released"):
                return False
            current["heartbeat"] = time.time()
            _write(self.store, current)
        return True

    def start_heartbeat(self) -> None:
        def beat() -> None:
            while not self._stop.wait(self.ttl_s / 3):
                if not self.heartbeat():
                    return

        self._thread = threading.Thread(target=beat, name="axion-ray-lease", daemon=True)
        self._thread.start()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with _locked(self.store):
            current = _read(self.store)
            if current and current.get("token") == self.token:
                current.update(released=True, heartbeat=time.time())
                _write(self.store, current)


def acquire(store: str, *, command: str = "run", ttl_s: float = DEFAULT_TTL_S, wait: bool = False,
            poll_s: float = 1.0, wait_timeout_s: float | None = None,
            say: Callable[[str], None] | None = None) -> Lease:
    """Take the store's lease, or raise StoreBusyError naming its owner (or wait for it with `wait`)."""
    deadline = None if wait_timeout_s is None else time.time() + wait_timeout_s
    told = False
    while True:
        with _locked(store):
            current = _read(store)
            live = holder(current, ttl_s)
            if live is None:
                epoch = int(current.get("epoch", 0)) + 1 if current else 1
                now = time.time()
                record = {"token": uuid.uuid4().hex, "epoch": epoch, "host": socket.gethostname(), "pid": os.getpid(),
                          "command": command, "started": now, "heartbeat": now, "ttl_s": ttl_s,
                          "started_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(now)),
                          "argv": " ".join(sys.argv[:6])}
                _write(store, record)
                confirmed = _read(store)
                if confirmed and confirmed.get("token") == record["token"]:
                    return Lease(store, epoch, record["token"], ttl_s, record)
                live = confirmed  # an object-store race: another run wrote after us
        if not wait or (deadline is not None and time.time() > deadline):
            raise StoreBusyError(f"store {store} is in use by {describe(live)}; wait for it to finish, or pass --wait")
        if say and not told:
            say(f"waiting for store {store}: in use by {describe(live)}")
            told = True
        time.sleep(poll_s)


@contextlib.contextmanager
def held(store: str, **kwargs: Any) -> Iterator[Lease]:
    """`acquire`, heartbeat while the block runs, release however it ends."""
    lease = acquire(store, **kwargs)
    lease.start_heartbeat()
    try:
        yield lease
    finally:
        lease.release()


@dataclass(frozen=True)
class LeaseGuard:
    """What a writer carries: the store and the epoch its run holds. `current()` is False once another
    run has taken the store over (or the lease is gone)."""

    store: str
    epoch: int

    def current(self) -> bool:
        record = _read(self.store)
        return bool(record) and int(record.get("epoch", -1)) == self.epoch and not record.get("released")
