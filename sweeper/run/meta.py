"""``sweep.json``: the resolved spec, package versions, git commit, start time (contract)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweeper import about, results
from sweeper.run.storage import Storage
from sweeper.run.study import StudyTarget
from sweeper.spec import SweepSpec


def directions_for(metrics: list[str]) -> dict[str, str]:
    from trainers.metrics import METRICS

    return {m: METRICS.get(m, "max") for m in metrics}


def sweep_meta(spec: SweepSpec, storage: Storage, study: StudyTarget | None = None) -> dict[str, Any]:
    """sweep.json; ``mlflow_parent_run_id`` is filled in once the parent run exists (open_parent).

    ``optuna_storage``/``optuna_study`` say where the Optuna study is (None: the sweep keeps none)."""
    return {
        "name": spec.name,
        "spec": spec.model_dump(mode="json"),
        "metrics": spec.train_metrics,
        "directions": directions_for(spec.train_metrics),
        "objective": {
            "metric": spec.objective.metric,
            "mode": spec.metric_mode,
            "selection": spec.objective.selection,
        },  # fmt: skip
        "trials": spec.n_trials,
        "versions": about.versions(),
        "python": sys.version.split()[0],
        "git_commit": about.git_commit(),
        "started_at": datetime.now(UTC).isoformat(),
        "tracking_uri": storage.tracking_uri,
        "artifact_root": str(storage.artifact_root.resolve()),
        "mlflow_parent_run_id": None,
        **(study.record() if study else {"optuna_storage": None, "optuna_study": None}),
        "schema_version": results.SCHEMA_VERSION,
    }


# --- the sweep's state in sweep.json: running -> finished | incomplete ---------------------------
# "finished" is written only when the ledger is complete (every trial of the spec recorded);
# a driver that dies leaves "running" behind, which readers show as interrupted once no driver
# holds the sweep's lock (sweeper.run.session).
RUNNING, FINISHED, INCOMPLETE, ABORTED = "running", "finished", "incomplete", "aborted"


def write_meta(sweep_path: Path, meta: dict[str, Any]) -> None:
    results.atomic_write_text(json.dumps(meta, indent=2, default=str), Path(sweep_path) / "sweep.json")


def begin_session(
    spec: SweepSpec, storage: Storage, sweep_path: Path, *, resume: bool, study: StudyTarget | None = None
) -> dict[str, Any]:
    """sweep.json at the start of a session: a fresh sweep's, or the earlier one with this resume noted."""
    meta = sweep_meta(spec, storage, study)
    if resume:
        prev = results.read_sweep_meta(sweep_path)
        if prev:
            meta = {**prev, "resumed_at": meta["started_at"], "resumes": int(prev.get("resumes", 0)) + 1}
    meta.update(state=RUNNING, finished_at=None)
    write_meta(sweep_path, meta)
    return meta


def end_session(sweep_path: Path, ledger: Any) -> dict[str, Any]:
    """Record how the session ended: ``finished`` only when the ledger is complete."""
    meta = results.read_sweep_meta(sweep_path)
    meta["ledger"] = {"expected": ledger.spec_trials, "recorded": ledger.recorded, "missing": ledger.missing}
    if ledger.complete:
        meta.update(state=FINISHED, finished_at=datetime.now(UTC).isoformat())
    else:
        meta.update(state=INCOMPLETE, finished_at=None)
    write_meta(sweep_path, meta)
    return meta


def session_label(meta: dict[str, Any]) -> str:
    """Names this session in MLflow tags: 'resume 2 (2026-11-03T10:00:00+00:00)'."""
    n = int(meta.get("resumes", 0))
    return f"resume {n} ({meta.get('resumed_at')})" if n else f"run ({meta.get('started_at')})"


def add_budget_used(sweep_path: Path, seconds: float) -> None:
    """A time-budgeted sweep: what this session's trials used counts against ``search.time_budget_s``."""
    meta = results.read_sweep_meta(sweep_path)
    meta["time_budget_used_s"] = float(meta.get("time_budget_used_s") or 0.0) + seconds
    write_meta(sweep_path, meta)
