"""Who drives a sweep: one driver at a time (a lock), and the local Ray a dead driver left behind.

The lock is an ``flock`` on ``<sweep>/.driver.lock``: the kernel drops it when the driver dies,
however it dies, so a stale lock never blocks a resume, while a second ``run``/``resume`` of a
sweep that is still being driven is refused with the other driver's PID instead of two drivers
writing the same records.

``ray_session.json`` records the local Ray a driver started (its session folder, its processes
by PID and start time, its reaper). The reaper (``sweeper.run.reaper``) normally stops a dead
driver's Ray within a second; if the reaper itself was killed too, the next ``run``/``resume``
finds the record, stops what is still alive of that session and says what it stopped. Only
processes of that recorded session on this host are ever touched; a cluster given by
``--address`` has no record.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweeper.errors import SweepError
from sweeper.run import procs
from sweeper.run.reaper import SESSION_FILE, read_record, session_processes, write_record

LOCK_FILE = ".driver.lock"


def lock_holder(sweep_path: Path) -> dict[str, Any] | None:
    """Who drives the sweep now (pid, host, since), or None when no driver holds the lock."""
    import fcntl

    path = Path(sweep_path) / LOCK_FILE
    if not path.is_file():
        return None
    try:
        with path.open("r") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                try:
                    return json.loads(path.read_text() or "{}") or {"pid": "?"}
                except ValueError:
                    return {"pid": "?"}
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


@contextlib.contextmanager
def driver_lock(sweep_path: Path, name: str) -> Iterator[None]:
    """Hold the sweep's driver lock for the ``with`` block; refuse when another driver holds it."""
    import fcntl
    import time

    sweep_path.mkdir(parents=True, exist_ok=True)
    path = sweep_path / LOCK_FILE
    f = path.open("a+")
    try:
        deadline = time.monotonic() + 2.0  # a concurrent `sweeper status` holds it for microseconds
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    who = lock_holder(sweep_path) or {}
                    raise SweepError(
                        f"sweep {name!r} is being run by pid {who.get('pid', '?')} on {who.get('host', '?')} "
                        f"since {who.get('since', '?')}; wait for it to end (`sweeper status {name}`) or stop "
                        "that process first"
                    ) from None
                time.sleep(0.1)
            except OSError:
                break  # a file system without locks (some network mounts): go on unguarded
        f.seek(0)
        f.truncate()
        f.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}))
        f.flush()
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def stop_stale(sweep_path: Path, progress: Callable[[str], None]) -> None:
    """Stop the local Ray that a dead driver of this sweep left running (and say what was stopped)."""
    record = Path(sweep_path) / SESSION_FILE
    info = read_record(record)
    if not info:
        return
    driver = procs.Proc(int(info.get("driver_pid", 0)), int(info.get("driver_start", 0)))
    if info.get("host") != socket.gethostname():
        progress(f"the previous driver ran on {info.get('host')}; its local Ray, if any, is not on this machine")
        record.unlink(missing_ok=True)
        return
    if driver.pid and driver.alive():
        return  # its process lives (a notebook that ran this sweep): its Ray may still be in use
    recorded = [procs.Proc(int(p["pid"]), int(p["start"]), p.get("name", "")) for p in info.get("processes", [])]
    alive = [p for p in recorded if p.alive()]
    here = procs.descendants([p.pid for p in alive]) + session_processes(info.get("session_dir"), {os.getpid()})
    found = {p.pid: p for p in here}
    for p in alive:
        found.setdefault(p.pid, p)
    stopped = procs.stop(list(found.values())) if found else []
    if stopped:
        progress(
            f"stopped the local Ray left running by the dead driver of this sweep (pid {driver.pid}): "
            f"{procs.summary(stopped)}"
        )
    elif info.get("reaped"):
        shown = procs.summary([procs.Proc(int(p["pid"]), 0, p.get("name", "")) for p in info["reaped"]])
        progress(f"the previous driver (pid {driver.pid}) died; its reaper stopped its local Ray: {shown}")
    record.unlink(missing_ok=True)


def record_session(sweep_path: Path, reaper_pid: int | None) -> None:
    """Note the local Ray this driver started (after ``ray.init``), for ``stop_stale``."""
    session_dir = None
    with contextlib.suppress(Exception):
        import ray

        session_dir = ray._private.worker._global_node.get_session_dir_path()  # noqa: SLF001 - no public API
    me = procs.describe(os.getpid())
    ray_procs = [p for p in (procs.describe(c) for c in procs.children(os.getpid())) if p and procs.is_ray(p)]
    tree = procs.descendants([p.pid for p in ray_procs])
    write_record(
        Path(sweep_path) / SESSION_FILE,
        {
            "driver_pid": os.getpid(),
            "driver_start": me.start if me else 0,
            "host": socket.gethostname(),
            "session_dir": session_dir,
            "reaper_pid": reaper_pid,
            "started_at": _now(),
            "processes": [{"pid": p.pid, "start": p.start, "name": p.name} for p in tree],
        },
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
