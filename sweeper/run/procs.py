"""Processes by PID, read from ``/proc``: what a driver's local Ray is made of, and stopping it.

Standard library only: the reaper (``sweeper.run.reaper``) runs this in a process of its own that
must start in milliseconds. Every process is identified by (pid, start time), so a PID the kernel
reused for something else is never signalled. Nothing here stops processes by name (``ray stop``
kills every Ray process on the machine, other users' included).

Linux only (``/proc``); elsewhere every function answers "nothing found" and the reaper idles.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int
    """Start time in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    name: str = ""

    def alive(self) -> bool:
        st = _stat(self.pid)
        return st is not None and st[1] == self.start and st[0] != "Z"

    def shown(self) -> str:
        return f"{self.name or '?'} (pid {self.pid})"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, start time, parent pid) of ``pid``, or None when it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19]), int(fields[1])


def cmdline(pid: int) -> list[str]:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [p.decode(errors="replace") for p in raw.split(b"\0") if p]


def describe(pid: int) -> Proc | None:
    """The process ``pid`` now, named as ``ps`` would show it (Ray retitles its workers ``ray::...``)."""
    st = _stat(pid)
    if st is None or st[0] == "Z":
        return None
    args = cmdline(pid)
    name = ""
    if args:
        first = args[0]
        name = first if first.startswith("ray::") else os.path.basename(first.split()[0])
        if name.startswith("python") and len(args) > 1:
            script = next((a for a in args[1:] if a.endswith(".py")), "")
            name = os.path.basename(script) or name
    return Proc(pid, st[1], name)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (``/proc/PID/task/*/children``; a full scan where that is missing)."""
    tasks = PROC / str(pid) / "task"
    found: list[int] = []
    try:
        for t in tasks.iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (t / "children").read_text().split()]
        return found
    except OSError:
        pass
    for entry in PROC.iterdir() if PROC.is_dir() else []:
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None and st[2] == pid:
                found.append(int(entry.name))
    return found


def descendants(pids: list[int]) -> list[Proc]:
    """``pids`` and everything below them, each as a ``Proc`` (gone ones left out)."""
    seen: dict[int, Proc] = {}
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        p = describe(pid)
        if p is None:
            continue
        seen[pid] = p
        todo += children(pid)
    return list(seen.values())


def is_ray(p: Proc) -> bool:
    """A process a local ``ray.init`` starts (GCS, raylet, dashboard, log monitor, monitor, workers)."""
    args = cmdline(p.pid)
    return bool(args) and (args[0].startswith("ray::") or any("/ray/" in a for a in args[:3]))


def mentioning(folder: str, exclude: set[int] | None = None) -> list[Proc]:
    """Every process whose command line names ``folder`` (a Ray session's), and every Ray process
    holding a file open under it: Ray retitles its agents ``ray::...`` and clears their
    environment, and once their raylet is gone they hang off PID 1, so their open log files are
    what still tells whose they are. (A ``tail -f`` on a Ray log is not a Ray process.)"""
    out = []
    prefix = folder.rstrip("/") + "/"
    skip = {os.getpid(), *(exclude or set())}
    for entry in PROC.iterdir() if PROC.is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        pid = int(entry.name)
        args = cmdline(pid)
        hit = any(folder in a for a in args)
        if not hit and args and (args[0].startswith("ray::") or any("/ray/" in a for a in args[:3])):
            with contextlib.suppress(OSError):
                for fd in (entry / "fd").iterdir():
                    with contextlib.suppress(OSError):
                        if os.readlink(fd).startswith(prefix):
                            hit = True
                            break
        if hit:
            p = describe(pid)
            if p is not None:
                out.append(p)
    return out


def stop(procs: list[Proc], grace_s: float = 3.0) -> list[Proc]:
    """SIGTERM, then SIGKILL after ``grace_s`` (gcs_server and raylet may ignore SIGTERM).

    Returns what was still alive when signalled (what was stopped), named as they were then."""
    live = [p for p in procs if p.alive()]
    live = [Proc(p.pid, p.start, (describe(p.pid) or p).name or p.name) for p in live]
    for p in live:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(p.alive() for p in live):
        time.sleep(0.1)
    for p in live:
        if p.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p.alive() for p in live):
        time.sleep(0.1)
    return live


def summary(procs: list[Proc]) -> str:
    """'raylet (pid 12), gcs_server (pid 11), 3 x ray::IDLE' for a message."""
    named: dict[str, list[int]] = {}
    for p in procs:
        named.setdefault(p.name or "?", []).append(p.pid)
    parts = []
    for name, pids in named.items():
        parts.append(f"{name} (pid {pids[0]})" if len(pids) == 1 else f"{len(pids)} x {name}")
    return ", ".join(parts)
