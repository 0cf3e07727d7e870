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
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

from sweeper.errors import SweepError
from sweeper.spec import SweepSpec

PROBE_TIMEOUT_S = 5.0
"""How long ``probe_address`` waits for the head's GCS port (Ray itself would retry for minutes)."""


def probe_address(address: str) -> None:
    """Fail at once, naming the address, when ``--address`` cannot be a reachable Ray cluster.

    Why before ``ray.init``: with a wrong host or port, Ray retries the GCS connection for over a
    minute and prints warnings meanwhile. ``auto`` (the cluster of this machine or of a Ray Job) is
    left to Ray, which answers quickly when there is none.
    """
    if address == "auto":
        return
    if address.startswith(("http://", "https://")):
        raise SweepError(
            f"--address {address} is a dashboard URL: `sweeper submit SPEC --address {address}` runs a sweep "
            "there as a Ray Job; `sweeper run --address` takes the head's GCS address (HEAD:6379)"
        )
    if "://" in address:
        raise SweepError(
            f"--address {address}: only HEAD:PORT (the GCS, default port 6379) or auto; Ray Client (ray://) "
            "is not supported, submit a Ray Job instead (`sweeper submit`)"
        )
    host, _, port_text = address.rpartition(":") if ":" in address else (address, "", "6379")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SweepError(f"--address {address}: expected HOST:PORT with a port number, e.g. 10.0.0.5:6379")
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as e:
        timed_out = isinstance(e, TimeoutError)
        reason = f"no answer in {PROBE_TIMEOUT_S:g} s" if timed_out else e.strerror or type(e).__name__
        raise SweepError(
            f"--address {address}: cannot connect ({reason}); is the cluster's head up and is this its GCS "
            "port (ray start --head prints it)?"
        ) from None


def start_ray(
    address: str | None, num_cpus: int | None = None, dashboard: bool = False, sweep_path: Path | None = None
) -> bool:
    """Connect to a cluster, or start a local Ray bound to 127.0.0.1 only.

    True when this call started a local Ray (with ``sweep_path``, reaped and recorded there)."""
    # Ray's own progress tables would interleave with the recorder's lines; the legacy
    # reporter is silent at verbose=0, the new output engine is not.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune logs every trial error with Ray's whole traceback; the recorder prints one line and the path
    # of the traceback file instead (sweeper.run.trial_errors).
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
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
    """A request the connected cluster can never satisfy fails here, before any trial starts."""
    from sweeper.run.capacity import capacity_problems, cluster_capacity

    problems = capacity_problems(spec.resources, cluster_capacity())
    if problems:
        raise SweepError(problems)


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
