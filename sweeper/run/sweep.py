"""Run (or resume) one sweep: Ray Tune schedules, Optuna chooses, the recorder records.

The flow is spec -> (Optuna space, fixed params) -> Tuner(OptunaSearch wrapped in
a Repeater for the seed replicates, FIFO or ASHA, resources per trial) -> trials
-> driver callback (MLflow + Parquet) -> report. Ray's own console output is
silenced (``verbose=0``) in favour of the recorder's progress lines.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper import results
from sweeper.errors import SweepError
from sweeper.run.meta import directions_for, sweep_meta
from sweeper.run.parent_run import in_background, open_tracking, preload_in_background, reopen_parent
from sweeper.run.ray_runtime import check_resources, probe_address, start_ray
from sweeper.run.reporting import TrialContext
from sweeper.run.search import make_pack_searcher, make_scheduler, make_searcher
from sweeper.run.storage import Storage
from sweeper.run.study import plan_study
from sweeper.spec import SweepSpec

TUNE_DIR = "tune"


@dataclass
class SweepOutcome:
    name: str
    sweep_path: Path
    counts: dict[str, int]
    report_path: Path | None
    best: dict[str, Any] | None
    parent_run_id: str | None
    failed_fraction: float
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds per phase: ray_start, tracking_setup, trials, finish (report + MLflow drain)."""
    study: str | None = None
    """How to open the sweep's Optuna study (None: it keeps none)."""


def restorable(spec: SweepSpec, results_dir: Path) -> bool:
    """For --resume-if-exists: True when the sweep's Tune state can be restored.

    Refuses (SweepError) when the spec changed since the sweep started, or when results
    exist without restorable state: silently mixing two sweeps would corrupt both.
    """
    from ray import tune

    path = results.sweep_dir(results_dir, spec.name)
    if not (path / TUNE_DIR).exists():
        if (path / "trials").exists():
            raise SweepError(f"{path} has results but no restorable sweep state; use --overwrite to start again")
        return False
    before = _as_now(results.read_sweep_meta(path).get("spec"))
    now = spec.model_dump(mode="json")
    if before is not None and before != now:
        diff = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in now if before.get(k) != now.get(k))
        raise SweepError(f"sweep {spec.name!r} exists with a different spec ({diff}); rename it or --overwrite")
    if not tune.Tuner.can_restore(str((path / TUNE_DIR).resolve())):
        raise SweepError(f"{path / TUNE_DIR} cannot be restored; use --overwrite to start again")
    return True


def _as_now(spec_data: dict[str, Any] | None) -> dict[str, Any] | None:
    """A recorded spec with the fields added since at their defaults (``search.storage``), so a
    sweep started by an older snsweep is not "a different spec"; unchanged if it no longer loads."""
    if spec_data is None:
        return None
    try:
        return SweepSpec.model_validate(spec_data).model_dump(mode="json")
    except Exception:  # noqa: BLE001 - the comparison then names what differs
        return spec_data


# --- preparation (no Ray yet) -----------------------------------------------------------------
def prepare_dir(spec: SweepSpec, storage: Storage, *, resume: bool, overwrite: bool) -> Path:
    """Check the results dir is usable before anything starts; nothing is written on error."""
    root = storage.results_dir
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise SweepError(f"results dir {root} is not writable (nearest existing: {probe}); pass --results-dir")
    path = results.sweep_dir(root, spec.name)
    has_state = (path / TUNE_DIR).exists() or (path / "trials").exists()
    if resume:
        if not (path / TUNE_DIR).exists():
            raise SweepError(f"no sweep {spec.name!r} to resume under {root}; start it with `sweeper run`")
        return path
    if has_state and not overwrite:
        raise SweepError(
            f"sweep {spec.name!r} already has results in {path}: `sweeper resume {spec.name}` continues it, "
            f"`--overwrite` starts it again"
        )
    if has_state and overwrite:
        shutil.rmtree(path)
    return path


def fixed_and_context(spec: SweepSpec, cpus: float) -> tuple[dict[str, Any], TrialContext]:
    from sweeper.spec.space import fixed_params

    fixed = fixed_params(spec)
    fixed["metrics"] = spec.train_metrics
    if not spec.scheduler.stop_on_divergence:
        fixed["divergence_threshold"] = float("inf")  # NaN/Inf still end a run: nothing to train on
    ctx = TrialContext(
        fixed=fixed,
        seeds=list(spec.seeds),
        metric=spec.objective.metric,
        mode=spec.metric_mode,
        selection=spec.objective.selection,
        num_threads=max(1, int(cpus)),
    )
    return fixed, ctx


class _Clock:
    """Wall seconds per phase of a sweep (SweepOutcome.timings; the sweep benchmark reads them)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._t
        self._t = now


# --- the sweep ----------------------------------------------------------------------------------
def run_sweep(
    spec: SweepSpec,
    storage: Storage,
    *,
    address: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    num_cpus: int | None = None,
    dashboard: bool = False,
    progress: Callable[[str], None] = print,
) -> SweepOutcome:
    if address or os.environ.get("RAY_ADDRESS"):
        probe_address(address or os.environ["RAY_ADDRESS"])  # seconds, not Ray's minute of retries
    else:  # a local Ray: this machine must fit one trial
        from sweeper.run.capacity import capacity_problems, local_capacity

        problems = capacity_problems(spec.resources, local_capacity(num_cpus))
        if problems:
            raise SweepError(problems)
    from ray import tune

    from sweeper.run.packing import run_pack_trial
    from sweeper.run.recorder import SweepRecorder
    from sweeper.run.trial import run_trial

    plan = plan_study(spec, storage, resume=resume)  # where the Optuna study lives; a bad URL fails here
    sweep_path = prepare_dir(spec, storage, resume=resume, overwrite=overwrite)
    study = plan.open(in_background, overwrite=overwrite, progress=progress)  # (re)created while Ray starts
    _, ctx = fixed_and_context(spec, spec.resources.cpus_per_trial)
    metrics = spec.train_metrics
    directions = directions_for(metrics)

    clock = _Clock()
    preload = preload_in_background(storage)  # imports overlap Ray's start-up; nothing is written yet
    start_ray(address, num_cpus=num_cpus, dashboard=dashboard)
    check_resources(spec)
    clock.lap("ray_start")
    preload.join()
    if study is not None:
        study.storage()  # its errors (an unusable storage, a study from another sweep) before sweep.json

    meta_prev = results.read_sweep_meta(sweep_path) if resume else {}
    meta = sweep_meta(spec, storage, study=study.target if study else None)
    if resume:
        meta = {**meta_prev, "resumed_at": meta["started_at"]}
    results.atomic_write_text(json.dumps(meta, indent=2, default=str), sweep_path / "sweep.json")

    tracker = parent = None
    tracking: Future | None = None
    if storage.tracking_uri and resume:
        from sweeper.run.tracking import Tracker

        tracker = Tracker(storage.tracking_uri, spec.name, storage.artifact_root)
        parent = reopen_parent(tracker, meta_prev, spec, progress)
    elif storage.tracking_uri:
        # Opening a fresh SQLite store takes seconds (MLflow runs its schema migrations). Done
        # while Ray spawns the trial workers, the two overlap; the recorder waits for it at its
        # first call, by which time it is almost always ready.
        tracking = in_background(open_tracking, storage, spec, sweep_path, progress)
    clock.lap("tracking_setup")

    recorder = SweepRecorder(
        sweep=spec.name, sweep_path=sweep_path, ctx=ctx, metrics=metrics, directions=directions,
        tracker=tracker, parent=parent, tracking=tracking, total_trials=spec.n_trials, progress=progress,
    )  # fmt: skip
    if resume and tracker is not None:
        try:
            recorder.note_previous_attempts(tracker.attempts_by_trial())
        except Exception as e:  # noqa: BLE001 - numbering falls back to the Parquet files
            progress(f"could not read earlier attempts from MLflow ({type(e).__name__})")
    from sweeper.run.distributed import trial_resources, with_workers

    trainable = tune.with_resources(  # workers > 1: the Tune function launches a TorchTrainer (sweeper/distributed.py)
        tune.with_parameters(run_pack_trial if spec.pack > 1 else run_trial, ctx=with_workers(ctx, spec.resources)),
        trial_resources(spec.resources),
    )
    tune_path = (sweep_path / TUNE_DIR).resolve()
    concurrency = spec.resources.max_concurrent
    if concurrency is None and spec.resources.workers > 1:
        # A multi-worker trial's Tune function reserves almost nothing; without a cap every trial
        # would start at once and queue for workers while the searcher hears nothing back.
        import ray

        per_trial = spec.resources.workers * spec.resources.cpus_per_trial
        concurrency = max(1, int(ray.cluster_resources().get("CPU", 1) // per_trial))
    progress(
        f"sweep {spec.name}: {spec.n_trials} trials ({spec.n_configurations} configurations x "
        f"{len(spec.seeds)} seed{'s' if len(spec.seeds) > 1 else ''}), sampler {spec.search.sampler}, "
        f"objective {spec.objective.metric} "
        f"({spec.metric_mode}, {spec.objective.selection}); results in {sweep_path}"
    )
    if resume:
        tuner = tune.Tuner.restore(str(tune_path), trainable, resume_unfinished=True, resume_errored=True)
        tuner._local_tuner.get_run_config().callbacks = [recorder]  # the pickled one is stale
        tuner._local_tuner.get_run_config().stop = recorder.stopper  # so is its stopper
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=make_pack_searcher(spec, study) if spec.pack > 1 else make_searcher(spec, study),
                scheduler=make_scheduler(spec),
                num_samples=spec.n_tune_trials,
                max_concurrent_trials=concurrency,
                time_budget_s=spec.search.time_budget_s,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR,
                storage_path=str(sweep_path.resolve()),
                callbacks=[recorder],
                stop=recorder.stopper,  # the first deterministic config error ends the sweep (run.abort)
                verbose=0,
                failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            ),
        )
    try:
        tuner.fit()
    except KeyboardInterrupt:
        if recorder.tracker is not None:
            recorder.tracker.close("KILLED")
            recorder.tracker.drain(timeout_s=10)
        progress(f"interrupted: `sweeper resume {spec.name}` continues from the last checkpoints")
        raise
    clock.lap("trials")
    if study is not None:
        study.finish()
    if recorder.stopper.reason is not None:
        from sweeper.run.abort import finish_aborted

        raise finish_aborted(sweep_path, recorder, progress)
    outcome = finish_sweep(spec, sweep_path, recorder, progress)
    clock.lap("finish")
    outcome.timings = clock.laps
    outcome.study = study.hint() if study else None
    return outcome


def finish_sweep(spec, sweep_path, recorder, progress) -> SweepOutcome:  # noqa: ANN001
    tracker, parent = recorder.tracker, recorder.parent
    df = results.latest_attempts(results.load(sweep_path))
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    n = max(len(df), 1)
    failed_fraction = counts.get("failed", 0) / n
    report_path = None
    try:
        from sweeper.analysis.report import write_report

        report_path = write_report(
            results.load(sweep_path),
            results.load_curves(sweep_path),
            sweep_path / "report",
            directions=directions_for(spec.train_metrics),
            title=f"Sweep {spec.name}",
            primary_metric=spec.objective.metric,
        )
    except Exception as e:  # noqa: BLE001 - the results are safe on disk; the report can be re-run
        progress(f"report failed ({type(e).__name__}: {e}); rerun `sweeper report {spec.name}`")
    best = best_configuration(df, spec)
    if tracker is not None and parent is not None:
        if report_path is not None:
            tracker.log_artifact(parent, report_path.parent, "report")
        tracker.set_tags(parent, {"status": "failed" if failed_fraction > spec.allowed_failure_fraction
                                  else "completed"})  # fmt: skip
        tracker.log_metrics(parent, {f"trials_{k}": float(v) for k, v in counts.items()}, step=0)
        tracker.end_run(parent, "FINISHED")
        tracker.close("KILLED")
        if not tracker.drain(timeout_s=120, progress=progress):
            progress(f"warning: {tracker.pending} MLflow calls could not be delivered ({tracker.last_error})")
        recorder.relink()
        meta = results.read_sweep_meta(sweep_path)
        if parent.run_id and meta.get("mlflow_parent_run_id") != parent.run_id:
            meta["mlflow_parent_run_id"] = parent.run_id  # MLflow was down when the sweep started
            results.atomic_write_text(json.dumps(meta, indent=2, default=str), sweep_path / "sweep.json")
    return SweepOutcome(
        name=spec.name,
        sweep_path=sweep_path,
        counts=counts,
        report_path=report_path,
        best=best,
        parent_run_id=parent.run_id if parent else None,
        failed_fraction=failed_fraction,
    )


def best_configuration(df: Any, spec: SweepSpec) -> dict[str, Any] | None:
    """The searched configuration with the best mean objective over its seeds."""
    col = f"{spec.objective.selection}_{spec.objective.metric}"
    if df.empty or col not in df:
        return None
    ok = df[df["status"].isin(["completed", "stopped_early"]) & df[col].notna()]
    if ok.empty:
        return None
    keys = [k for k in spec.parameters if k in ok.columns] or ["normalizer"]
    stats = ok.groupby(keys, dropna=False)[col].agg(["mean", "sem", "count"]).reset_index()
    stats = stats.sort_values("mean", ascending=spec.metric_mode == "min")
    top = stats.iloc[0]
    return {
        "params": {k: _plain(top[k]) for k in keys},
        "metric": spec.objective.metric,
        "selection": spec.objective.selection,
        "mean": float(top["mean"]),
        "sem": float(top["sem"]) if top["count"] > 1 else float("nan"),
        "n_seeds": int(top["count"]),
    }


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
