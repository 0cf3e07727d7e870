"""Where an Optuna study may live: the storage URLs snsweep accepts, checked before anything starts.

Why a pure check here (no Optuna, no SQLAlchemy): a sweep-file field, a global option and an
environment variable can all name the study's storage, and a typo in any of them must be one
error line before Ray starts, not a traceback from SQLAlchemy after the sweep was set up. Whether
a database *server* answers is a different matter: that is found when the study is opened.
"""

from __future__ import annotations

import re

NONE = "none"
"""Keep no study outside the sweep's own Tune checkpoint (Optuna's in-memory storage)."""
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "oracle")
"""The databases Optuna's RDBStorage opens through SQLAlchemy (``postgresql+psycopg2://`` etc. too)."""
_EXAMPLES = "use sqlite:///PATH/optuna.db, postgresql://USER@HOST/DB or none"


def url_problem(url: str) -> str | None:
    """None when ``url`` is a storage Optuna can be asked to open (or ``none``); else why not."""
    url = url.strip()
    if url.lower() == NONE:
        return None
    if not url:
        return f"is empty; {_EXAMPLES}"
    if "://" not in url:
        hint = f"; for a local file write sqlite:///{url}" if url.endswith((".db", ".sqlite", ".sqlite3")) else ""
        return f"{url!r} is not a storage URL{hint} ({_EXAMPLES})"
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            return f"{url}: a SQLite study is sqlite:///PATH (three slashes, then the file)"
        if url[len("sqlite:///") :].startswith(":memory:"):
            return f"{url}: an in-memory database dies with the driver; write none to keep no study"
        return None
    if scheme in SCHEMES:
        return None
    if scheme in ("http", "https"):
        return (
            f"{url}: Optuna keeps studies in a database, not behind an HTTP server (that is MLflow's "
            f"--tracking-uri); {_EXAMPLES}"
        )
    return f"{url}: unsupported scheme {scheme!r}; Optuna opens {', '.join(SCHEMES)} ({_EXAMPLES})"


def shown(url: str) -> str:
    """``url`` with its password replaced by ``***``: what is printed and written to sweep.json."""
    return re.sub(r"^([a-z0-9+]+://[^:/@]*:)[^@/]*@", r"\1***@", url, flags=re.IGNORECASE)
