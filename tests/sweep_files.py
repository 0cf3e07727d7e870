"""Sweeps written straight to disk, as a driver would have left them (no Ray): for ledger, status
and lifecycle tests that must not start anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from conftest import TINY_TRAIN

from sweeper import results
from sweeper import spec as specmod
from sweeper.run import ledger
from sweeper.run.meta import begin_session, end_session
from sweeper.run.storage import Storage

SAMPLED = {
    "name": "led",
    "train": TINY_TRAIN,
    "space": {"normalizer": {"choice": ["sn", "bsn"]}, "scale": {"loguniform": [0.5, 2.0]}},
    "seeds": [0, 1],
    "search": {"sampler": "tpe", "seed": 0, "trials": 3},
}
GRID = {
    "name": "grid",
    "train": TINY_TRAIN,
    "space": {"normalizer": {"grid": ["sn", "bsn"]}, "scale": {"grid": [0.5, 1.0]}},
    "seeds": [0, 1],
    "search": {"sampler": "grid"},
}


def new_sweep(root: Path, data: dict[str, Any], tracking_uri: str | None = None) -> tuple[Any, Path]:
    """sweep.json of a sweep that has just started (state running), as ``run`` writes it."""
    spec = specmod.SweepSpec.model_validate(data)
    path = results.sweep_dir(root, spec.name)
    path.mkdir(parents=True, exist_ok=True)
    begin_session(spec, Storage(root, tracking_uri, root / "art"), path, resume=False)
    return spec, path


def start(path: Path, trial_id: str, params: dict[str, Any], seed_index: int, attempt: int = 1,
          trial_path: Path | None = None) -> None:  # fmt: skip
    """A started.jsonl line, as the recorder writes it when a trial attempt starts."""
    config = {**params, "__trial_index__": seed_index}
    ledger.note_start(path, trial_id, config, attempt, str(trial_path) if trial_path else None)


def record(path: Path, spec: Any, trial_id: str, params: dict[str, Any], seed_index: int, status: str = "completed",
           value: float = 0.5, attempt: int = 1, run_id: str | None = None) -> None:  # fmt: skip
    """A Parquet row of a finished attempt, as the recorder writes it."""
    cfg = {**spec.train, **params, "seed": spec.seeds[seed_index]}
    row = {
        "sweep": spec.name, "trial_id": trial_id, "attempt": attempt, "status": status, "error": "",
        "seed": spec.seeds[seed_index], "config_json": json.dumps(cfg, sort_keys=True), "mlflow_run_id": run_id,
        **{k: v for k, v in params.items() if k in ("normalizer",)},
        **({"scale": float(params["scale"])} if "scale" in params else {}),
        f"final_{spec.objective.metric}": value, f"best_{spec.objective.metric}": value,
    }  # fmt: skip
    results.write_trial(path, row, spec.train_metrics)


def finished_sweep(root: Path, data: dict[str, Any] = GRID) -> tuple[Any, Path]:
    """A grid sweep with every trial recorded and sweep.json saying ``finished``."""
    from sweeper.spec.points import grid_points

    spec, path = new_sweep(root, data)
    n = 0
    for pt in grid_points(spec):
        for i in range(len(spec.seeds)):
            n += 1
            start(path, f"t{n}", pt, i)
            record(path, spec, f"t{n}", pt, i)
    end_session(path, ledger.read(spec, path))
    return spec, path
