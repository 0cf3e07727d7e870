"""Run (or resume) one sweep: Ray Tune schedules, Optuna chooses, the recorder records.

One session of a sweep, start to end::

    prepare (nothing written)  ->  lock the sweep  ->  stop a dead driver's stale Ray
      -> ledger (what the spec asks for, what is recorded)  ->  sweep.json (state: running)
      -> Ray (local: with its reaper)  ->  MLflow (fresh: parent run; resume: orphans ended)
      -> Tuner over the ledger's plan  ->  trials  ->  finish (ledger check, report, state)

``run`` and ``resume`` are the same session: a fresh sweep is one whose ledger is empty. What a
resume runs comes from the ledger (``sweeper.run.ledger``), never from whatever Tune state a dead
driver left: unfinished trials again under their ids and from their last checkpoints, then the
rest of the spec. Ray's console output is silenced (``verbose=0``) in favour of the recorder's.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sweeper import results
from sweeper.errors import SweepError, UserError
from sweeper.run import faults
from sweeper.run import ledger as ledger_mod
from sweeper.run.finish import SweepOutcome, best_configuration, finish_sweep
from sweeper.run.meta import (
    FINISHED,
    add_budget_used,
    begin_session,
    directions_for,
    end_session,
    session_label,
    write_meta,
)
from sweeper.run.parent_run import in_background, open_tracking, preload_in_background, reopen_parent
from sweeper.run.ray_runtime import check_resources, probe_address, start_ray, tune_log_to
from sweeper.run.reporting import TrialContext
from sweeper.run.session import LOCK_FILE, driver_lock, lock_holder, stop_stale
from sweeper.run.storage import Storage
from sweeper.run.study import Study, StudyPlan, plan_study
from sweeper.spec import SweepSpec

TUNE_DIR = "tune"
__all__ = ["SweepOutcome", "best_configuration", "existing_sweep", "run_sweep"]


def existing_sweep(spec: SweepSpec, results_dir: Path) -> bool:
    """For --resume-if-exists: True when this sweep exists (then it is resumed).

    Refuses (SweepError) when the spec changed since the sweep started, or when results exist
    without a sweep.json: silently mixing two sweeps would corrupt both."""
    path = results.sweep_dir(results_dir, spec.name)
    before = results.read_sweep_meta(path)
    if not before:
        if (path / "trials").exists():
            raise SweepError(f"{path} has results but no sweep.json; use --overwrite to start again")
        return False
    old, now = _as_now(before.get("spec")), spec.model_dump(mode="json")
    if old is not None and old != now:
        diff = "; ".join(f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in now if old.get(k) != now.get(k))
        raise SweepError(f"sweep {spec.name!r} exists with a different spec ({diff}); rename it or --overwrite")
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


# --- preparation (nothing is written) ---------------------------------------------------------
def prepare_dir(spec: SweepSpec, storage: Storage, *, resume: bool, overwrite: bool) -> Path:
    """Check the results dir is usable and the sweep's state allows this command."""
    root = storage.results_dir
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        raise SweepError(f"results dir {root} is not writable (nearest existing: {probe}); pass --results-dir")
    path = results.sweep_dir(root, spec.name)
    who = lock_holder(path)
    if who:
        raise SweepError(
            f"sweep {spec.name!r} is being run by pid {who.get('pid', '?')} on {who.get('host', '?')} since "
            f"{who.get('since', '?')}; wait for it to end (`sweeper status {spec.name}`) or stop that process first"
        )
    meta = results.read_sweep_meta(path)
    if resume:
        if not meta:
            raise SweepError(f"no sweep {spec.name!r} to resume under {root}; start it with `sweeper run`")
        return path
    if (meta or (path / "trials").exists() or (path / TUNE_DIR).exists()) and not overwrite:
        if meta.get("state") == FINISHED:
            raise SweepError(
                f"sweep {spec.name!r} already finished in {path}: `sweeper report {spec.name}` rebuilds its "
                "report, `--overwrite` runs it again"
            )
        raise SweepError(
            f"sweep {spec.name!r} already has results in {path}: `sweeper resume {spec.name}` continues it, "
            f"`--overwrite` starts it again"
        )
    return path


def _clear(path: Path) -> None:
    """--overwrite: remove the earlier sweep's files, keeping the lock this driver holds."""
    for child in path.iterdir():
        if child.name == LOCK_FILE:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


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
    retry_failed: bool = False,
) -> SweepOutcome:
    """One session of a sweep (see the module's docstring); ``retry_failed`` (resume) runs the
    failed trials again as well as the missing ones."""
    if address or os.environ.get("RAY_ADDRESS"):
        probe_address(address or os.environ["RAY_ADDRESS"])  # seconds, not Ray's minute of retries
    else:  # a local Ray: this machine must fit one trial
        from sweeper.run.capacity import capacity_problems, local_capacity

        problems = capacity_problems(spec.resources, local_capacity(num_cpus))
        if problems:
            raise SweepError(problems)
    study_plan = plan_study(spec, storage, resume=resume)  # where the Optuna study lives; a bad URL fails here
    sweep_path = prepare_dir(spec, storage, resume=resume, overwrite=overwrite)
    fresh_dir = not sweep_path.exists()
    with driver_lock(sweep_path, spec.name):
        if overwrite and not resume:
            _clear(sweep_path)
        stop_stale(sweep_path, progress)
        try:
            return _session(
                spec,
                storage,
                sweep_path,
                address,
                resume,
                overwrite,
                num_cpus,
                dashboard,
                progress,
                retry_failed,
                study_plan,
            )
        except UserError:
            # Refused before any trial ran (e.g. GPUs the cluster lacks): leave no half-made sweep.
            started = (sweep_path / "trials").exists() or (sweep_path / ledger_mod.STARTED_FILE).exists()
            if not resume and not started:
                _clear(sweep_path)
                if fresh_dir:
                    shutil.rmtree(sweep_path, ignore_errors=True)
            raise


def _session(
    spec: SweepSpec, storage: Storage, sweep_path: Path, address: str | None, resume: bool, overwrite: bool,
    num_cpus: int | None, dashboard: bool, progress: Callable[[str], None], retry_failed: bool = False,
    study_plan: StudyPlan | None = None,
) -> SweepOutcome:  # fmt: skip
    meta_prev = results.read_sweep_meta(sweep_path) if resume else {}
    ledger = ledger_mod.read(spec, sweep_path, retry_failed=retry_failed)
    study = study_plan.open(in_background, overwrite=overwrite, progress=progress) if study_plan else None
    meta = begin_session(spec, storage, sweep_path, resume=resume, study=study_plan.target if study_plan else None)
    if resume and ledger.complete:
        # Every trial is recorded (the driver died during its report): finish without Ray.
        progress(f"sweep {spec.name}: all {ledger.spec_trials} trials are recorded; finishing it")
        tracker, parent = _reopen_tracking(spec, storage, meta_prev, meta, ledger, progress)
        _close_study(study, spec, sweep_path)
        outcome = finish_sweep(spec, sweep_path, tracker, parent, ledger, progress)
        outcome.study = study.hint() if study else None
        return outcome

    clock = _Clock()
    preload = preload_in_background(storage)  # imports overlap Ray's start-up; nothing is written yet
    start_ray(address, num_cpus=num_cpus, dashboard=dashboard, sweep_path=sweep_path)
    faults.point("ray_started")
    check_resources(spec)
    clock.lap("ray_start")
    preload.join()
    if study is not None:
        study.storage()  # its errors (an unusable storage, a study from another sweep) before any trial
        if study.target is None:  # the default storage could not be opened (one warning): none kept
            write_meta(
                sweep_path, {**results.read_sweep_meta(sweep_path), "optuna_storage": None, "optuna_study": None}
            )
        elif resume:
            if study.fail_running():
                progress("Optuna: the trials the dead driver left RUNNING are marked FAIL")
            if (sweep_path / "trials").is_dir():  # what the rows hold and the study lacks, before sampling
                study.record_finished(spec, results.load(sweep_path))

    tracker = parent = None
    tracking: Future | None = None
    if storage.tracking_uri and resume:
        tracker, parent = _reopen_tracking(spec, storage, meta_prev, meta, ledger, progress)
    elif storage.tracking_uri:
        # Opening a fresh SQLite store takes seconds (MLflow runs its schema migrations). Done
        # while Ray spawns the trial workers, the two overlap; the recorder waits for it at its
        # first call, by which time it is almost always ready.
        tracking = in_background(open_tracking, storage, spec, sweep_path, progress, overwrite)
    clock.lap("tracking_setup")

    plan = ledger.plan()
    _, ctx = fixed_and_context(spec, spec.resources.cpus_per_trial)
    restore = {s.trial_id: s.checkpoint for s in plan.slots if s.trial_id and s.checkpoint}
    ctx = dataclasses.replace(ctx, restore=restore)
    from sweeper.run.recorder import SweepRecorder

    recorder = SweepRecorder(
        sweep=spec.name, sweep_path=sweep_path, ctx=ctx, metrics=spec.train_metrics,
        directions=directions_for(spec.train_metrics), tracker=tracker, parent=parent, tracking=tracking,
        total_trials=spec.n_trials, progress=progress, recorded=ledger.counts(),
    )  # fmt: skip
    recorder.note_previous_attempts(ledger.attempts())
    if resume and tracker is not None:
        try:
            recorder.note_previous_attempts(tracker.attempts_by_trial())
        except Exception as e:  # noqa: BLE001 - numbering falls back to the ledger
            progress(f"could not read earlier attempts from MLflow ({type(e).__name__})")

    progress(
        f"sweep {spec.name}: {spec.n_trials} trials ({spec.n_configurations} configurations x "
        f"{len(spec.seeds)} seed{'s' if len(spec.seeds) > 1 else ''}), sampler {spec.search.sampler}, "
        f"objective {spec.objective.metric} "
        f"({spec.metric_mode}, {spec.objective.selection}); results in {sweep_path}"
    )
    again = sum(1 for s in plan.slots if s.trial_id)
    if ledger.recorded or again:
        progress(
            f"resuming: {ledger.summary()}; {again} unfinished trial(s) run again "
            f"({len(ctx.restore)} from their last checkpoint), {plan.total - again} to start"
        )
    faults.point("banner")
    tuner = _tuner(spec, plan, ctx, recorder, sweep_path, ledger.budget_left_s, study)
    try:
        with tune_log_to(sweep_path / "logs" / "tune.log"):
            tuner.fit()
    except KeyboardInterrupt:
        if recorder.tracker is not None:
            recorder.tracker.close("KILLED")
            recorder.tracker.drain(timeout_s=10)
        end_session(sweep_path, ledger_mod.read(spec, sweep_path))
        _close_study(study, spec, sweep_path)
        progress(f"interrupted: `sweeper resume {spec.name}` continues from the last checkpoints")
        raise
    clock.lap("trials")
    _close_study(study, spec, sweep_path)
    if recorder.stopper.reason is not None:  # a deterministic config error ended the sweep (run.abort)
        from sweeper.run.abort import finish_aborted

        raise finish_aborted(sweep_path, recorder, progress)
    if spec.search.time_budget_s is not None:
        add_budget_used(sweep_path, clock.laps["trials"])
    ledger = ledger_mod.read(spec, sweep_path)
    if ledger.budget_spent and ledger.missing:
        progress(f"the time budget of {spec.search.time_budget_s:g} s is spent: {ledger.summary()}")
    outcome = finish_sweep(spec, sweep_path, recorder.tracker, recorder.parent, ledger, progress, recorder.relink)
    clock.lap("finish")
    outcome.timings = clock.laps
    outcome.study = study.hint() if study else None
    return outcome


def _close_study(study: Study | None, spec: SweepSpec, sweep_path: Path) -> None:
    """The session's end in the Optuna study: no RUNNING trial, every finished configuration once."""
    if study is None or study.target is None:
        return
    study.fail_running()
    if (sweep_path / "trials").is_dir():
        study.record_finished(spec, results.load(sweep_path))


def _reopen_tracking(spec, storage, meta_prev, meta, ledger, progress) -> tuple:  # noqa: ANN001
    """A resumed sweep's tracker and parent run (the dead driver's runs ended), or (None, None)."""
    if not storage.tracking_uri:
        return None, None
    from sweeper.run.tracking import Tracker

    try:
        tracker = Tracker(storage.tracking_uri, spec.name, storage.artifact_root)
    except Exception as e:  # noqa: BLE001 - the trials run anyway; their Parquet rows are the record
        progress(f"warning: cannot open the MLflow store {storage.tracking_uri} ({type(e).__name__}); Parquet only")
        return None, None
    parent = reopen_parent(tracker, meta_prev, spec, progress, ledger.run_ids(), session_label(meta))
    return tracker, parent


def _tuner(
    spec: SweepSpec, plan: ledger_mod.Plan, ctx: TrialContext, recorder: Any, sweep_path: Path,
    budget_left_s: float | None, study: Study | None = None,
) -> Any:  # fmt: skip
    from ray import tune

    from sweeper.run.distributed import trial_resources, with_workers
    from sweeper.run.packing import run_pack_trial
    from sweeper.run.remaining import make_session_searcher, tune_trials
    from sweeper.run.search import make_scheduler
    from sweeper.run.trial import run_trial

    trainable = tune.with_resources(  # workers > 1: the Tune function launches a TorchTrainer (sweeper/distributed.py)
        tune.with_parameters(run_pack_trial if spec.pack > 1 else run_trial, ctx=with_workers(ctx, spec.resources)),
        trial_resources(spec.resources),
    )
    concurrency = spec.resources.max_concurrent
    if concurrency is None and spec.resources.workers > 1:
        # A multi-worker trial's Tune function reserves almost nothing; without a cap every trial
        # would start at once and queue for workers while the searcher hears nothing back.
        import ray

        per_trial = spec.resources.workers * spec.resources.cpus_per_trial
        concurrency = max(1, int(ray.cluster_resources().get("CPU", 1) // per_trial))
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=make_session_searcher(spec, plan, study),
            scheduler=make_scheduler(spec),
            num_samples=tune_trials(spec, plan),
            max_concurrent_trials=concurrency,
            time_budget_s=budget_left_s,  # what earlier sessions left of search.time_budget_s
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
