"""Process helpers for tests that start and kill services: stop by PID, never by name."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Processes whose command line mentions ``text`` (e.g. a test's private temp dir)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(text in part for part in (p.info["cmdline"] or [])) and p.pid != os.getpid():
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    for p in [*parent.children(recursive=True), parent]:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def stop(pids: list[int], grace_s: float = 5.0) -> None:
    """SIGTERM, wait, then SIGKILL whatever is left (gcs_server and raylet may ignore SIGTERM)."""
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=grace_s)


def kill_everything_under(tmp: Path) -> None:
    """Kill every process whose command line mentions ``tmp`` (a test's Ray session lives there)."""
    procs = processes_mentioning(str(tmp))
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def wait_for(predicate, timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False
