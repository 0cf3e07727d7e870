"""The sweep's MLflow parent run: opened in the background on a fresh sweep, re-adopted on resume.

Opening a fresh SQLite store takes seconds (MLflow runs its schema migrations); it overlaps
Ray's start-up and the trial workers' spawn. An unreachable or unopenable store never fails a
sweep: it is one warning line and the sweep records Parquet only.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sweeper import results
from sweeper.run import mlflow_layout as layout
from sweeper.run.storage import Storage
from sweeper.spec import SweepSpec


def in_background(fn: Callable[..., Any], *args: Any) -> Future:
    """``fn(*args)`` in a daemon thread (an unreachable server must never hold the process open)."""
    future: Future = Future()

    def run() -> None:
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits on the future
            future.set_exception(e)

    threading.Thread(target=run, name="snsweep-mlflow-setup", daemon=True).start()
    return future


def open_tracking(
    storage: Storage, spec: SweepSpec, sweep_path: Path, progress: Callable[[str], None], overwrite: bool = False
) -> tuple:
    """(tracker, parent run) of a fresh sweep, or (None, None) when the store cannot be opened.

    ``overwrite``: the earlier sweep of this name is soft-deleted first (its parent and nested runs)."""
    from sweeper.run.tracking import Tracker

    try:
        tracker = Tracker(storage.tracking_uri, spec.name, storage.artifact_root)
    except Exception as e:  # noqa: BLE001 - the trials run anyway; their Parquet rows are the record
        first = str(e).splitlines()[0] if str(e) else ""
        progress(
            f"warning: cannot open the MLflow store {storage.tracking_uri} ({type(e).__name__}: {first}); "
            "this sweep records Parquet only (fix --tracking-uri, or pass --tracking-uri none)"
        )
        return None, None
    if overwrite:
        try:
            n = tracker.delete_sweep_runs()
            if n:
                progress(f"deleted the {n} MLflow run(s) of the earlier sweep {spec.name} (soft delete)")
        except Exception as e:  # noqa: BLE001 - the new sweep runs anyway; the old runs stay visible
            progress(f"warning: could not delete the earlier MLflow runs of {spec.name} ({type(e).__name__}: {e})")
    return open_parent(tracker, spec, sweep_path, progress)


def open_parent(tracker: Any, spec: SweepSpec, sweep_path: Path, progress: Callable[[str], None]) -> tuple:
    """The sweep's parent run (runs in a background thread); sweep.json gets its id once it exists.

    Never raises: an unreachable server leaves the calls queued for the tracker's retries, and
    finish_sweep writes the id into sweep.json if it arrives later."""
    meta = results.read_sweep_meta(sweep_path)
    parent = start_parent(tracker, spec, meta.get("git_commit"))
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


def start_parent(tracker: Any, spec: SweepSpec, git_commit: str | None = None) -> Any:
    """The experiment described as a model-training one (kind, description, runs-table view),
    then the sweep's parent run, tagged like a run MLflow's fluent API would have made."""
    tags = describe_sweep(spec)
    tracker.describe_experiment(tags)
    return tracker.start_run(
        spec.name,
        {**layout.standard_tags(git_commit), "snsweep.role": "sweep", "status": "running",
         layout.DESCRIPTION_TAG: tags[layout.DESCRIPTION_TAG]},  # fmt: skip
        {"sweep": spec.name, "trials": spec.n_trials, "seeds": spec.seeds, "sampler": spec.search.sampler,
         "objective": spec.objective.metric},  # fmt: skip
    )


def describe_sweep(spec: SweepSpec) -> dict[str, str]:
    """The experiment tags of ``spec``'s sweep (``sweeper.run.mlflow_layout``)."""
    import importlib.metadata as md

    try:
        version = md.version("snsweep")
    except md.PackageNotFoundError:
        version = "unknown"
    objective = layout.objective_column(spec.objective.metric, spec.objective.selection)
    varied = [k for k in spec.parameters if k not in fixed_keys(spec)]
    return layout.experiment_tags(
        description=layout.experiment_description(spec.description, spec.reproduces, objective, spec.metric_mode),
        preset=preset_of(spec),
        spec_digest=layout.spec_hash(spec.model_dump(mode="json")),
        version=version,
        objective=objective,
        mode=spec.metric_mode,
        view=layout.runs_view(varied, objective),
    )


def fixed_keys(spec: SweepSpec) -> set[str]:
    from sweeper.spec.space import fixed_params

    return set(fixed_params(spec))


def preset_of(spec: SweepSpec) -> str:
    """The preset this sweep is, unchanged; ``custom`` for a sweep file of one's own."""
    from sweeper.spec import parse, preset_names, preset_text

    if spec.name not in preset_names():
        return "custom"
    try:
        same = parse(preset_text(spec.name), spec.name).model_dump() == spec.model_dump()
    except Exception:  # noqa: BLE001 - a preset that does not parse any more is not this sweep
        same = False
    return spec.name if same else f"custom (from {spec.name})"


def reopen_parent(
    tracker: Any, meta_prev: dict[str, Any], spec: SweepSpec, progress: Callable[[str], None],
    recorded: dict[str, tuple[str, str]] | None = None, label: str = "",
) -> Any:  # fmt: skip
    """A resumed sweep: the dead driver's runs are ended, its parent run continues.

    ``recorded`` (MLflow run id -> (trial id, status), from the ledger) names the runs whose trial
    the dead driver had recorded: they end FINISHED (or FAILED), the others KILLED, tagged with
    ``label``, the session that replaces them. A parent run that exists but never reached
    sweep.json (the driver died just after creating it) is found by its tag and adopted, so the
    UI still shows one parent per sweep."""
    parent_id = meta_prev.get("mlflow_parent_run_id")
    try:
        if not parent_id:
            found = tracker.parent_runs()
            parent_id = found[0].info.run_id if found else None
        killed, closed = tracker.end_orphans(keep={parent_id} if parent_id else set(), recorded=recorded, label=label)
    except Exception as e:  # noqa: BLE001 - a tracking outage must not block a resume
        killed = closed = 0
        progress(f"could not clean up MLflow runs now ({type(e).__name__}); they stay RUNNING")
    if killed:
        progress(f"marked {killed} MLflow run(s) of the dead driver KILLED (their trials run again)")
    if closed:
        progress(f"ended {closed} MLflow run(s) whose trials the dead driver had recorded")
    if not parent_id:
        # MLflow was down, or the driver died before the run existed
        parent = start_parent(tracker, spec, meta_prev.get("git_commit"))
    else:
        tracker.describe_experiment(describe_sweep(spec))  # an experiment made before snsweep tagged its kind
        parent = tracker.adopt(parent_id, spec.name)
    tracker.drain(timeout_s=60, progress=progress)
    return parent


def preload_in_background(storage: Storage) -> threading.Thread:
    """Import the driver's heavy modules (MLflow, its SQL layers, Optuna) while Ray starts.

    Ray's start-up mostly waits on its daemons; these imports take seconds of CPU that would
    otherwise follow it. Imports only: nothing is written, so a failed start leaves no trace."""

    def load() -> None:
        try:
            import optuna  # noqa: F401
            from ray.tune.search.optuna import OptunaSearch  # noqa: F401

            if storage.tracking_uri:
                # mlflow.pytorch, torch.export, mlflow.models and PIL are what logging generators
                # and sample grids needs (sweeper.run.generator_model); imported here rather than
                # on the model thread: two threads importing one package at once can see it half
                # initialized (AttributeError), so they come in this one sequence, before the
                # driver's threads start.
                import mlflow.pytorch  # noqa: F401
                import mlflow.tracking  # noqa: F401
                import torch.export  # noqa: F401
                from mlflow.models import Model, infer_signature  # noqa: F401
                from mlflow.store.tracking import sqlalchemy_store  # noqa: F401
                from PIL import Image  # noqa: F401
        except Exception:  # noqa: BLE001, S110 - the real import later reports any problem
            pass

    thread = threading.Thread(target=load, name="snsweep-preload", daemon=True)
    thread.start()
    return thread
