"""``sweep.json``: the resolved spec, package versions, git commit, start time (contract)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
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
