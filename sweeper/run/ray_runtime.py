"""Ray for a sweep: connect to a cluster, or start a local Ray bound to 127.0.0.1 only.

A local Ray must not outlive its driver: before ``ray.init`` the driver starts its reaper
(``sweeper.run.reaper``), which stops that Ray when the driver dies, SIGKILL included, and after
it records the session in ``<sweep>/ray_session.json`` (``sweeper.run.session``), which the next
``run``/``resume`` uses if the reaper died too. A cluster given by ``--address`` is never touched.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from sweeper.errors import SweepError
from sweeper.spec import SweepSpec


def start_ray(
    address: str | None, num_cpus: int | None = None, dashboard: bool = False, sweep_path: Path | None = None
) -> bool:
    """Connect to a cluster, or start a local Ray bound to 127.0.0.1 only.

    True when this call started a local Ray (with ``sweep_path``, reaped and recorded there)."""
    # Ray's own progress tables would interleave with the recorder's lines; the legacy
    # reporter is silent at verbose=0, the new output engine is not.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    common = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    if address:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise SweepError(f"cannot reach the Ray cluster at {address} ({msg}); check --address") from None
        return False
    # Without this, Ray advertises and binds on the machine's routable address.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    reaper = None
    if sweep_path is not None:
        from sweeper.run.reaper import SESSION_FILE, say_exit, spawn

        reaper = spawn(Path(sweep_path) / SESSION_FILE)
        atexit.register(say_exit, reaper)  # before ray.init: runs after Ray's own exit-time shutdown
    ray.init(num_cpus=num_cpus, include_dashboard=dashboard, dashboard_host="127.0.0.1", **common)
    if sweep_path is not None:
        from sweeper.run.session import record_session

        record_session(Path(sweep_path), reaper.pid if reaper else None)
    return True


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


@contextlib.contextmanager
def tune_log_to(path: Path) -> Iterator[Path]:
    """Send Ray Tune's and Train's log records to ``path`` for the ``with`` block, not the console.

    Tune logs every failed trial with the worker's whole traceback; the recorder already prints
    one line per failed trial and keeps the error in Parquet and MLflow, so the console shows
    that line, and the full story stays in ``<sweep>/logs/tune.log``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s -- %(message)s"))
    loggers = [logging.getLogger(name) for name in ("ray.tune", "ray.train", "ray.air")]
    before = [(lg, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate = False
    try:
        with warnings.catch_warnings():
            # Ray's Repeater averages the scores of a configuration whose trials all failed
            warnings.filterwarnings("ignore", "Mean of empty slice", RuntimeWarning)
            yield path
    finally:
        for lg, propagate in before:
            lg.removeHandler(handler)
            lg.propagate = propagate
        handler.close()
