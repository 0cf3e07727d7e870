"""Shared test setup: every test runs with HOME/TMPDIR in a temp dir and no telemetry.

Ray writes ``~/.ray`` (auth token, sessions) and MLflow writes telemetry config under
``$HOME``; tests must never touch the real home or phone home.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="snsweep-test-home-"))
    os.environ["HOME"] = str(home)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    os.environ["DO_NOT_TRACK"] = "1"
    os.environ.setdefault("PYTHONHASHSEED", "0")


def short_tmp() -> Path:
    """A short private temp dir: Ray's AF_UNIX socket paths must stay under 107 bytes."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix="sns-", dir="/tmp"))


@pytest.fixture
def ray_tmp():
    import shutil

    path = short_tmp()
    yield path
    from proc_utils import kill_everything_under

    kill_everything_under(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sweeper_env(tmp_path: Path, ray_tmp: Path) -> dict[str, str]:
    """Environment for a ``sweeper`` subprocess: isolated HOME/TMPDIR, loopback-only Ray."""
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        TMPDIR=str(ray_tmp),
        PYTHONPATH=str(REPO),
        RAY_USAGE_STATS_ENABLED="0",
        MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONUNBUFFERED="1",
    )
    return env


def sweeper_cmd() -> list[str]:
    return [sys.executable, "-m", "sweeper.cli"]


def run_sweeper(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``sweeper ARGS`` in ``cwd`` with a private HOME and a short TMPDIR for Ray, then make
    sure nothing it started outlives it (killed by PID, never `ray stop`)."""
    import shutil

    from proc_utils import kill_everything_under

    ray_tmp = short_tmp()
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO),
           "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip
    try:
        return subprocess.run(
            [*sweeper_cmd(), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
        )
    finally:
        kill_everything_under(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)


TINY_TRAIN = {
    "dataset": "blobs",
    "model": "sngan_cnn",
    "resolution": 8,
    "width": 0.0625,
    "latent_dim": 8,
    "batch_size": 8,
    "iterations": 6,
    "eval_every": 3,
    "eval_samples": 64,
    "metrics": ["mode_coverage", "hq_fraction"],
}
