"""Where a sweep's records go: the results dir and the MLflow store (embedded defaults)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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
