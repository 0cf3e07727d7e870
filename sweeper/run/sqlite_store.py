"""A new SQLite MLflow store is created whole or not at all.

MLflow builds a fresh SQLite store by running some 50 schema migrations, for seconds, in place.
A driver SIGKILLed meanwhile (a sweep's MLflow set-up overlaps Ray's start-up, so a kill during
Ray start lands there) leaves a half-migrated file that no later MLflow can open
(``duplicate column name: step``): every later sweep in that folder would lose its tracking. So
the store is built under a temporary name and linked into place only once complete; a second
driver that gets there first wins, and its store is the one both use.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PREFIX = "sqlite:///"


def prepare(uri: str, artifact_root: Path | None = None) -> None:
    """Create the store behind a ``sqlite:///`` URI atomically if it does not exist yet."""
    if not uri.startswith(PREFIX):
        return
    path = Path(uri[len(PREFIX) :])
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        root = Path(artifact_root or path.parent / "mlartifacts").resolve()
        store = SqlAlchemyStore(f"{PREFIX}{tmp}", root.as_uri())
        store.engine.dispose()
        try:
            os.link(tmp, path)  # fails when another driver linked its store first: use that one
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _remove_stale_temps(path: Path) -> None:
    """Temporary stores of drivers that died while building them."""
    if not Path("/proc/self").exists():
        return  # no way to tell a dead driver's from a live one's
    for tmp in path.parent.glob(f".{path.name}.*.tmp*"):  # the store and its -journal
        pid = tmp.name[len(path.name) + 2 :].split(".tmp")[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):
                tmp.unlink()
