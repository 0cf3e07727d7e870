"""One trial attempt's Parquet summary row, built from what the trial reported.

Why a pure function apart from the recorder callback: the row is the contract every analysis
reads, so tests build their rows with this very function (every column the recorder writes,
``steps_done`` and the evaluation facts included) instead of a hand-made imitation that can drift.
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

CONFIG_COLUMNS = ("dataset", "model", "normalizer", "scale", "lr_g", "lr_d", "beta1", "beta2",
                  "n_dis", "batch_size", "seed", "iterations")  # fmt: skip
"""TrainConfig fields that are also Parquet columns (the rest live in ``config_json``)."""
FLOAT_COLUMNS = ("scale", "lr_g", "lr_d", "beta1", "beta2")


def summary_row(
    *,
    sweep: str,
    trial_id: str,
    attempt: int,
    status: str,
    error: str | None,
    params: Mapping[str, Any],
    history: Sequence[Mapping[str, float]],
    last: Mapping[str, Any],
    metrics: Sequence[str],
    directions: Mapping[str, str],
    started: datetime,
    finished: datetime,
    run_id: str | None = None,
    error_log: str | None = None,
) -> dict[str, Any]:
    """The summary row of one attempt (schema v2).

    ``params`` is the resolved TrainConfig as a dict (plus the resolved ``loss``); ``history`` the
    evaluation history (``step`` + metrics per evaluation); ``last`` the last result the trial
    reported. ``final_M`` is M at the last evaluation (NaN when that evaluation could not compute
    it, e.g. a diverged G), ``best_M`` the best finite M during training with its step. ``error``
    is None when there is none, ``error_log`` the traceback file of a failed attempt; the evaluation
    facts come from the configuration through
    ``trainers.metrics.evaluation_facts``, which the evaluator itself follows.
    """
    from trainers.config import TrainConfig
    from trainers.metrics import evaluation_facts

    cfg = TrainConfig.from_dict(dict(params))
    row: dict[str, Any] = {
        "sweep": sweep,
        "trial_id": trial_id,
        "attempt": int(attempt),
        "status": status,
        "error": error or None,
        "error_log": error_log,
        "steps_done": int(last.get("step", 0)) if last else 0,
        **evaluation_facts(cfg),
        "wall_seconds": (finished - started).total_seconds(),
        "started_at": started,
        "finished_at": finished,
        "host": str(last.get("hostname") or socket.gethostname()),
        "mlflow_run_id": run_id,
        "config_json": json.dumps(dict(params), sort_keys=True, default=str),
    }
    for col in CONFIG_COLUMNS:
        row[col] = getattr(cfg, col)
    for col in FLOAT_COLUMNS:
        row[col] = float(row[col])
    for m in metrics:
        vals = [(int(h["step"]), h[m]) for h in history if m in h and math.isfinite(h[m])]
        row[f"final_{m}"] = float(history[-1][m]) if history and m in history[-1] else None
        if vals:
            pick = max if directions.get(m, "max") == "max" else min
            step, value = pick(vals, key=lambda sv: sv[1])
            row[f"best_{m}"], row[f"best_{m}_step"] = float(value), step
        else:
            row[f"best_{m}"], row[f"best_{m}_step"] = None, None
    return row
