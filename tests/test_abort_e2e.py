"""End to end: a trial's ConfigError stops the sweep at once; any other failure keeps Tune's retries.

Real Ray, Optuna, MLflow (SQLite) and Parquet through ``sweeper run``. The config error is a data
root the trials cannot read, let through the preflight with ``--no-data`` (as when only the
workers mount the data); the transient one is an image file that fails to decode mid-training.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from bad_inputs import BASE_TRAIN, png
from conftest import run_sweeper

pytestmark = pytest.mark.slow


def _spec(name: str, data_root: Path, trials: int) -> dict:
    return {
        "name": name,
        "train": {**BASE_TRAIN, "data_root": str(data_root)},
        "objective": {"metric": "fid_small"},
        "space": {"scale": {"loguniform": [0.5, 2.0]}},
        "search": {"sampler": "tpe", "seed": 0, "trials": trials},
        "resources": {"max_concurrent": 1},  # trial 1 fails before trial 2 would start
    }


def _mlflow_runs(work: Path, name: str) -> tuple[list, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    return [r for r in runs if r.data.tags.get("snsweep.role") == "sweep"], [
        r for r in runs if r.data.tags.get("mlflow.parentRunId")
    ]


def test_a_config_error_stops_the_sweep_at_once(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_spec("abort", tmp_path / "not-on-this-node", trials=4)))
    proc = run_sweeper(["run", "s.yaml", "--num-cpus", "2", "--no-data"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    errors = proc.stderr.splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: sweep aborted: trial 1 ["), proc.stderr
    assert "data_root" in errors[0] and "--overwrite" in errors[0]
    assert "Traceback" not in out and "\x1b[" not in out  # Ray's trial-error dumps are silenced
    assert proc.stdout.count("  > trial ") == 1 and "ABORT" in proc.stdout  # no other trial was started

    sweep = tmp_path / "results" / "abort"
    meta = json.loads((sweep / "sweep.json").read_text())
    assert meta["state"] == "aborted"
    assert meta["aborted"]["message"].startswith("ConfigError: dataset 'folder': data_root ")
    assert meta["aborted"]["trials_stopped"] == 0
    df = pd.read_parquet(sweep / "trials")
    assert len(df) == 1, df  # one attempt: a config error is not retried
    row = df.iloc[0]
    assert row["status"] == "failed" and row["attempt"] == 1
    assert row["error"] == meta["aborted"]["message"] and "\n" not in row["error"]
    assert "Failure #" not in row["error"] and "ray::" not in row["error"]
    log = (sweep / row["error_log"]).read_text()
    assert "Traceback" in log or "File " in log
    assert "trainers.config.ConfigError" in log and "\x1b[" not in log
    assert not (sweep / "report").exists()

    parents, children = _mlflow_runs(tmp_path, "abort")
    assert len(parents) == 1 and len(children) == 1
    assert parents[0].info.status == "FAILED" and parents[0].data.tags["status"] == "aborted"
    child = children[0]
    assert child.info.status == "FAILED" and child.info.run_id == row["mlflow_run_id"]
    assert child.data.tags["error"] == row["error"] and child.data.tags["error_log"] == row["error_log"]

    status = run_sweeper(["status", "abort"], tmp_path)
    assert "ABORTED by trial" in status.stdout and "data_root" in status.stdout


def test_a_transient_failure_keeps_tunes_retries(tmp_path: Path) -> None:
    """Not a ConfigError (a file that stops decoding mid-run): retried, recorded, the sweep goes on."""
    png(tmp_path / "imgs" / "a.png")  # the preflight decodes the first image only
    (tmp_path / "imgs" / "b.png").write_bytes(b"\x89PNG truncated")
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_spec("flaky", tmp_path / "imgs", trials=2)))
    proc = run_sweeper(["run", "s.yaml", "--num-cpus", "2"], tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]  # trials failed beyond allowed_failure_fraction
    assert "ABORT" not in out and "Traceback" not in out
    assert proc.stdout.count("failed (UnidentifiedImageError: cannot identify image file") == 2  # each retry said

    sweep = tmp_path / "results" / "flaky"
    assert "status" not in json.loads((sweep / "sweep.json").read_text())
    df = pd.read_parquet(sweep / "trials")
    assert len(df) == 2 and set(df["status"]) == {"failed"} and set(df["attempt"]) == {2}  # each was retried
    assert df["error"].str.startswith("UnidentifiedImageError: cannot identify image file").all()
    assert all((sweep / p).is_file() for p in df["error_log"])
    assert (sweep / "report" / "report.md").exists()
    _, children = _mlflow_runs(tmp_path, "flaky")
    assert len(children) == 4 and {r.info.status for r in children} == {"FAILED"}  # 2 attempts x 2 trials
