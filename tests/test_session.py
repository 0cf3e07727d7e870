"""One driver per sweep, and no local Ray outliving its driver: the lock, the reaper, stale sessions.

Real processes, no Ray: a stand-in "driver" (a Python process) starts the real reaper and a
stand-in "raylet" (a script under a ``ray/`` folder, as Ray's own daemons are), which itself
starts a child, as raylet starts workers. The driver is then SIGKILLed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO
from proc_utils import wait_for

from sweeper.errors import SweepError
from sweeper.run import procs, session
from sweeper.run.reaper import SESSION_FILE

DRIVER = textwrap.dedent(
    """
    import atexit, json, os, subprocess, sys, time
    from pathlib import Path
    from sweeper.run import reaper, session
    sweep = Path(sys.argv[1])
    r = reaper.spawn(sweep / reaper.SESSION_FILE)
    atexit.register(reaper.say_exit, r)
    fake = subprocess.Popen([sys.executable, sys.argv[2]])  # the "raylet"
    time.sleep(1.0)  # the reaper notices Ray's processes as they appear
    session.record_session(sweep, r.pid)
    print(json.dumps({"reaper": r.pid, "raylet": fake.pid}), flush=True)
    if sys.argv[3] == "exit":
        fake.kill(); fake.wait()
        sys.exit(0)
    time.sleep(600)
    """
)
RAYLET = textwrap.dedent(
    """
    import subprocess, sys, time
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # a "worker"
    time.sleep(600)
    """
)


def _driver(tmp_path: Path, how: str) -> tuple[subprocess.Popen, dict]:
    sweep = tmp_path / "results" / "s"
    sweep.mkdir(parents=True)
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "raylet.py").write_text(RAYLET)
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, str(tmp_path / "driver.py"), str(sweep), str(tmp_path / "ray" / "raylet.py"), how],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    info = json.loads(proc.stdout.readline())
    return proc, info


def _sleeper() -> subprocess.Popen:
    """A stray process, once it runs its own program (before exec it still shows pytest's)."""
    stray = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    assert wait_for(lambda: "time.sleep(600)" in " ".join(procs.cmdline(stray.pid)), timeout_s=10)
    return stray


def _tree(pid: int) -> list[procs.Proc]:
    return procs.descendants([pid])


def test_the_reaper_stops_a_sigkilled_drivers_ray_and_says_so(tmp_path: Path):
    proc, info = _driver(tmp_path, "kill")
    raylet = procs.describe(info["raylet"])
    reaper = procs.describe(info["reaper"])
    assert wait_for(lambda: len(_tree(info["raylet"])) == 2, timeout_s=10)  # raylet + its worker
    tree = _tree(info["raylet"])
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_for(lambda: not any(p.alive() for p in tree), timeout_s=15), [p.shown() for p in tree]
        assert wait_for(lambda: not reaper.alive(), timeout_s=10)  # and then it ends too
        record = json.loads((tmp_path / "results" / "s" / SESSION_FILE).read_text())
        assert {p["pid"] for p in record["reaped"]} == {p.pid for p in tree}
        assert raylet.name == "raylet.py"
    finally:
        procs.stop(tree, grace_s=1)


def test_a_driver_that_exits_normally_leaves_no_record(tmp_path: Path):
    proc, info = _driver(tmp_path, "exit")
    assert proc.wait(timeout=30) == 0
    assert wait_for(lambda: not (tmp_path / "results" / "s" / SESSION_FILE).exists(), timeout_s=10)


def test_a_stale_session_is_stopped_and_named_when_the_reaper_died_too(tmp_path: Path):
    sweep = tmp_path / "s"
    sweep.mkdir()
    stray = _sleeper()
    try:
        me = procs.describe(stray.pid)
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()  # a driver PID that no longer runs
        (sweep / SESSION_FILE).write_text(json.dumps({
            "driver_pid": dead.pid, "driver_start": 1, "host": socket.gethostname(), "session_dir": None,
            "processes": [{"pid": me.pid, "start": me.start, "name": "raylet"}],
        }))  # fmt: skip
        said: list[str] = []
        session.stop_stale(sweep, said.append)
        assert stray.wait(timeout=10) is not None
        assert said == [f"stopped the local Ray left running by the dead driver of this sweep (pid {dead.pid}): "
                        f"{me.name} (pid {me.pid})"]  # fmt: skip
        assert not (sweep / SESSION_FILE).exists()
    finally:
        stray.kill()


def test_stale_sessions_of_other_hosts_and_live_drivers_are_left_alone(tmp_path: Path):
    sweep = tmp_path / "s"
    sweep.mkdir()
    stray = _sleeper()
    try:
        me = procs.describe(stray.pid)
        mine = procs.describe(os.getpid())
        entry = [{"pid": me.pid, "start": me.start, "name": "raylet"}]
        (sweep / SESSION_FILE).write_text(json.dumps({
            "driver_pid": mine.pid, "driver_start": mine.start, "host": socket.gethostname(), "processes": entry,
        }))  # fmt: skip
        session.stop_stale(sweep, lambda _: None)  # its driver (this process) lives: its Ray may be in use
        assert me.alive()
        (sweep / SESSION_FILE).write_text(json.dumps({
            "driver_pid": 1, "driver_start": 0, "host": "elsewhere", "processes": entry,
        }))  # fmt: skip
        said: list[str] = []
        session.stop_stale(sweep, said.append)
        assert me.alive() and "ran on elsewhere" in said[0]
    finally:
        stray.kill()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sweeper.run.session import driver_lock
    with driver_lock(Path(sys.argv[1]), "s"):
        print("locked", flush=True)
        time.sleep(600)
    """
)


def test_one_driver_per_sweep_and_a_dead_drivers_lock_is_free(tmp_path: Path):
    sweep = tmp_path / "s"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(sweep)], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        who = session.lock_holder(sweep)
        assert who["pid"] == holder.pid
        with pytest.raises(SweepError, match=f"sweep 's' is being run by pid {holder.pid}"):
            with session.driver_lock(sweep, "s"):
                pass
    finally:
        holder.kill()
        holder.wait()
    assert session.lock_holder(sweep) is None  # the kernel dropped the dead driver's lock
    with session.driver_lock(sweep, "s"):
        assert session.lock_holder(sweep)["pid"] == os.getpid()
    assert session.lock_holder(sweep) is None  # released at the end of the block


def test_a_driver_killed_during_ray_init_has_its_session_found_by_its_pid(tmp_path: Path, monkeypatch):
    """No record yet: Ray names the session folder after the driver's PID, its daemons name it."""
    from sweeper.run.reaper import find_session_dir

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    (tmp_path / "ray" / "session_2026-01-02_03-04-05_123456_4242").mkdir(parents=True)
    (tmp_path / "ray" / "session_2026-01-02_03-04-05_123456_42").mkdir()
    assert find_session_dir(4242, []) == str(tmp_path / "ray" / "session_2026-01-02_03-04-05_123456_4242")
    assert find_session_dir(7, []) is None
