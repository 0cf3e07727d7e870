"""The MLflow side of the recorder: how one trial attempt reads as an MLflow run.

``SweepRecorder`` decides *when* (a trial starts, checkpoints, ends); this decides *what*: the
run's name (``bsn c=2 s1``) and tags (the standard ``mlflow.user`` / ``mlflow.source.*`` ones
plus the contract's ``trial_id``, ``normalizer``, ...), each checkpoint's sample grid as a step
of the ``samples`` image series, the final generator of a completed trial as an MLflow model,
and the objective as a runs-table column. Every call goes through the tracker's queue.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sweeper import results
from sweeper.run import mlflow_layout as layout
from sweeper.run.generator_model import ModelWorker, readable_grid, save_generator, snapshots
from sweeper.run.tracking import RunHandle, Tracker


class TrialRuns:
    def __init__(self, sweep_path: Path, metric: str, selection: str, mode: str, say: Callable[[str], None]):
        self.sweep_path = Path(sweep_path)
        self.metric = metric
        self.objective = layout.objective_column(metric, selection)
        self.mode = mode
        self.say = say
        self._standard: dict[str, str] | None = None
        self._model_params: dict[str, dict[str, Any]] = {}
        self._best: float | None = None
        self._models = ModelWorker(lambda why: self.say(f"    (could not log a trial's generator: {why})"))

    def standard_tags(self) -> dict[str, str]:
        """``mlflow.user`` / ``mlflow.source.*``; the git commit is sweep.json's (read once)."""
        if self._standard is None:
            try:
                commit = results.read_sweep_meta(self.sweep_path).get("git_commit")
            except Exception:  # noqa: BLE001 - a tag is not worth failing a trial over
                commit = None
            self._standard = layout.standard_tags(commit)
        return self._standard

    def name_and_tags(
        self, tid: str, number: int, attempt: int, params: dict[str, Any], config: dict[str, Any]
    ) -> tuple[str, dict[str, str]]:
        varied = [k for k in config if not k.startswith("__")]
        self._model_params[tid] = {k: params[k] for k in layout.table_params(varied) if k in params}
        about = layout.trial_description(self.sweep_path.name, number, tid, attempt, params, varied)
        tags = {
            **self.standard_tags(),
            "trial_id": tid,
            "trial_number": str(number),
            "normalizer": str(params.get("normalizer", "")),
            "scale": str(params.get("scale", "")),
            "status": "running",
            "attempt": str(attempt),
            "snsweep.role": "trial",
            layout.DESCRIPTION_TAG: about,
        }
        return layout.trial_run_name(params, varied, attempt), tags

    def log_checkpoint(
        self, tracker: Tracker, members: Sequence[tuple[RunHandle, str, int | None, dict[str, Any]]], d: Path
    ) -> None:
        """Each member's sample grid as a step of its ``samples`` series; the generator of each member
        that completed (``members``: (run, trial id, member index or None, last result) of one
        checkpoint ``d``, read once for all of them).

        The grid is also copied to ``<sweep>/samples/<trial>/``: the checkpoint dir may be
        removed when a newer one replaces it."""
        for run, mid, index, last in members:
            step = int(last.get("step", 0))
            preview = d / ("samples.png" if index is None else f"samples_m{index}.png")
            if preview.exists():
                png = preview.read_bytes()
                keep = self.sweep_path / "samples" / mid / f"step_{step:08d}.png"
                keep.parent.mkdir(parents=True, exist_ok=True)
                keep.write_bytes(png)
                tracker.log_image(run, readable_grid(png), layout.SAMPLES_KEY, step)
        done = [(run, mid, index, last) for run, mid, index, last in members if last.get("trial_status") == "completed"]
        snaps = snapshots(d, [index for _, _, index, _ in done])
        for run, mid, index, last in done:
            if (snap := snaps.get(index)) is not None:
                self._models.submit(self._model_job(tracker, run, mid, snap, int(last.get("step", 0))))

    def _model_job(self, tracker: Tracker, run: RunHandle, mid: str, snap: Any, step: int) -> Callable[[], None]:
        params = self._model_params.get(mid)

        def build() -> None:  # on the model thread: torch.export takes a fraction of a second per model
            path = Path(tempfile.mkdtemp(prefix="snsweep-generator-"))  # removed once the model is READY
            try:
                save_generator(snap, path)
            except Exception as e:  # noqa: BLE001 - the model, not the store: nothing to retry
                shutil.rmtree(path, ignore_errors=True)
                why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                self.say(f"    (could not log the generator of {mid}: {why})")
                return
            tracker.log_model(run, layout.MODEL_NAME, path, step=step, params=params)

        return build

    def finish(self, tracker: Tracker | None, timeout_s: float = 600) -> None:
        """Wait for the generators still being built (the end of a sweep, before the tracker drains)
        and say which images or models the store refused."""
        if not self._models.join(timeout_s):
            self.say(f"    (some generators were still being built after {timeout_s:g} s; they are not logged)")
        if tracker is not None and tracker.refused:
            self.say(f"warning: the MLflow store refused {len(tracker.refused)} image/model call(s), "
                     f"skipped; the first: {tracker.refused[0]}")  # fmt: skip

    def log_summary(
        self, tracker: Tracker, run: RunHandle, parent: RunHandle | None, row: dict[str, Any], done: int
    ) -> None:
        """The objective as a runs-table column; the parent's value is the best trial's so far.

        With ``selection: final`` the objective is the metric's last value, which is what the runs
        table shows of any metric; with ``best`` it is logged once more as ``best_M`` (its Parquet
        name). The parent's series (one point per trial done) is the search's progress."""
        value = row.get(f"{'best' if self.objective.startswith('best_') else 'final'}_{self.metric}")
        if not isinstance(value, float) or not math.isfinite(value):
            return
        if self.objective != self.metric:
            tracker.log_metrics(run, {self.objective: value}, int(row.get("steps_done") or 0))
        if parent is None or row.get("status") not in ("completed", "stopped_early"):
            return
        best = value if self._best is None else (max if self.mode == "max" else min)(self._best, value)
        self._best = best
        tracker.log_metrics(parent, {self.objective: best}, step=done)
