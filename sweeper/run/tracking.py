"""MLflow tracking: one parent run per sweep, one nested run per trial attempt.

All logging happens in the sweep driver (a Tune callback), never inside trials:
one writer per store means no SQLite lock contention and no per-trial MLflow
setup on workers. Calls go through a queue that is flushed in order; when the
tracking server is unreachable, operations stay queued and are retried later,
so a server hiccup delays logging but never fails a trial or loses a metric.

While the server is healthy, calls are delivered at once in the caller's thread
(run ids are known as soon as ``start_run`` returns). After a failed call the
tracker is *degraded*: new calls are only queued (the Tune callback returns in
microseconds) and one background thread retries the queue every
``retry_every_s``; once it is empty, delivery is synchronous again. The only
call a caller ever waits for during an outage is the one that discovers it:
milliseconds for a refused connection, at most ``MLFLOW_HTTP_REQUEST_TIMEOUT``
(10 s here) for a host that does not answer. MLflow's own HTTP retries are off
(they would block each call for minutes); ``drain`` waits at the end of a sweep.

Layout (contract): experiment = sweep name; parent run tagged ``snsweep.role =
sweep``; children tagged ``mlflow.parentRunId``, ``trial_id``, ``normalizer``,
``scale``, ``status``; params use the same names as the Parquet columns. No run
is left RUNNING: ``close`` ends every run this tracker opened, and
``end_orphans`` marks runs left RUNNING by a dead driver as KILLED. What the
experiment, the run names and the runs-table view look like is
``sweeper.run.mlflow_layout``'s; images (``log_image`` series) and models
(``log_model``) go through the same queue as everything else.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # we retry ourselves, without blocking
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

MAX_PARAM_LEN = 6000


@dataclass
class RunHandle:
    """A run that may not exist on the server yet (created when the queue flushes)."""

    name: str
    tags: dict[str, str]
    parent: RunHandle | None = None
    run_id: str | None = None
    ended: bool = False


def default_artifact_location(artifact_root: Path, experiment: str) -> str:
    return (Path(artifact_root).resolve() / experiment).as_uri()


class Tracker:
    def __init__(
        self, tracking_uri: str, experiment: str, artifact_root: Path | None = None, retry_every_s: float = 2.0
    ):
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # mlflow configures its loggers on import: quiet them after
            logging.getLogger(name).setLevel(logging.WARNING)

        self.tracking_uri = tracking_uri
        self.experiment_name = experiment
        self.artifact_root = artifact_root
        from sweeper.run import sqlite_store

        sqlite_store.prepare(tracking_uri, artifact_root)  # never a half-migrated store after a kill
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self._queue: deque[tuple[str, Callable[[], None]]] = deque()
        self._experiment_id: str | None = None
        self._open: list[RunHandle] = []
        self.failures = 0
        self.last_error = ""
        self.retry_every_s = retry_every_s
        self.outages = 0
        """How many times the tracker became degraded (a failed call after a healthy period)."""
        self.refused: list[str] = []
        """Optional calls (images, models) the store refused and that were dropped (``_optional``)."""
        self._state = threading.Lock()  # guards the queue, counters and ``_retrier``
        self._delivering = threading.Lock()  # one deliverer at a time: each call runs once, in order
        self._retrier: threading.Thread | None = None
        self._stopped = threading.Event()

    # --- plumbing ----------------------------------------------------------------------
    def _enqueue(self, what: str, fn: Callable[[], None]) -> None:
        with self._state:
            self._queue.append((what, fn))
            if self._retrier is not None:
                return  # degraded: the retry thread delivers it, the caller never waits
        self.flush()

    @property
    def degraded(self) -> bool:
        """True while calls are only queued (a call failed and the queue is not delivered yet)."""
        with self._state:
            return self._retrier is not None

    def flush(self) -> bool:
        """Run queued operations in order; stop at the first failure, keep the rest and retry them later."""
        with self._delivering:
            ok = self._deliver(from_retrier=False)
        if not ok:
            self._start_retrier()
        return ok

    def _deliver(self, *, from_retrier: bool) -> bool:
        """Call with ``_delivering`` held. True once the queue is empty (then the retrier stops)."""
        while True:
            with self._state:
                if not self._queue:
                    if from_retrier:
                        self._retrier = None  # atomically with the emptiness check: nothing is left behind
                    return True
                what, fn = self._queue[0]
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - any transport/server error means "later"
                with self._state:
                    self.failures += 1
                    self.last_error = f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                return False
            with self._state:
                self._queue.popleft()

    def _start_retrier(self) -> None:
        with self._state:
            if self._retrier is not None:
                return
            self.outages += 1
            self._retrier = threading.Thread(target=self._retry_loop, name="snsweep-mlflow-retry", daemon=True)
            self._retrier.start()

    def _retry_loop(self) -> None:
        while not self._stopped.wait(self.retry_every_s):
            with self._delivering:
                if self._deliver(from_retrier=True):
                    return
        with self._state:
            self._retrier = None

    def stop_retrying(self) -> None:
        """Stop the background retries (what is still queued stays in ``pending``); ``flush`` still works."""
        self._stopped.set()
        with self._state:
            retrier = self._retrier
        if retrier is not None:
            retrier.join(timeout=30)
        self._stopped.clear()

    def drain(self, timeout_s: float = 120.0, progress: Callable[[str], None] | None = None) -> bool:
        """Keep retrying until the queue is empty or ``timeout_s`` passes (end of sweep)."""
        deadline = time.monotonic() + timeout_s
        warned = False
        while not self.flush():
            if time.monotonic() > deadline:
                return False
            if progress and not warned:
                progress(f"MLflow unreachable ({self.last_error}); retrying {self.pending} queued calls")
                warned = True
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
        return True

    @property
    def pending(self) -> int:
        with self._state:
            return len(self._queue)

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            exp = self.client.get_experiment_by_name(self.experiment_name)
            if exp is None:
                location = None
                if self.artifact_root is not None and not self.tracking_uri.startswith("http"):
                    location = default_artifact_location(self.artifact_root, self.experiment_name)
                self._experiment_id = self.client.create_experiment(self.experiment_name, artifact_location=location)
            else:
                self._experiment_id = exp.experiment_id
        return self._experiment_id

    # --- runs --------------------------------------------------------------------------
    def start_run(
        self, name: str, tags: dict[str, str], params: dict[str, Any], parent: RunHandle | None = None
    ) -> RunHandle:
        handle = RunHandle(name=name, tags=dict(tags), parent=parent)
        self._open.append(handle)

        def create() -> None:
            if handle.run_id is not None:
                return
            all_tags = dict(handle.tags)
            if parent is not None:
                if parent.run_id is None:
                    raise RuntimeError("parent run not created yet")
                all_tags["mlflow.parentRunId"] = parent.run_id
            run = self.client.create_run(self.experiment_id(), run_name=name, tags=all_tags)
            handle.run_id = run.info.run_id

        self._enqueue(f"create run {name}", create)
        if params:
            self.log_params(handle, params)
        return handle

    def adopt(self, run_id: str, name: str) -> RunHandle:
        """Continue an existing run (the sweep's parent run after a resume)."""
        handle = RunHandle(name=name, tags={}, run_id=run_id)
        self._open.append(handle)
        self._enqueue(f"reopen {name}", lambda: self.client.update_run(run_id, status="RUNNING"))
        return handle

    def log_params(self, run: RunHandle, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, _param_text(v)) for k, v in sorted(params.items())]

        def log() -> None:
            for i in range(0, len(items), 100):  # MLflow's per-batch param limit
                self.client.log_batch(_id(run), params=items[i : i + 100])

        self._enqueue(f"params of {run.name}", log)

    def set_tags(self, run: RunHandle, tags: dict[str, str]) -> None:
        self._enqueue(
            f"tags of {run.name}",
            lambda: [self.client.set_tag(_id(run), k, str(v)) for k, v in tags.items()] and None,
        )

    def log_metrics(self, run: RunHandle, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [
            Metric(_metric_key(k), float(v), ts, int(step))
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        ]

        def log() -> None:
            for i in range(0, len(items), 1000):
                self.client.log_batch(_id(run), metrics=items[i : i + 1000])

        if items:
            self._enqueue(f"metrics of {run.name} at step {step}", log)

    def log_artifact(self, run: RunHandle, path: Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.exists():
            self._enqueue(
                f"artifact {path.name} of {run.name}",
                lambda: (self.client.log_artifacts if path.is_dir() else self.client.log_artifact)(
                    _id(run), str(path), artifact_path
                ),
            )

    def log_text(self, run: RunHandle, text: str, name: str) -> None:
        self._enqueue(f"{name} of {run.name}", lambda: self.client.log_text(_id(run), text, name))

    def log_image(self, run: RunHandle, image: Any, key: str, step: int) -> None:
        """One image of the run's ``key`` series at ``step`` (MLflow's stepped ``log_image``)."""
        ts = int(time.time() * 1000)
        what = f"image {key} of {run.name} at step {step}"

        def log() -> None:
            self.client.log_image(_id(run), image, key=key, step=int(step), timestamp=ts, synchronous=True)

        self._enqueue(what, self._optional(what, log))

    def _optional(self, what: str, fn: Callable[[], None], chain: dict[str, Any] | None = None) -> Callable[[], None]:
        """``fn`` as a queued call that a store's refusal drops instead of retrying forever.

        Every other call treats any error as "later"; an image or a model that the store refuses
        (a 4xx answer: an MLflow server without logged-model endpoints, a deleted run) would then
        hold every later call, the runs' ends included. Refusals are kept in ``refused``; ``chain``
        (one model's calls) stops at the first."""

        def op() -> None:
            if chain is not None and "refused" in chain:
                return
            try:
                fn()
            except Exception as e:
                if not _refused(e):
                    raise
                reason = f"{what}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                with self._state:
                    self.refused.append(reason)
                if chain is not None:
                    chain["refused"] = reason

        return op

    def log_model(
        self, run: RunHandle, name: str, directory: Path, *, step: int, params: dict[str, Any] | None = None
    ) -> None:
        """A saved MLflow model directory (a flavor's ``save_model``) as the run's logged model ``name``.

        What ``mlflow.<flavor>.log_model`` does, by client calls: the fluent API would use the
        process-wide tracking URI and active run, and this tracker has neither. The model's id is
        only known once it is created, so the upload writes it into the directory's MLmodel. Each
        step is its own queued call (a retry never creates a second model); the directory is
        removed once the model is READY.
        """
        import shutil

        from mlflow.entities import LoggedModelOutput, LoggedModelStatus

        model: dict[str, Any] = {}
        text_params = {k: _param_text(v) for k, v in (params or {}).items()}
        directory = Path(directory)

        def create() -> None:
            if "id" not in model:
                m = self.client.create_logged_model(
                    self.experiment_id(), name=name, source_run_id=_id(run), params=text_params or None
                )
                model.update(id=m.model_id, location=m.artifact_location)

        def upload() -> None:
            from mlflow.models import Model

            spec = Model.load(str(directory))
            spec.model_id = spec.model_uuid = model["id"]
            spec.run_id, spec.artifact_path = _id(run), model["location"]
            spec.save(str(directory / "MLmodel"))
            self.client.log_model_artifacts(model["id"], str(directory))

        def finalize() -> None:
            if "id" in model:  # not when the store refused to create it
                status = LoggedModelStatus.FAILED if "refused" in model else LoggedModelStatus.READY
                self._optional(f"finalize model {name} of {run.name}",
                               lambda: self.client.finalize_logged_model(model["id"], status))()  # fmt: skip
            shutil.rmtree(directory, ignore_errors=True)

        def link() -> None:
            self.client.log_outputs(_id(run), [LoggedModelOutput(model["id"], step=int(step))])

        for what, fn in ((f"model {name} of {run.name}", create), (f"outputs of {run.name}", link),
                         (f"artifacts of model {name} of {run.name}", upload)):  # fmt: skip
            self._enqueue(what, self._optional(what, fn, chain=model))
        self._enqueue(f"finalize model {name} of {run.name}", finalize)

    def describe_experiment(self, tags: dict[str, str]) -> None:
        """Set the experiment's tags (kind, description, the runs-table view); creates it if needed."""

        def describe() -> None:
            for k, v in tags.items():
                self.client.set_experiment_tag(self.experiment_id(), k, v)

        self._enqueue("experiment tags", describe)

    def end_run(self, run: RunHandle, status: str = "FINISHED") -> None:
        if run.ended:
            return
        run.ended = True

        def end() -> None:
            self.client.set_terminated(_id(run), status=status)

        self._enqueue(f"end {run.name} {status}", end)

    def close(self, status: str = "KILLED") -> None:
        """End every run still open (an interrupted sweep) with ``status``."""
        for run in self._open:
            if not run.ended:
                self.end_run(run, status)

    # --- lookups for resume and clean-up --------------------------------------------------
    def find_runs(self, filter_string: str) -> list[Any]:
        exp = self.client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            return []
        return list(self.client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=5000))

    def attempts_by_trial(self) -> dict[str, int]:
        """How many attempt runs each trial already has (to number a resumed attempt)."""
        out: dict[str, int] = {}
        for run in self.find_runs("tags.`snsweep.role` = 'trial'"):
            tid = run.data.tags.get("trial_id")
            if tid:
                out[tid] = max(out.get(tid, 0), int(run.data.tags.get("attempt", "1")))
        return out

    def end_orphans(
        self, keep: set[str] | None = None, recorded: dict[str, tuple[str, str]] | None = None, label: str = ""
    ) -> tuple[int, int]:
        """End the runs a dead driver left RUNNING; returns (killed, closed).

        A run whose trial the dead driver had already recorded in Parquet (``recorded``: run id ->
        (trial id, status)) only missed its last call: it ends as recorded (FINISHED, or FAILED for
        a failed trial). The others were cut off: KILLED, tagged ``snsweep.ended_by`` with the
        session that replaces them (``label``), whose retried attempt is the trial's run."""
        keep, recorded = keep or set(), recorded or {}
        killed = closed = 0
        for run in self.find_runs("attributes.status = 'RUNNING'"):
            rid = run.info.run_id
            if rid in keep:
                continue
            if rid in recorded:
                status = recorded[rid][1]
                self.client.set_tag(rid, "status", status)
                self.client.set_terminated(rid, status="FAILED" if status == "failed" else "FINISHED")
                closed += 1
                continue
            self.client.set_tag(rid, "snsweep.ended_by", label or "sweeper resume")
            if run.data.tags.get("snsweep.role") == "trial":
                self.client.set_tag(rid, "status", "killed")
            self.client.set_terminated(rid, status="KILLED")
            killed += 1
        return killed, closed

    def parent_runs(self) -> list[Any]:
        """The sweep's parent runs in this experiment, newest first."""
        runs = self.find_runs("tags.`snsweep.role` = 'sweep'")
        return sorted(runs, key=lambda r: r.info.start_time or 0, reverse=True)

    def delete_sweep_runs(self) -> int:
        """``--overwrite``: soft-delete the earlier parent runs of this sweep and their nested runs
        (MLflow's ``gc`` removes them for good), so the UI shows only the new sweep."""
        parents = {r.info.run_id for r in self.parent_runs()}
        if not parents:
            return 0
        nested = [r.info.run_id for r in self.find_runs("") if r.data.tags.get("mlflow.parentRunId") in parents]
        for rid in [*nested, *parents]:
            self.client.delete_run(rid)
        return len(nested) + len(parents)


def sweep_experiments(tracking_uri: str) -> list[tuple[str, str]]:
    """(name, experiment id) of the sweeps in a store, the most recently created first.

    A SQLite file that does not exist is an empty store: it is not created here."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).is_file():
        return []
    from mlflow.tracking import MlflowClient

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.search_experiments(order_by=["creation_time DESC"], max_results=1000)
    ours = [e for e in found if "snsweep.version" in e.tags]
    return [(e.name, e.experiment_id) for e in ours or [e for e in found if e.name != "Default"]]


def _refused(e: Exception) -> bool:
    """The store answered and said no (a 4xx other than 429): asking again will not help."""
    from mlflow.exceptions import MlflowException

    if not isinstance(e, MlflowException):
        return False
    status = e.get_http_status_code()
    return 400 <= status < 500 and status != 429


def _id(run: RunHandle) -> str:
    if run.run_id is None:
        raise RuntimeError(f"run {run.name} not created yet")
    return run.run_id


def _param_text(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return text[:MAX_PARAM_LEN]


def _metric_key(k: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in k)
