"""The driver-side Tune callback: progress lines, MLflow runs and Parquet rows.

Trials only report; this callback, running in the sweep driver, turns those
reports into the durable record. One MLflow run per trial attempt (a retried or
resumed attempt gets a new run; the dead one ends FAILED/KILLED), one Parquet
summary row and one curves file per attempt, written atomically when the
attempt ends. Progress goes to the terminal: which trial started with which
configuration, its latest metric, and how many trials are done, running, left.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sweeper import results
from sweeper.run import faults, ledger, trial_errors
from sweeper.run.abort import AbortStopper
from sweeper.run.packing import PACK_KEY
from sweeper.run.progress import members_summary, pack_step_line
from sweeper.run.reporting import INDEX_KEY, OBJECTIVE, TRIAL_ID_KEY, TrialContext, trial_config
from sweeper.run.rows import summary_row
from sweeper.run.tracking import RunHandle, Tracker
from sweeper.run.trial_runs import TrialRuns

SUMMARY_SKIP = {"history_json", "trial_status", OBJECTIVE}


class SweepRecorder(Callback):
    def __init__(
        self,
        *,
        sweep: str,
        sweep_path: Path,
        ctx: TrialContext,
        metrics: list[str],
        directions: dict[str, str],
        tracker: Tracker | None,
        parent: RunHandle | None,
        total_trials: int,
        tracking: Future | None = None,
        progress: Callable[[str], None] = print,
        progress_every_s: float = 5.0,
        recorded: dict[str, int] | None = None,
    ):
        self.sweep = sweep
        self.sweep_path = Path(sweep_path)
        self.ctx = ctx
        self.metrics = metrics
        self.directions = directions
        self._tracker = tracker
        self._parent = parent
        self._tracking = tracking
        """MLflow set-up still running in the background (tuning.run_sweep): ``tracker`` waits for it."""
        self.total = total_trials
        self.say = progress
        self.progress_every_s = progress_every_s
        self._runs: dict[str, RunHandle] = {}
        self._configs: dict[str, dict[str, Any]] = {}
        self.stopper = AbortStopper()
        """Tune's ``stop=``: set at the first deterministic config error (sweeper.run.abort)."""
        self._attempt: dict[str, int] = {}
        self._started: dict[str, datetime] = {}
        self._history: dict[str, dict[int, dict[str, float]]] = {}
        self._last: dict[str, dict[str, Any]] = {}
        self._numbers: dict[str, int] = {}
        self._finished: set[str] = set()
        self._last_print: dict[str, float] = {}
        self._final: dict[str, float | None] = {}
        self.best: tuple[float, str] | None = None
        self.counts = dict.fromkeys(results.STATUSES, 0)
        for status, n in (recorded or {}).items():  # a resumed sweep: trials earlier sessions recorded
            self.counts[status] = self.counts.get(status, 0) + n
        self._existing_attempts = self._scan_attempts()
        self._unlinked: list[tuple[RunHandle, dict[str, Any]]] = []
        self._error_logs: dict[str, str] = {}
        self._mlflow = TrialRuns(self.sweep_path, ctx.metric, ctx.selection, ctx.mode, progress)
        self._recorded = self._scan_finished()
        """Trials whose final row is already on disk (finished just before a driver died):
        Tune may replay them from their last checkpoint; they must not be recorded twice."""

    def __reduce__(self):  # noqa: ANN204
        # Tune pickles the run config (callbacks included) into its experiment state. The
        # recorder holds live clients and queues; a restored sweep gets a fresh recorder
        # (see tuning.run_sweep), so the pickled copy is an inert placeholder.
        return (_InertCallback, ())

    @property
    def tracker(self) -> Tracker | None:
        self._resolve_tracking()
        return self._tracker

    @property
    def parent(self) -> RunHandle | None:
        self._resolve_tracking()
        return self._parent

    def _resolve_tracking(self) -> None:
        if self._tracking is not None:
            self._tracker, self._parent = self._tracking.result()
            self._tracking = None

    def note_previous_attempts(self, attempts: dict[str, int]) -> None:
        """Attempts known elsewhere (MLflow runs of a dead driver): new ones number after them."""
        for tid, n in attempts.items():
            self._existing_attempts[tid] = max(self._existing_attempts.get(tid, 0), n)

    # --- helpers --------------------------------------------------------------------------
    def _scan_attempts(self) -> dict[str, int]:
        """Attempts already on disk (a resumed sweep): new attempts number after them."""
        out: dict[str, int] = {}
        for f in (self.sweep_path / "trials").glob("*.parquet"):
            stem = f.stem
            if stem.startswith(".") or "-a" not in stem:
                continue
            tid, _, a = stem.rpartition("-a")
            if a.isdigit():
                out[tid] = max(out.get(tid, 0), int(a))
        return out

    def _scan_finished(self) -> set[str]:
        if not (self.sweep_path / "trials").is_dir():
            return set()
        df = results.load(self.sweep_path)
        return set(df.loc[df["status"].isin(["completed", "diverged"]), "trial_id"]) if not df.empty else set()

    def _number(self, trial_id: str) -> int:
        if trial_id not in self._numbers:
            self._numbers[trial_id] = len(self._numbers) + 1
        return self._numbers[trial_id]

    def _params(self, config: dict[str, Any]) -> dict[str, Any]:
        """The full resolved TrainConfig: MLflow params and ``config_json`` use the Parquet names."""
        from trainers.config import TrainConfig

        cfg = TrainConfig.from_dict(trial_config(config, self.ctx))
        return {**cfg.to_dict(), "loss": cfg.resolved_loss}

    def _searched(self, config: dict[str, Any]) -> str:
        cfg = {k: v for k, v in config.items() if not k.startswith("__")}
        cfg["seed"] = self.ctx.seeds[int(config.get(INDEX_KEY, 0)) % len(self.ctx.seeds)]
        return " ".join(f"{k}={_fmt(v)}" for k, v in cfg.items())

    def _status_line(self) -> str:
        done = sum(self.counts.values())
        running = len(self._runs) - len(self._finished & set(self._runs))
        left = max(self.total - done - running, 0)
        best = f" | best {self.ctx.metric} {self.best[0]:.4g} ({self.best[1]})" if self.best else ""
        return f"done {done}/{self.total}, running {running}, left {left}{best}"

    # --- Tune hooks: a Tune trial is one member, or K members when trials are packed ------------
    def setup(self, **info: Any) -> None:
        faults.point("tuner")  # the Tuner exists and fit() has begun; no trial has started yet

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        members = members_of(trial)
        packed = PACK_KEY in trial.config
        # where the trial's checkpoints go, for a resume; a pack's checkpoint holds all its members
        path = None if packed else str(trial.path)
        for mid, _, config in members:
            self._start(mid, config, path, quiet=packed)
        if packed:
            numbers = [self._number(mid) for mid, _, _ in members]
            configs = [config for _, _, config in members]
            self.say(
                f"  > pack [{trial.trial_id}] started: {len(members)} trainings (trials {min(numbers)}-{max(numbers)}) "
                f"as one model: {members_summary(configs, self.ctx.seeds)}"
            )

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        packed = PACK_KEY in trial.config
        values: dict[int, float] = {}
        for mid, index, _ in members_of(trial):
            mine = member_result(result, index)
            if mine is not None:
                self._result(mid, mine, quiet=packed)
                if mine.get("trial_status") == "running":
                    values[self._number(mid)] = float(mine.get(self.ctx.metric, math.nan))
        now = time.monotonic()
        if packed and values and now - self._last_print.get(trial.trial_id, 0) >= self.progress_every_s:
            self._last_print[trial.trial_id] = now
            step, iterations = int(result.get("step", 0)), result.get("iterations", "?")
            self.say(pack_step_line(trial.trial_id, step, iterations, self.ctx.metric, values, self.ctx.mode))

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        members = [(mid, i) for mid, i, _ in members_of(trial) if mid in self._runs]
        if self.tracker is None or not members:
            return
        try:
            with checkpoint.as_directory() as d:  # sample grids as image series; completed members' generators
                batch = [(self._runs[mid], mid, index, self._last.get(mid, {})) for mid, index in members]
                self._mlflow.log_checkpoint(self.tracker, batch, Path(d))
        except Exception as e:  # noqa: BLE001 - a missing preview or model must never fail the sweep
            self.say(f"    (could not log samples of {trial.trial_id}: {type(e).__name__}: {e})")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._mlflow.finish(self.tracker)  # generators still being built go into the queue before it drains

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        packed = PACK_KEY in trial.config
        finals: list[float] = []
        for mid, _, config in members_of(trial):
            status = self._last.get(mid, {}).get("trial_status", "")
            if status not in ("completed", "diverged"):
                status = "stopped_early"  # a scheduler (ASHA) ended it before its budget
            # a pack prints one line for its completed members; anything else keeps its own line
            self._finish(mid, config, status, "", quiet=packed and status == "completed")
            if packed and status == "completed":
                final = self._final.get(mid)
                finals += [final] if final is not None and math.isfinite(final) else []
        if packed:
            span = f", {self.ctx.metric} {min(finals):.4g} .. {max(finals):.4g}" if finals else ""
            self.say(
                f"  ok pack [{trial.trial_id}]: {len(finals)} of {len(members_of(trial))} trainings completed{span} | "
                f"{self._status_line()}"
            )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failed(trial, trial_errors.read(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Tune will retry the trial: right for a dead worker, pointless for a config error."""
        error = trial_errors.read(trial)
        if error.deterministic:
            self._failed(trial, error)
            return
        for mid, _, _ in members_of(trial):  # Tune's own traceback dump is off (run.ray_runtime)
            self.say(f"  ! trial {self._number(mid)} [{mid}] attempt {self._attempt.get(mid, 1)} failed "
                     f"({error.message[:160]}); Tune retries it (resources.max_failures)")  # fmt: skip

    def _failed(self, trial: Any, error: trial_errors.TrialError) -> None:
        members = members_of(trial)
        for mid, _, config in members:
            self._finish(mid, config, "failed", error)
        if error.deterministic:
            mid = members[0][0]
            log = self._error_logs.get(mid)
            if self.stopper.abort(self._number(mid), mid, error.message, log):
                self.say(f"  ABORT: trial {self._number(mid)} [{mid}] has a configuration error every trial would "
                         "repeat; starting no further trial")  # fmt: skip

    def finish_open(self, reason: str) -> int:
        """Record the trials an abort stopped mid-run (Tune sends no event for them); returns how many."""
        open_ = [tid for tid in self._runs if tid not in self._finished and tid not in self._recorded]
        for tid in open_:
            self._finish(tid, self._configs.get(tid, {}), "stopped_early", reason, killed=True)
        return len(open_)

    # --- one member ---------------------------------------------------------------------------
    def _start(self, tid: str, config: dict[str, Any], trial_path: str | None = None, quiet: bool = False) -> None:
        if tid in self._recorded:
            self.say(f"  = trial {self._number(tid)} [{tid}] was already recorded before the restart")
            return
        if tid in self._runs and not self._runs[tid].ended and self.tracker is not None:
            self.tracker.end_run(self._runs[tid], "FAILED")  # a retried attempt: the old one died
        self._attempt[tid] = self._attempt.get(tid, self._existing_attempts.get(tid, 0)) + 1
        self._started[tid] = datetime.now(UTC)
        ledger.note_start(self.sweep_path, tid, config, self._attempt[tid], trial_path)
        self._finished.discard(tid)
        self._configs[tid] = config
        params = self._params(config)
        n = self._number(tid)
        if self.tracker is not None:
            name, tags = self._mlflow.name_and_tags(tid, n, self._attempt[tid], params, config)  # bsn c=2 s1
            self._runs[tid] = self.tracker.start_run(
                name,
                tags,
                {**params, "trial_id": tid, "sweep": self.sweep},
                parent=self.parent,
            )
        else:
            self._runs[tid] = RunHandle(name=tid, tags={})
        again = f" (attempt {self._attempt[tid]})" if self._attempt[tid] > 1 else ""
        if not quiet:
            self.say(f"  > trial {n} [{tid}] started{again}: {self._searched(config)}")

    def _result(self, tid: str, result: dict[str, Any], quiet: bool = False) -> None:
        if tid in self._recorded:
            return
        step = int(result.get("step", 0))
        metrics = {
            k: float(v)
            for k, v in result.items()
            if k not in SUMMARY_SKIP
            and k not in ("step", "iterations")
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
            and _is_train_metric(k)
        }
        self._history.setdefault(tid, {})[step] = metrics
        self._last[tid] = result
        if self.tracker is not None and tid in self._runs:
            self.tracker.log_metrics(self._runs[tid], metrics, step)
        now = time.monotonic()
        running = result.get("trial_status") == "running"
        if not quiet and running and now - self._last_print.get(tid, 0) >= self.progress_every_s:
            self._last_print[tid] = now
            value = metrics.get(self.ctx.metric)
            shown = f"{self.ctx.metric}={value:.4g}" if value is not None else "no metric yet"
            self.say(f"    trial {self._number(tid)} step {step}/{result.get('iterations', '?')}: {shown}")

    # --- the durable record ----------------------------------------------------------------
    def _finish(
        self,
        tid: str,
        config: dict[str, Any],
        status: str,
        error: str | trial_errors.TrialError,
        killed: bool = False,
        quiet: bool = False,
    ) -> None:
        if tid in self._finished or tid in self._recorded:
            return
        self._finished.add(tid)
        attempt = self._attempt.get(tid, 1)
        error_log = None
        traceback = ""
        if isinstance(error, trial_errors.TrialError):  # the message for the row, the traceback to a file
            error_log = trial_errors.write_log(self.sweep_path, tid, attempt, error)
            self._error_logs[tid] = error_log
            error, traceback = error.message, error.traceback
        last = self._last.get(tid, {})
        history = _history_from(last) or [
            {"step": float(s), **m} for s, m in sorted(self._history.get(tid, {}).items())
        ]
        if status == "diverged" and not error:
            error = f"diverged at step {last.get('step')}"
        params = self._params(config)
        run = self._runs.get(tid)
        row = self._row(tid, attempt, status, error, error_log, params, history, last, run)
        results.write_trial(self.sweep_path, row, self.metrics)
        if run is not None and run.run_id is None and self.tracker is not None:
            self._unlinked.append((run, row))  # MLflow is down: fill the run id in once it exists
        results.write_curves(self.sweep_path, tid, attempt, history)
        self.counts[status] += 1
        final = row.get(f"final_{self.ctx.metric}")
        self._final[tid] = final
        if status == "completed" and final is not None and math.isfinite(final):
            maximize = self.directions.get(self.ctx.metric, "max") == "max"
            if self.best is None or (final > self.best[0] if maximize else final < self.best[0]):
                self.best = (final, f"trial {self._number(tid)}")
        if self.tracker is not None and run is not None:
            self._mlflow.log_summary(self.tracker, run, self.parent, row, sum(self.counts.values()))
            tags = {"status": status, **({"error": error[:5000]} if error else {})}
            self.tracker.set_tags(run, {**tags, **({"error_log": error_log} if error_log else {})})
            if traceback:
                self.tracker.log_text(run, traceback, "error.txt")
            self.tracker.end_run(run, "KILLED" if killed else "FAILED" if status == "failed" else "FINISHED")
        shown = f"{self.ctx.metric}={final:.4g}" if isinstance(final, float) and math.isfinite(final) else ""
        mark = {"completed": "ok", "diverged": "DIVERGED", "stopped_early": "stopped", "failed": "FAILED"}[status]
        detail = f" {error[:160]}" + (f" (traceback: {error_log})" if error_log else "") if status == "failed" else ""
        if not quiet:
            self.say(f"  {mark} trial {self._number(tid)} [{tid}] {status} {shown}{detail} | {self._status_line()}")

    def relink(self) -> int:
        """Rewrite rows written while MLflow was unreachable, now that their run ids exist."""
        done = 0
        for run, row in list(self._unlinked):
            if run.run_id is not None:
                results.write_trial(self.sweep_path, {**row, "mlflow_run_id": run.run_id}, self.metrics)
                self._unlinked.remove((run, row))
                done += 1
        return done

    def _row(
        self,
        tid: str,
        attempt: int,
        status: str,
        error: str,
        error_log: str | None,
        params: dict[str, Any],
        history: list[dict[str, float]],
        last: dict[str, Any],
        run: RunHandle | None,
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        return summary_row(
            sweep=self.sweep, trial_id=tid, attempt=attempt, status=status, error=error, params=params,
            history=history, last=last, metrics=self.metrics, directions=self.directions,
            started=self._started.get(tid, now), finished=now, run_id=run.run_id if run is not None else None,
            error_log=error_log,
        )  # fmt: skip


def members_of(trial: Any) -> list[tuple[str, int | None, dict[str, Any]]]:
    """(member id, index in the pack or None, sampled config) for each training in a Tune trial.

    A resumed sweep re-runs an unfinished trial under its old id (``__trial_id__`` in its config)."""
    config = dict(trial.config)
    if PACK_KEY in config:
        return [
            (str(c.get(TRIAL_ID_KEY) or f"{trial.trial_id}-m{i}"), i, dict(c)) for i, c in enumerate(config[PACK_KEY])
        ]
    return [(str(config.get(TRIAL_ID_KEY) or trial.trial_id), None, config)]


def member_result(result: dict[str, Any], index: int | None) -> dict[str, Any] | None:
    """A pack's result holds ``m{i}/<key>`` per member; give member ``index`` its plain keys back.

    None when the member has nothing in this result (it stopped earlier than the others)."""
    if index is None:
        return result
    prefix = f"m{index}/"
    out = {k[len(prefix) :]: v for k, v in result.items() if k.startswith(prefix)}
    if not out:
        return None
    for key in ("step", "iterations"):
        if key in result:
            out.setdefault(key, result[key])
    return out


class _InertCallback(Callback):
    """What a pickled SweepRecorder becomes: does nothing."""


def _history_from(last: dict[str, Any]) -> list[dict[str, float]]:
    text = last.get("history_json")
    if not text:
        return []
    return [{k: float(v) for k, v in h.items()} for h in json.loads(text)]


def _is_train_metric(key: str) -> bool:
    """Tune adds its own bookkeeping keys to every result; keep only the trainer's."""
    return key not in {
        "time_this_iter_s", "time_total_s", "timestamp", "training_iteration", "pid", "time_since_restore",
        "iterations_since_restore", "done", "node_ip", "hostname", "date", "experiment_id", "trial_id",
        "checkpoint_dir_name", "should_checkpoint",
    }  # fmt: skip


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)
