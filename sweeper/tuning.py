"""Run (or resume) one sweep: Ray Tune schedules, Optuna chooses, the recorder records.

The flow is spec -> (Optuna space, fixed params) -> Tuner(OptunaSearch wrapped in
a Repeater for the seed replicates, FIFO or ASHA, resources per trial) -> trials
-> driver callback (MLflow + Parquet) -> report. Ray's own console output is
silenced (``verbose=0``) in favour of the recorder's progress lines.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sweeper import results
from sweeper.spec import SpecError, SweepSpec
from sweeper.trial import OBJECTIVE, TrialContext

TUNE_DIR = "tune"


class SweepError(RuntimeError):
    """A user-fixable problem found while starting a sweep (exit code 2)."""


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


@dataclass
class Storage:
    results_dir: Path
    tracking_uri: str | None
    """None disables MLflow."""
    artifact_root: Path


def default_storage(results_dir: Path | None = None, tracking_uri: str | None = None) -> Storage:
    """The embedded defaults: ./results, MLflow in ./mlflow.db with artifacts in ./mlartifacts.

    ``$MLFLOW_TRACKING_URI`` is honoured when no URI is given; with a SQLite store the
    artifacts live beside the database file, so they are never left in a job's temp dir.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"
    artifacts = Path("mlartifacts")
    if uri.startswith("sqlite:///"):
        artifacts = Path(uri[len("sqlite:///") :]).parent / "mlartifacts"
    return Storage(results_dir=Path(results_dir or "results"), tracking_uri=uri, artifact_root=artifacts)


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
    before = results.read_sweep_meta(path).get("spec")
    now = spec.model_dump(mode="json")
    if before is not None and before != now:
        diff = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in now if before.get(k) != now.get(k))
        raise SweepError(f"sweep {spec.name!r} exists with a different spec ({diff}); rename it or --overwrite")
    if not tune.Tuner.can_restore(str((path / TUNE_DIR).resolve())):
        raise SweepError(f"{path / TUNE_DIR} cannot be restored; use --overwrite to start again")
    return True


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
    from sweeper.space import fixed_params

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


def directions_for(metrics: list[str]) -> dict[str, str]:
    from trainers.metrics import METRICS

    return {m: METRICS.get(m, "max") for m in metrics}


def sweep_meta(spec: SweepSpec, storage: Storage) -> dict[str, Any]:
    """sweep.json; ``mlflow_parent_run_id`` is filled in once the parent run exists (_open_parent)."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("snsweep", "torch", "ray", "optuna", "mlflow", "pyarrow", "pydantic"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or None  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        commit = None
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
        "versions": versions,
        "python": sys.version.split()[0],
        "git_commit": commit,
        "started_at": datetime.now(UTC).isoformat(),
        "tracking_uri": storage.tracking_uri,
        "artifact_root": str(storage.artifact_root.resolve()),
        "mlflow_parent_run_id": None,
        "schema_version": results.SCHEMA_VERSION,
    }


# --- Ray ---------------------------------------------------------------------------------------
def start_ray(address: str | None, num_cpus: int | None = None, dashboard: bool = False) -> None:
    """Connect to a cluster, or start a local Ray bound to 127.0.0.1 only."""
    # Ray's own progress tables would interleave with the recorder's lines; the legacy
    # reporter is silent at verbose=0, the new output engine is not.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    common = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SweepError(f"cannot reach the Ray cluster at {address} ({msg}); check --address") from None
        return
    # Without this, Ray advertises and binds on the machine's routable address.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1", **common)


def check_resources(spec: SweepSpec) -> None:
    """A GPU request on a cluster without GPUs fails here, before any trial starts."""
    import ray

    have = ray.cluster_resources()
    need_gpu = spec.resources.gpus_per_trial * spec.resources.workers
    if need_gpu > 0 and have.get("GPU", 0) < min(need_gpu, 1.0):
        raise SweepError(
            f"resources.gpus_per_trial: {spec.resources.gpus_per_trial} GPU(s) requested but the cluster has "
            f"{int(have.get('GPU', 0))}; set gpus_per_trial: 0 or use a GPU cluster (an autoscaling cluster "
            "must keep one GPU worker up, as cluster.yaml does)"
        )
    need_cpu = spec.resources.cpus_per_trial * spec.resources.workers
    if have.get("CPU", 0) < need_cpu:
        raise SweepError(
            f"resources.cpus_per_trial: a trial needs {need_cpu} CPUs but the cluster has "
            f"{have.get('CPU', 0):g}; lower cpus_per_trial"
        )


def make_searcher(spec: SweepSpec) -> Any:
    import optuna
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    from sweeper.space import grid_points, optuna_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = spec.search.seed
    startup = max(2, min(10, spec.search.trials // 2))
    samplers: dict[str, Callable[[], Any]] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup),
        "grid": lambda: optuna.samplers.RandomSampler(seed=seed),  # never used: every point is enqueued
    }
    space = optuna_space(spec)
    if not space:
        # Everything is fixed (e.g. one grid point): OptunaSearch refuses an empty space, so give it a
        # constant placeholder; keys starting with "__" never reach the training config.
        space = {"__constant__": optuna.distributions.CategoricalDistribution([0])}
    points = None
    if spec.is_grid:
        points = [{k: v for k, v in pt.items() if k in space} or {"__constant__": 0} for pt in grid_points(spec)]
    searcher = OptunaSearch(
        space=space,
        metric=OBJECTIVE,
        mode=spec.metric_mode,
        sampler=samplers[spec.search.sampler](),
        points_to_evaluate=points,
    )
    # Each configuration runs once per seed; Optuna is told the mean over seeds.
    return Repeater(searcher, repeat=len(spec.seeds), set_index=True)


def make_pack_searcher(spec: SweepSpec) -> Any:
    """``pack: K``: each Tune trial asks for K configurations (see sweeper.packing)."""
    from sweeper.packing import PackSearcher

    return PackSearcher(make_searcher(spec), spec.pack, OBJECTIVE, spec.metric_mode, total=spec.n_trials)


def make_scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler.type == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",  # one unit = one evaluation report
            metric=OBJECTIVE,
            mode=spec.metric_mode,
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    return FIFOScheduler()


# --- MLflow set-up ------------------------------------------------------------------------------
def _in_background(fn: Callable[..., Any], *args: Any) -> Future:
    """``fn(*args)`` in a daemon thread (an unreachable server must never hold the process open)."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
            future.set_exception(e)

    threading.Thread(target=run, name="snsweep-mlflow-setup", daemon=True).start()
    return future


def _open_tracking(storage: Storage, spec: SweepSpec, sweep_path: Path, progress: Callable[[str], None]) -> tuple:
    """(tracker, parent run) of a fresh sweep, or (None, None) when the store cannot be opened."""
    from sweeper.tracking import Tracker

    try:
        tracker = Tracker(storage.tracking_uri, spec.name, storage.artifact_root)
    except Exception as e:  # noqa: BLE001 - the trials run anyway; their Parquet rows are the record
        first = str(e).splitlines()[0] if str(e) else ""
        progress(
            f"warning: cannot open the MLflow store {storage.tracking_uri} ({type(e).__name__}: {first}); "
            "this sweep records Parquet only (fix --tracking-uri, or pass --tracking-uri none)"
        )
        return None, None
    return _open_parent(tracker, spec, sweep_path, progress)


def _open_parent(tracker: Any, spec: SweepSpec, sweep_path: Path, progress: Callable[[str], None]) -> tuple:
    """The sweep's parent run (runs in a background thread); sweep.json gets its id once it exists.

    Never raises: an unreachable server leaves the calls queued for the tracker's retries, and
    finish_sweep writes the id into sweep.json if it arrives later."""
    parent = _start_parent(tracker, spec)
    tracker.drain(timeout_s=60, progress=progress)
    try:
        meta = results.read_sweep_meta(sweep_path)
        if parent.run_id is not None:
            meta["mlflow_parent_run_id"] = parent.run_id
            results.atomic_write_text(json.dumps(meta, indent=2, default=str), sweep_path / "sweep.json")
        tracker.log_text(parent, json.dumps(meta, indent=2, default=str), "sweep.json")
    except Exception as e:  # noqa: BLE001 - the sweep must not fail over its metadata copy
        progress(f"could not record the MLflow parent run in sweep.json ({type(e).__name__}: {e})")
    return tracker, parent


def _start_parent(tracker: Any, spec: SweepSpec) -> Any:
    return tracker.start_run(
        spec.name,
        {"snsweep.role": "sweep", "status": "running"},
        {"sweep": spec.name, "trials": spec.n_trials, "seeds": spec.seeds, "sampler": spec.search.sampler,
         "objective": spec.objective.metric},  # fmt: skip
    )


def _reopen_parent(tracker: Any, meta_prev: dict[str, Any], spec: SweepSpec, progress: Callable[[str], None]) -> Any:
    """A resumed sweep: the dead driver's runs end KILLED, its parent run continues."""
    if not meta_prev.get("mlflow_parent_run_id"):
        parent = _start_parent(tracker, spec)  # MLflow was down, or the driver died before the run existed
        tracker.drain(timeout_s=60, progress=progress)
        return parent
    try:
        killed = tracker.end_orphans(keep={meta_prev["mlflow_parent_run_id"]})
    except Exception as e:  # noqa: BLE001 - a tracking outage must not block a resume
        killed = 0
        progress(f"could not clean up MLflow runs now ({type(e).__name__}); they stay RUNNING")
    if killed:
        progress(f"marked {killed} MLflow run(s) of the dead driver KILLED")
    parent = tracker.adopt(meta_prev["mlflow_parent_run_id"], spec.name)
    tracker.drain(timeout_s=60, progress=progress)
    return parent


def _preload_in_background(storage: Storage) -> threading.Thread:
    """Import the driver's heavy modules (MLflow, its SQL layers, Optuna) while Ray starts.

    Ray's start-up mostly waits on its daemons; these imports take seconds of CPU that would
    otherwise follow it. Imports only: nothing is written, so a failed start leaves no trace."""

    def load() -> None:
        try:
            import optuna  # noqa: F401
            from ray.tune.search.optuna import OptunaSearch  # noqa: F401

            if storage.tracking_uri:
                import mlflow.tracking  # noqa: F401
                from mlflow.store.tracking import sqlalchemy_store  # noqa: F401
        except Exception:  # noqa: BLE001, S110 - the real import later reports any problem
            pass

    thread = threading.Thread(target=load, name="snsweep-preload", daemon=True)
    thread.start()
    return thread


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
    from ray import tune

    from sweeper.packing import run_pack_trial
    from sweeper.recorder import SweepRecorder
    from sweeper.trial import run_trial

    sweep_path = prepare_dir(spec, storage, resume=resume, overwrite=overwrite)
    _, ctx = fixed_and_context(spec, spec.resources.cpus_per_trial)
    metrics = spec.train_metrics
    directions = directions_for(metrics)

    clock = _Clock()
    preload = _preload_in_background(storage)  # imports overlap Ray's start-up; nothing is written yet
    start_ray(address, num_cpus=num_cpus, dashboard=dashboard)
    check_resources(spec)
    clock.lap("ray_start")
    preload.join()

    meta_prev = results.read_sweep_meta(sweep_path) if resume else {}
    meta = sweep_meta(spec, storage)
    if resume:
        meta = {**meta_prev, "resumed_at": meta["started_at"]}
    results.atomic_write_text(json.dumps(meta, indent=2, default=str), sweep_path / "sweep.json")

    tracker = parent = None
    tracking: Future | None = None
    if storage.tracking_uri and resume:
        from sweeper.tracking import Tracker

        tracker = Tracker(storage.tracking_uri, spec.name, storage.artifact_root)
        parent = _reopen_parent(tracker, meta_prev, spec, progress)
    elif storage.tracking_uri:
        # Opening a fresh SQLite store takes seconds (MLflow runs its schema migrations). Done
        # while Ray spawns the trial workers, the two overlap; the recorder waits for it at its
        # first call, by which time it is almost always ready.
        tracking = _in_background(_open_tracking, storage, spec, sweep_path, progress)
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
    from sweeper.distributed import trial_resources, with_workers

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
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=make_pack_searcher(spec) if spec.pack > 1 else make_searcher(spec),
                scheduler=make_scheduler(spec),
                # packs are cut per normalizer (sweeper.packing), so may be fewer than `pack`: the
                # pack searcher finishes the sweep, Tune's count is only an upper bound
                num_samples=spec.n_trials if spec.pack > 1 else spec.n_tune_trials,
                max_concurrent_trials=concurrency,
                time_budget_s=spec.search.time_budget_s,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=TUNE_DIR,
                storage_path=str(sweep_path.resolve()),
                callbacks=[recorder],
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
    outcome = finish_sweep(spec, sweep_path, recorder, progress)
    clock.lap("finish")
    outcome.timings = clock.laps
    return outcome


def finish_sweep(spec, sweep_path, recorder, progress) -> SweepOutcome:  # noqa: ANN001
    tracker, parent = recorder.tracker, recorder.parent
    df = results.latest_attempts(results.load(sweep_path))
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    n = max(len(df), 1)
    failed_fraction = counts.get("failed", 0) / n
    report_path = None
    try:
        from sweeper.report import write_report

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


__all__ = ["SpecError", "SweepError", "run_sweep", "default_storage", "Storage"]
