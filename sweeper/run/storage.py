"""Where a sweep's records go: the results dir and the MLflow store (embedded defaults)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sweeper.errors import SweepError


@dataclass
class Storage:
    results_dir: Path
    tracking_uri: str | None
    """None disables MLflow."""
    artifact_root: Path
    optuna_storage: str | None = None
    """``--optuna-storage`` as given (``none`` keeps no study); sweeper.run.study resolves the rest."""


def default_storage(
    results_dir: Path | None = None, tracking_uri: str | None = None, optuna_storage: str | None = None
) -> Storage:
    """The embedded defaults: ./results, MLflow in ./mlflow.db with artifacts in ./mlartifacts.

    ``$MLFLOW_TRACKING_URI`` is honoured when no URI is given; with a SQLite store the
    artifacts live beside the database file, so they are never left in a job's temp dir.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"
    check_tracking_uri(uri, "--tracking-uri" if tracking_uri else "$MLFLOW_TRACKING_URI")
    artifacts = Path("mlartifacts")
    if uri.startswith("sqlite:///"):
        artifacts = Path(uri[len("sqlite:///") :]).parent / "mlartifacts"
    if optuna_storage is not None:
        from sweeper.spec.study_url import url_problem

        problem = url_problem(optuna_storage)
        if problem:
            raise SweepError(f"--optuna-storage {problem}")
    return Storage(
        results_dir=Path(results_dir or "results"), tracking_uri=uri, artifact_root=artifacts,
        optuna_storage=optuna_storage,
    )  # fmt: skip


TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
"""The MLflow stores a sweep can record into (a local SQLite file, a server, a database)."""


def check_tracking_uri(uri: str, source: str = "--tracking-uri") -> None:
    """Refuse a URI MLflow cannot open, before anything starts.

    Why here and not at the first MLflow call: an unsupported scheme is a typo that would
    otherwise run the whole sweep without tracking; an unreachable *server* is different, an
    outage the tracker rides through (its calls queue and are retried).
    """
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme in TRACKING_SCHEMES:
        if scheme == "sqlite" and not uri.startswith("sqlite:///"):
            raise SweepError(f"{source} {uri}: a SQLite store is sqlite:///PATH (three slashes, then the file)")
        return
    if not scheme:
        hint = f"; for a local file write sqlite:///{uri}" if uri.endswith(".db") else ""
        raise SweepError(f"{source} {uri!r}: not a tracking URI{hint} (use sqlite:///PATH, http://HOST:PORT or none)")
    if scheme == "file":
        raise SweepError(
            f"{source} {uri}: MLflow 3 refuses file stores; use sqlite:///PATH/mlflow.db, a server, or none"
        )
    raise SweepError(
        f"{source} {uri}: unsupported scheme {scheme!r}; use one of {', '.join(TRACKING_SCHEMES)} "
        "(e.g. sqlite:///mlflow.db, http://127.0.0.1:5000) or none"
    )
