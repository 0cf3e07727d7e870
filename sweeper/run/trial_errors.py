"""What a failed trial's error says: the user's message, whether it is deterministic, the traceback.

Ray hands the driver the trial's exception wrapped in its own text (``Failure # 1 (occurred at
...)``, ``ray::ImplicitFunc.train() (pid=..., ip=...)`` in ANSI colours, then the remote
traceback), which made every Parquet ``error`` a wall of Ray internals with the real message at
the bottom. Here the exception is unwrapped (Ray's task error, Train's per-worker failures,
``raise ... from``) to the one that matters, and a trial error becomes:

* ``message``: ``Type: first line of the message``, one line, no ANSI codes: what the Parquet
  ``error`` column and the MLflow ``error`` tag hold;
* ``deterministic``: the cause is a ``trainers.config.ConfigError``, so every retry and every
  other trial with the same inputs fails the same way (the sweep stops at once); anything else
  (a dead worker, OOM, a lost node) is transient and keeps Tune's retries;
* ``traceback``: Tune's whole error file for the trial (every failed attempt), without ANSI codes,
  written to ``<sweep>/errors/<trial>-a<N>.txt`` (``error_log`` names it relative to the sweep dir).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper import results
from sweeper.errors import one_line

ERRORS_DIR = "errors"
MAX_MESSAGE = 1000
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt)\w*)(?:\(\w+\))?: ?(.*)$"
)
"""A traceback's last line: ``trainers.config.ConfigError: message`` (Ray may add ``(Cause)``)."""


@dataclass(frozen=True)
class TrialError:
    message: str
    deterministic: bool
    traceback: str


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def read(trial: Any) -> TrialError:
    """The latest error of a Tune trial, from its pickled exception, else from its error file's text."""
    text = _error_file_text(trial)
    exc = _pickled_error(trial)
    if exc is not None:
        cause = root_cause(exc)
        return TrialError(describe(cause), is_config_error(exc), text or strip_ansi(str(exc)))
    return from_text(text)


def from_text(text: str) -> TrialError:
    """When the exception cannot be unpickled: the last ``Type: message`` line of the last failure."""
    text = strip_ansi(text)
    last = text.rsplit("Failure # ", 1)[-1]
    for line in reversed(last.strip().splitlines()):
        m = _EXCEPTION_LINE.match(line.strip())
        if m:
            qualified = line.strip().split(":", 1)[0]
            config = qualified.endswith(".ConfigError") or qualified == "ConfigError"
            return TrialError(_clip(f"{m.group(1)}: {m.group(2)}"), config, text)
    lines = [ln.strip() for ln in last.splitlines() if ln.strip() and not ln.startswith("Failure # ")]
    return TrialError(_clip(lines[-1] if lines else "trial failed"), False, text or "trial failed")


def describe(exc: BaseException) -> str:
    """``Type: first line of the message`` (one line, no ANSI, at most MAX_MESSAGE characters)."""
    text = strip_ansi(str(exc)).strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return _clip(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


def causes(exc: BaseException, limit: int = 32) -> list[BaseException]:
    """``exc`` and everything it wraps: Ray's ``cause``, Train's ``worker_failures``, ``__cause__``/``__context__``."""
    out: list[BaseException] = []
    todo = [exc]
    while todo and len(out) < limit:
        e = todo.pop(0)
        if any(e is seen for seen in out):
            continue
        out.append(e)
        inner = getattr(e, "cause", None)
        todo += [inner] if isinstance(inner, BaseException) else []
        failures = getattr(e, "worker_failures", None)
        todo += [f for f in (failures or {}).values() if isinstance(f, BaseException)]
        todo += [x for x in (e.__cause__, e.__context__) if x is not None]
    return out


def is_config_error(exc: BaseException) -> bool:
    from trainers.config import ConfigError

    return any(isinstance(e, ConfigError) for e in causes(exc))


def root_cause(exc: BaseException) -> BaseException:
    """The exception the user should read: a ConfigError when there is one, else the first that is
    not one of Ray's wrappers (``RayTaskError(ConfigError)`` is both a wrapper and a ConfigError)."""
    from trainers.config import ConfigError

    chain = [e for e in causes(exc) if not _is_wrapper(e)] or [exc]
    config = [e for e in chain if isinstance(e, ConfigError)]
    return config[0] if config else chain[0]


def _is_wrapper(e: BaseException) -> bool:
    from ray.exceptions import RayTaskError

    return isinstance(e, RayTaskError) or (type(e).__module__ or "").startswith("ray.train")


def write_log(sweep_path: Path, trial_id: str, attempt: int, error: TrialError) -> str:
    """Write the traceback to ``errors/<trial>-a<N>.txt``; returns that path relative to the sweep dir."""
    rel = Path(ERRORS_DIR) / f"{trial_id}-a{attempt}.txt"
    results.atomic_write_text(error.traceback.rstrip() + "\n", Path(sweep_path) / rel)
    return rel.as_posix()


def _clip(text: str) -> str:
    line = one_line(strip_ansi(text).strip())
    return line if len(line) <= MAX_MESSAGE else line[: MAX_MESSAGE - 3] + "..."


def _error_file_text(trial: Any) -> str:
    path = getattr(trial, "error_file", None)
    try:
        return strip_ansi(Path(path).read_text(errors="replace")) if path and Path(path).is_file() else ""
    except OSError:
        return ""


def _pickled_error(trial: Any) -> BaseException | None:
    """Tune pickles a task's or actor's exception beside its error file (``handle_error``)."""
    path = getattr(trial, "pickled_error_file", None)
    if not path or not Path(path).is_file():
        return None
    try:
        from ray import cloudpickle

        with open(path, "rb") as f:
            exc = cloudpickle.load(f)
    except Exception:  # noqa: BLE001 - an exception class the driver cannot import: read the text instead
        return None
    return exc if isinstance(exc, BaseException) else None
