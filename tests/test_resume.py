"""MLflow across a driver's death and an --overwrite, on a real SQLite store (no Ray).

The kill matrix (tests/test_kill_matrix.py) SIGKILLs real sweeps; these check the pieces it
relies on one by one: a dead driver's runs end as the ledger says (FINISHED when their trial
was recorded, KILLED with the resume's name otherwise), the parent run is adopted rather than
duplicated, and --overwrite soft-deletes the earlier sweep's runs only.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from sweep_files import SAMPLED

from sweeper.run.parent_run import open_tracking, reopen_parent, start_parent
from sweeper.run.storage import Storage
from sweeper.run.tracking import Tracker
from sweeper.spec import SweepSpec

_names = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", root / "mlartifacts"


def _sweep(store) -> tuple[SweepSpec, Tracker]:
    spec = SweepSpec.model_validate({**SAMPLED, "name": f"res{next(_names)}"})
    return spec, Tracker(store[0], spec.name, store[1])


def _trial(tracker: Tracker, parent, tid: str):
    tags = {"trial_id": tid, "snsweep.role": "trial", "status": "running", "attempt": "1"}
    return tracker.start_run(f"{tid}-a1", tags, {}, parent=parent)


def _runs(tracker: Tracker, deleted: bool = False) -> dict[str, object]:
    from mlflow.entities import ViewType

    exp = tracker.client.get_experiment_by_name(tracker.experiment_name)
    view = ViewType.DELETED_ONLY if deleted else ViewType.ACTIVE_ONLY
    return {r.info.run_name: r for r in tracker.client.search_runs([exp.experiment_id], run_view_type=view)}


def test_a_dead_drivers_runs_end_as_the_ledger_says_and_the_parent_continues(store):
    spec, dead = _sweep(store)
    parent = start_parent(dead, spec)
    recorded = _trial(dead, parent, "t1")
    _trial(dead, parent, "t2")  # cut off mid-training
    assert dead.drain(timeout_s=30)  # ... and the driver dies: every run stays RUNNING

    tracker = Tracker(store[0], spec.name, store[1])
    said: list[str] = []
    again = reopen_parent(tracker, {"mlflow_parent_run_id": parent.run_id}, spec, said.append,
                          recorded={recorded.run_id: ("t1", "completed")}, label="resume 1 (2026-01-01)")  # fmt: skip
    assert again.run_id == parent.run_id
    runs = _runs(tracker)
    assert runs[spec.name].info.status == "RUNNING"  # the parent, adopted by this session
    assert runs["t1-a1"].info.status == "FINISHED" and runs["t1-a1"].data.tags["status"] == "completed"
    killed = runs["t2-a1"]
    assert killed.info.status == "KILLED" and killed.data.tags["status"] == "killed"
    assert killed.data.tags["snsweep.ended_by"] == "resume 1 (2026-01-01)"
    assert said == ["marked 1 MLflow run(s) of the dead driver KILLED (their trials run again)",
                    "ended 1 MLflow run(s) whose trials the dead driver had recorded"]  # fmt: skip


def test_a_parent_that_never_reached_sweep_json_is_adopted_not_duplicated(store):
    spec, dead = _sweep(store)
    parent = start_parent(dead, spec)
    assert dead.drain(timeout_s=30)  # the driver died before writing the id into sweep.json

    tracker = Tracker(store[0], spec.name, store[1])
    again = reopen_parent(tracker, {}, spec, lambda _: None)
    assert again.run_id == parent.run_id
    assert [r.data.tags["snsweep.role"] for r in _runs(tracker).values()] == ["sweep"]


def test_overwrite_soft_deletes_the_earlier_sweep_and_nothing_else(store, tmp_path: Path):
    spec, old = _sweep(store)
    parent = start_parent(old, spec)
    _trial(old, parent, "t1"), _trial(old, parent, "t2")
    old.close("FINISHED")
    assert old.drain(timeout_s=30)
    other_spec, other = _sweep(store)
    start_parent(other, other_spec)
    assert other.drain(timeout_s=30)

    storage = Storage(tmp_path, store[0], store[1])
    said: list[str] = []
    tracker, fresh = open_tracking(storage, spec, tmp_path, said.append, overwrite=True)
    assert said[0] == f"deleted the 3 MLflow run(s) of the earlier sweep {spec.name} (soft delete)"
    active = _runs(tracker)
    assert list(active) == [spec.name] and active[spec.name].info.run_id == fresh.run_id  # the UI shows one
    assert sorted(_runs(tracker, deleted=True)) == sorted([spec.name, "t1-a1", "t2-a1"])  # restorable
    assert len(_runs(other)) == 1  # another sweep's runs are untouched


def test_a_driver_killed_while_mlflow_builds_its_store_leaves_no_broken_store(tmp_path: Path):
    """MLflow migrates a new SQLite store in place for seconds; a SIGKILL then used to leave a file
    no MLflow could open again ('duplicate column name'). It is now built aside and linked whole."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import REPO
    from proc_utils import wait_for

    db = tmp_path / "mlflow.db"
    code = f"from sweeper.run import sqlite_store; sqlite_store.prepare('sqlite:///{db}')"
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)})
    assert wait_for(lambda: list(tmp_path.glob(".mlflow.db.*.tmp")), timeout_s=60)  # migrating now
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not db.exists()
    tracker = Tracker(f"sqlite:///{db}", "after-kill", tmp_path / "mlartifacts")  # builds it anew
    assert tracker.experiment_id() and db.is_file()
    assert not list(tmp_path.glob(".mlflow.db.*"))  # the dead driver's half-built store is gone
