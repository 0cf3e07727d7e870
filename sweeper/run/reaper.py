"""The reaper: a small process that stops a sweep driver's local Ray when the driver dies.

Why a process of its own: a driver killed with SIGKILL (a closed laptop lid that never wakes, a
dropped SSH session's ``kill -9``, the OOM killer) runs no clean-up code, and Ray's own fate
sharing does not cover it (measured with Ray 2.60: raylet, ``ray::DashboardAgent`` and
``ray::RuntimeEnvAgent`` outlived a SIGKILLed driver, holding ports and memory). So the driver
starts this before ``ray.init``, in a session of its own (Ctrl-C and SIGHUP reach the driver's
group, not the reaper), with a pipe on its stdin. The kernel closes that pipe when the driver
dies, however it dies: that end-of-file is the signal, so nothing needs cleaning up beforehand.

While the driver lives, the reaper notes the Ray processes the driver starts (its children whose
command line is Ray's, and everything below them). On end-of-file it stops what is still alive
of them, plus every process naming the driver's Ray session folder, SIGTERM then SIGKILL, and
notes what it stopped in the sweep's ``ray_session.json`` so the next ``run``/``resume`` can say
so. A driver that exits normally writes ``exit`` first (Ray's own shutdown has run by then); the
reaper then only sweeps up stragglers and removes the record.

Standard library only, so it starts in milliseconds; runs as ``python -m sweeper.run.reaper``.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from sweeper.run import procs

SESSION_FILE = "ray_session.json"


def spawn(record: Path) -> subprocess.Popen | None:
    """Start the reaper for this process's local Ray; None where it cannot run (no /proc)."""
    if not procs.PROC.is_dir():
        return None
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "sweeper.run.reaper", str(os.getpid()), str(Path(record).resolve())],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, env=env, cwd="/",
        )  # fmt: skip
    except OSError:
        return None


def say_exit(reaper: subprocess.Popen | None) -> None:
    """The driver is exiting normally (registered with atexit before ``ray.init``, so it runs after
    Ray's own shutdown)."""
    if reaper is not None and reaper.stdin is not None:
        try:
            reaper.stdin.write(b"exit\n")
            reaper.stdin.flush()
        except OSError:
            pass


def session_processes(session_dir: str | None, exclude: set[int] | None = None) -> list[procs.Proc]:
    """Processes that name the session folder or hold files open in it, and everything below them
    (``exclude``: the driver, which holds its own Ray logs open)."""
    if not session_dir:
        return []
    found = procs.mentioning(session_dir, exclude)
    return [p for p in procs.descendants([p.pid for p in found]) if p.pid not in (exclude or set())]


def find_session_dir(driver: int, known: list[procs.Proc]) -> str | None:
    """A driver that died during ``ray.init`` recorded no session: Ray names its session folder
    ``session_<date>_<time>_<usec>_<driver pid>``, and its daemons name it on their command lines."""
    pattern = re.compile(rf"(/[^\s=,]*/session_\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+_{driver})(?:/|$)")
    for p in known:
        for arg in procs.cmdline(p.pid):
            m = pattern.search(arg)
            if m:
                return m.group(1)
    for root in {os.environ.get("RAY_TMPDIR"), tempfile.gettempdir()} - {None}:
        found = sorted(Path(root, "ray").glob(f"session_*_{driver}"))
        if found:
            return str(found[-1])
    return None


def read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_record(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    except OSError:
        pass


def watch(driver: int, record: Path) -> None:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_IGN)
    me = procs.describe(driver)  # its start time: a PID reused later is not the driver
    known: dict[int, procs.Proc] = {}
    normal = False
    began = time.monotonic()
    while True:
        interval = 0.5 if time.monotonic() - began < 60 else 2.0  # Ray starts its daemons early on
        ready, _, _ = select.select([0], [], [], interval)
        if ready:
            data = os.read(0, 4096)
            if not data:
                break
            normal = normal or b"exit" in data
            continue
        ray_children = [p for p in (procs.describe(c) for c in procs.children(driver)) if p and procs.is_ray(p)]
        for p in procs.descendants([p.pid for p in ray_children]):
            known.setdefault(p.pid, p)
    # The pipe also closes while a normally exiting driver finalizes: wait until it is gone.
    deadline = time.monotonic() + 30
    while me is not None and me.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.2)  # let a normal shutdown's last processes go by themselves
    info = read_record(record)
    session_dir = info.get("session_dir") or find_session_dir(driver, list(known.values()))
    candidates = {p.pid: p for p in known.values() if p.alive() and p.pid != driver}
    for p in procs.descendants(list(candidates)) + session_processes(session_dir, exclude={driver}):
        candidates.setdefault(p.pid, p)
    candidates.pop(driver, None)
    stopped = procs.stop(list(candidates.values())) if candidates else []
    if normal:
        if record.exists() and info.get("driver_pid") == driver:
            record.unlink(missing_ok=True)
        return
    if info:
        info.update(
            reaped_at=datetime.now(UTC).isoformat(),
            reaped=[{"pid": p.pid, "name": p.name} for p in stopped],
        )
        write_record(record, info)


if __name__ == "__main__":
    watch(int(sys.argv[1]), Path(sys.argv[2]))
