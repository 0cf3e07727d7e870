"""Stopping a sweep at its first deterministic configuration error.

A ``ConfigError`` in a trial (a data root a worker cannot read, a checkpoint of another config,
weights that fail their hash on a node) fails every retry and every other trial with the same
inputs the same way: running them costs the whole sweep's time for nothing. The recorder hands
the first one to ``AbortStopper.abort``; Tune asks ``stop_all()`` after every event, then starts
no further trial and stops the running ones. ``finish_aborted`` closes the record: rows for the
trials the abort stopped, MLflow runs ended, ``sweep.json`` saying ``aborted`` and why, and the
one line the CLI prints (exit code 2). Transient failures (a dead worker, OOM, a lost node) never
come here: they keep Tune's retries (``resources.max_failures``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ray.tune import Stopper

from sweeper import results
from sweeper.errors import SweepError
from sweeper.run.meta import ABORTED


@dataclass(frozen=True)
class Abort:
    """Why a sweep stopped: the trial (its number in the progress lines and id), its message."""

    trial: int
    trial_id: str
    message: str
    error_log: str | None
    """The traceback file, relative to the sweep dir."""
    at: str


class AbortStopper(Stopper):
    """Tune's ``stop=``: never stops one trial on a result, stops the whole sweep once aborted."""

    def __init__(self) -> None:
        self.reason: Abort | None = None

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.reason is not None

    def abort(self, trial: int, trial_id: str, message: str, error_log: str | None) -> bool:
        """Record the first abort; False when the sweep was already aborted."""
        if self.reason is not None:
            return False
        self.reason = Abort(trial, trial_id, message, error_log, datetime.now(UTC).isoformat())
        # The trials this stops may fail the same way before they stop; Ray would print each such
        # dropped error with its whole traceback. They are this abort's, not news.
        os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
        return True

    def __reduce__(self):  # noqa: ANN204
        # Tune pickles the run config into its experiment state: a restored sweep starts un-aborted.
        return (AbortStopper, ())


def finish_aborted(sweep_path: Path, recorder: Any, progress: Callable[[str], None]) -> SweepError:
    """Close the record of an aborted sweep; returns the one-line error for the CLI to raise."""
    abort: Abort = recorder.stopper.reason
    stopped = recorder.finish_open(f"stopped: the sweep was aborted by trial {abort.trial} [{abort.trial_id}]")
    tracker, parent = recorder.tracker, recorder.parent
    if tracker is not None and parent is not None:
        tracker.set_tags(parent, {"status": "aborted", "error": abort.message})
        tracker.end_run(parent, "FAILED")
        tracker.close("KILLED")
        if not tracker.drain(timeout_s=60, progress=progress):
            progress(f"warning: {tracker.pending} MLflow calls could not be delivered ({tracker.last_error})")
        recorder.relink()
    meta = results.read_sweep_meta(sweep_path)
    meta["state"] = ABORTED  # run.meta's states: running -> finished | incomplete | aborted
    meta["aborted"] = {**asdict(abort), "trials_stopped": stopped}
    if parent is not None and parent.run_id:
        meta["mlflow_parent_run_id"] = parent.run_id
    results.atomic_write_text(json.dumps(meta, indent=2, default=str), sweep_path / "sweep.json")
    where = f"; traceback: {sweep_path / abort.error_log}" if abort.error_log else ""
    others = f", {stopped} running trial(s) stopped" if stopped else ""
    return SweepError(
        f"sweep aborted: trial {abort.trial} [{abort.trial_id}] failed with a configuration error that every "
        f"trial would repeat: {abort.message}{where}; no further trial started{others}. Fix it, check with "
        "`sweeper validate`, then start again with `sweeper run ... --overwrite`"
    )
