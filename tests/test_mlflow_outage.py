"""MLflow outage during a sweep (issue 7): nothing is lost, nothing stalls, no run stays RUNNING.

Fast tests: MLflow's own HTTP retries really are off in the driver (a dead server
fails a call in milliseconds, not after minutes of backoff), and a tracker whose
server hangs makes the caller wait for the call that discovers the outage only:
later events are queued in microseconds and a background thread delivers them,
in order, once the server answers again.

The slow test runs ``mlflow server`` (SQLite store, 127.0.0.1, free port, one
worker, no job runner), starts a sweep against it over HTTP, stops the server by
PID for about 10 s while trials run, restarts it on the same port and store, and
checks that every trial's run exists, is FINISHED and has every evaluation step
of the objective with the values of the Parquet curves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY_TRAIN
from ray_fixtures import ProcessTree, free_ports, isolated_env, listeners, non_loopback, wait_http

from sweeper import results
from sweeper.run.tracking import Tracker

ITERATIONS, EVAL_EVERY = 160, 20
SPEC = {
    "name": "outage",
    "train": {**TINY_TRAIN, "iterations": ITERATIONS, "eval_every": EVAL_EVERY},
    "objective": {"metric": "mode_coverage"},
    "space": {"normalizer": {"choice": ["sn", "bsn"]}, "scale": {"loguniform": [0.5, 2.0]}},
    "seeds": [0],
    "search": {"sampler": "tpe", "seed": 0, "trials": 4},
    "resources": {"cpus_per_trial": 1, "max_concurrent": 2},
}
STEPS = list(range(EVAL_EVERY, ITERATIONS + 1, EVAL_EVERY))
OUTAGE_S = 10.0


# --- fast: no server ----------------------------------------------------------------------------------
def test_mlflow_http_retries_are_off_in_the_driver() -> None:
    """The tracker's env defaults win even when mlflow was imported first, and a dead server fails fast."""
    (port,) = free_ports(1)  # nothing listens there
    probe = f"""
import time, mlflow
from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES as R, MLFLOW_HTTP_REQUEST_TIMEOUT as T
from sweeper.run.tracking import Tracker
tr = Tracker("http://127.0.0.1:{port}", "dead", retry_every_s=60)
t = time.monotonic()
run = tr.start_run("r", {{}}, {{"a": 1}})
tr.log_metrics(run, {{"m": 1.0}}, step=1)
print(R.get(), T.get(), round(time.monotonic() - t, 3), tr.pending, tr.degraded)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP")}
    env.update(PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    retries, timeout, took, pending, degraded = out.stdout.split()
    assert (retries, timeout) == ("0", "10")
    assert float(took) < 2.0, f"a dead server blocked the caller {took} s"
    assert pending == "3" and degraded == "True"  # create run, params, metrics: all kept for later


class FlakyClient:
    """An MlflowClient stand-in: while ``down``, every call hangs ``hang_s`` and then fails."""

    def __init__(self, hang_s: float) -> None:
        self.down = False
        self.hang_s = hang_s
        self.calls: list[tuple] = []
        self.runs = 0
        self.status: dict[str, str] = {}

    def _call(self, *what) -> None:
        if self.down:
            time.sleep(self.hang_s)
            raise ConnectionError("read timed out")
        self.calls.append(what)

    def get_experiment_by_name(self, name):
        self._call("get_experiment", name)
        return SimpleNamespace(experiment_id="1")

    def create_run(self, experiment_id, run_name=None, tags=None):
        self._call("create_run", run_name)
        self.runs += 1
        return SimpleNamespace(info=SimpleNamespace(run_id=f"run{self.runs}"))

    def log_batch(self, run_id, metrics=(), params=()):
        self._call("log_batch", run_id, tuple((m.key, m.step) for m in metrics), len(params))

    def set_tag(self, run_id, key, value):
        self._call("set_tag", run_id, key)

    def set_terminated(self, run_id, status=None):
        self._call("set_terminated", run_id, status)
        self.status[run_id] = status


def test_hung_server_stalls_the_callback_once_then_events_are_queued_and_delivered_in_order() -> None:
    tr = Tracker("http://127.0.0.1:9", "hung", retry_every_s=0.2)
    tr.client = client = FlakyClient(hang_s=1.5)
    try:
        first = tr.start_run("t1", {"trial_id": "t1"}, {"a": 1})
        assert first.run_id == "run1" and not tr.degraded  # healthy: delivered at once, the id is known

        client.down = True
        t = time.monotonic()
        tr.log_metrics(first, {"m": 0.0}, step=10)  # discovers the outage: waits one timeout
        discover = time.monotonic() - t
        assert tr.degraded and tr.pending == 1
        waits = []
        second = None
        for step in range(20, 110, 10):  # a trial keeps reporting, another starts and ends
            t = time.monotonic()
            tr.log_metrics(first, {"m": step / 100}, step=step)
            if step == 50:
                second = tr.start_run("t2", {"trial_id": "t2"}, {"a": 2})
            if step == 90:
                tr.end_run(second)
            waits.append(time.monotonic() - t)
        tr.end_run(first)
        assert discover < 1.5 + 1.0
        assert max(waits) < 0.2, f"events waited {max(waits):.2f} s while the server hung"
        assert second.run_id is None  # not created yet: the server is down

        client.down = False  # the server is back: the retry thread delivers without any new event
        deadline = time.monotonic() + 10
        while tr.pending and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tr.pending == 0 and not tr.degraded and tr.outages == 1
        assert second.run_id == "run2"
        steps = [c[2][0][1] for c in client.calls if c[0] == "log_batch" and c[1] == "run1" and c[2]]
        assert steps == list(range(10, 110, 10))  # every event, in order, exactly once
        assert client.status == {"run1": "FINISHED", "run2": "FINISHED"}
        tr.log_metrics(first, {"m": 2.0}, step=200)  # healthy again: synchronous
        assert tr.pending == 0 and client.calls[-1][0] == "log_batch"
    finally:
        client.down = False
        tr.stop_retrying()


# --- slow: a real server, stopped and restarted during a sweep ------------------------------------------
class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a SQLite store; stopped by PID (whole tree)."""

    def __init__(self, tmp: Path, port: int) -> None:
        self.tmp, self.port = tmp, port
        self.url = f"http://127.0.0.1:{port}"
        self.env = isolated_env(tmp, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        self.tree: ProcessTree | None = None
        self.starts = 0

    def start(self, timeout_s: float = 90) -> float:
        t = time.monotonic()
        cmd = [
            sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{self.tmp / 'mlflow.db'}",
            "--default-artifact-root", str(self.tmp / "art"), "--host", "127.0.0.1", "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip
        with open(self.tmp / "mlflow-server.log", "ab") as log:
            proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.tmp
            )
        self.tree = ProcessTree(proc.pid)
        self.starts += 1
        ok = wait_http(f"{self.url}/health", timeout_s, proc)
        self.tree.refresh()
        if not ok:
            log_text = (self.tmp / "mlflow-server.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"mlflow server did not answer /health in {timeout_s:g} s:\n{log_text}")
        return time.monotonic() - t

    def stop(self) -> None:
        if self.tree is not None:
            survivors = self.tree.stop()
            assert not survivors, f"mlflow server processes survived SIGKILL: {survivors}"


class LineWatcher(threading.Thread):
    """Follows a growing log file; keeps (arrival time, line) pairs."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.lines, self.done = path, [], threading.Event()

    def run(self) -> None:
        while not self.path.exists() and not self.done.is_set():
            time.sleep(0.05)
        with open(self.path, errors="replace") as f:
            buf = ""
            while True:
                chunk = f.readline()
                if chunk:
                    buf += chunk
                    if buf.endswith("\n"):
                        self.lines.append((time.monotonic(), buf.rstrip("\n")))
                        buf = ""
                elif self.done.is_set():
                    return
                else:
                    time.sleep(0.05)

    def between(self, t0: float, t1: float) -> list[str]:
        return [line for t, line in list(self.lines) if t0 <= t <= t1]

    def seen(self, text: str) -> bool:
        return any(text in line for _, line in list(self.lines))


@pytest.mark.slow
@pytest.mark.cluster
def test_sweep_survives_mlflow_server_outage(tmp_path: Path) -> None:
    t_start = time.monotonic()
    (port,) = free_ports(1)
    server = MlflowServer(tmp_path, port)
    (tmp_path / "outage.yaml").write_text(yaml.safe_dump(SPEC))
    ray_tmp = Path(tempfile.mkdtemp(prefix="sns-", dir="/tmp"))  # Ray's socket paths must stay short
    env = {**isolated_env(tmp_path, TMPDIR=str(ray_tmp)), "PYTHONPATH": str(REPO)}
    log_path = tmp_path / "driver.log"
    watcher = LineWatcher(log_path)
    driver_tree = None
    figures: dict = {}
    try:
        figures["server_start_s"] = round(server.start(), 1)
        assert any(s.port == port for s in listeners(server.tree.alive()))
        assert not non_loopback(server.tree.alive()), non_loopback(server.tree.alive())
        with open(log_path, "w") as log:
            driver = subprocess.Popen(
                [sys.executable, "-m", "sweeper.cli", "--results-dir", str(tmp_path / "results"),
                 "--tracking-uri", server.url, "run", "outage.yaml", "--num-cpus", "2"],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        driver_tree = ProcessTree(driver.pid)
        watcher.start()

        deadline = time.monotonic() + 150
        while not watcher.seen(" started") and driver.poll() is None and time.monotonic() < deadline:
            driver_tree.refresh()
            time.sleep(0.1)
        assert driver.poll() is None and watcher.seen(" started"), log_path.read_text()[-3000:]
        time.sleep(1.0)  # the first runs exist; the outage covers trial starts, metrics, ends
        driver_tree.refresh()
        assert not non_loopback(driver_tree.alive()), non_loopback(driver_tree.alive())  # local Ray + driver

        down_at = time.monotonic()
        server.stop()
        while time.monotonic() - down_at < OUTAGE_S:
            driver_tree.refresh()
            time.sleep(0.2)
        figures["restart_s"] = round(server.start(), 1)
        up_at = time.monotonic()
        figures["outage_s"] = round(up_at - down_at, 1)
        during = watcher.between(down_at, up_at)
        figures["driver_lines_during_outage"] = len(during)
        figures["trials_finished_during_outage"] = sum(" completed " in line for line in during)

        while driver.poll() is None and time.monotonic() < deadline:
            driver_tree.refresh()
            time.sleep(0.2)
        after = watcher.between(up_at, time.monotonic())
        figures["trials_finished_after_restart"] = sum(" completed " in line for line in after)
        if driver.poll() is None:
            pytest.fail(f"the sweep did not finish in time:\n{log_path.read_text()[-4000:]}")
    finally:
        watcher.done.set()
        if driver_tree is not None:
            driver_tree.stop(grace_s=5)
        from proc_utils import kill_everything_under

        kill_everything_under(ray_tmp)
    try:
        out = log_path.read_text()
        assert driver.returncode == 0, out[-4000:]
        assert "could not be delivered" not in out, out[-3000:]
        # the outage really happened while trials ran: something was logged after the server went down
        assert figures["driver_lines_during_outage"] > 0, out[-3000:]

        sweep_path = tmp_path / "results" / "outage"
        df = pd.read_parquet(sweep_path / "trials")
        latest = results.latest_attempts(df)
        assert len(latest) == SPEC["search"]["trials"] and (latest["status"] == "completed").all()
        curves = results.load_curves(sweep_path)

        from mlflow.tracking import MlflowClient

        client = MlflowClient(server.url)
        exp = client.get_experiment_by_name("outage")
        runs = client.search_runs([exp.experiment_id], max_results=1000)
        assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
        parents = [r for r in runs if r.data.tags.get("snsweep.role") == "sweep"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        children = [r for r in runs if r.data.tags.get("snsweep.role") == "trial"]
        assert sorted(r.data.tags["trial_id"] for r in children) == sorted(latest["trial_id"])  # one run each
        metric = SPEC["objective"]["metric"]
        for run in children:
            tid = run.data.tags["trial_id"]
            assert run.info.status == "FINISHED", (tid, run.info.status)
            assert run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
            history = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, metric))
            expected = curves[(curves["trial_id"] == tid) & (curves["metric"] == metric)].sort_values("step")
            assert [s for s, _ in history] == STEPS, (tid, history)
            assert [v for _, v in history] == pytest.approx(expected["value"].tolist()), tid
        by_trial = {r.data.tags["trial_id"]: r.info.run_id for r in children}
        pairs = list(zip(latest["trial_id"], latest["mlflow_run_id"], strict=True))
        unlinked = [t for t, rid in pairs if pd.isna(rid) or not rid]
        assert not unlinked  # rows written during the outage were relinked to their runs afterwards
        assert all(rid == by_trial[t] for t, rid in pairs)
        figures.update(
            trials=len(latest), runs_finished=len(children), metric_points=len(children) * len(STEPS), lost=0,
            parquet_rows_without_run_id=len(unlinked), wall_s=round(time.monotonic() - t_start, 1),
        )  # fmt: skip
        print("\nmlflow-outage figures:", json.dumps(figures))
    finally:
        server.stop()
