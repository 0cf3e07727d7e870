"""What code this is: package versions and the git commit, for ``--version``, sweep.json and MLflow tags.

Read from installed metadata and git, never by importing the packages: ``sweeper --version``
must answer at once, without loading torch or Ray.
"""

from __future__ import annotations

import importlib.metadata as md
import subprocess
from functools import cache
from pathlib import Path

PACKAGES = ("snsweep", "torch", "ray", "optuna", "mlflow", "pyarrow", "pydantic")


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (None when it is not installed)."""
    out: dict[str, str | None] = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


@cache
def git_commit() -> str | None:
    """The commit of the checkout this code runs from, or None (installed from a wheel, no git)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit or None


def version_text() -> str:
    """``snsweep X (git abc1234)`` then one line per dependency, as ``sweeper --version`` prints it."""
    v = versions()
    commit = git_commit()
    head = f"snsweep {v['snsweep']}" + (f" (git {commit[:12]})" if commit else "")
    deps = ", ".join(f"{k} {v[k] or 'not installed'}" for k in ("torch", "ray", "optuna", "mlflow", "pyarrow"))
    return f"{head}\n{deps}"
