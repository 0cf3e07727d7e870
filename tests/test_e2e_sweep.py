"""End to end: `sweeper run` on a tiny spec with real Ray, Optuna, MLflow (SQLite) and Parquet."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_TRAIN, run_sweeper

from sweeper import results

pytestmark = pytest.mark.slow

SPEC = {
    "name": "tiny",
    "train": TINY_TRAIN,
    "objective": {"metric": "mode_coverage"},
    "space": {
        "normalizer": {"choice": ["none", "sn", "bsn"]},
        "scale": {"loguniform": [0.5, 2.0]},
        "lr_d": {"loguniform": [1e-4, 1e-3]},
        "n_dis": {"choice": [1, 2]},
    },
    "seeds": [0, 1],
    "search": {"sampler": "tpe", "seed": 0, "trials": 3},
}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("e2e")
    (work / "tiny.yaml").write_text(yaml.safe_dump(SPEC))
    proc = run_sweeper(["run", "tiny.yaml", "--num-cpus", "2"], work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, proc


def test_parquet_has_one_completed_v1_row_per_trial(tiny_sweep):
    work, _ = tiny_sweep
    df = pd.read_parquet(work / "results" / "tiny" / "trials")  # plain pandas, no snsweep code
    assert len(df) == 6  # 3 configurations x 2 seeds
    missing = [c for c in results.BASE_COLUMNS if c not in df.columns]
    assert not missing
    for m in ("mode_coverage", "hq_fraction"):
        assert {f"final_{m}", f"best_{m}", f"best_{m}_step"} <= set(df.columns)
    assert (df["status"] == "completed").all()
    assert df["trial_id"].is_unique
    assert df["scale"].dtype == "float64" and df["seed"].dtype == "int64"
    # each configuration ran once per seed
    per_config = df.groupby(["normalizer", "scale", "lr_d", "n_dis"])["seed"].apply(sorted)
    assert all(s == [0, 1] for s in per_config)
    assert df["final_mode_coverage"].between(0, 1).all()
    cfg = json.loads(df["config_json"].iloc[0])
    assert cfg["resolution"] == 8 and cfg["normalizer"] == df["normalizer"].iloc[0]
    assert not list((work / "results" / "tiny" / "trials").glob(".*"))  # no temp leftovers
    curves = results.load_curves(work / "results" / "tiny")
    assert set(curves["step"]) == {3, 6}


def test_mlflow_parent_run_with_one_finished_child_per_trial(tiny_sweep):
    work, _ = tiny_sweep
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("snsweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 6
    assert all(r.info.status == "FINISHED" for r in runs)  # no run left RUNNING
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    df = pd.read_parquet(work / "results" / "tiny" / "trials")
    by_run = df.set_index("mlflow_run_id")
    for child in children:
        row = by_run.loc[child.info.run_id]
        assert child.data.tags["trial_id"] == row["trial_id"]
        assert child.data.params["normalizer"] == row["normalizer"]
        assert float(child.data.params["scale"]) == pytest.approx(row["scale"])
        assert int(child.data.params["seed"]) == row["seed"]
        history = client.get_metric_history(child.info.run_id, "mode_coverage")
        assert sorted(m.step for m in history) == [3, 6]
    arts = [a.path for a in client.list_artifacts(parents[0].info.run_id, "report")]
    assert "report/report.md" in arts
    # the parent run is created in the background while Ray starts the trials: sweep.json
    # still names it, and the parent keeps a copy of sweep.json
    meta = json.loads((work / "results" / "tiny" / "sweep.json").read_text())
    assert meta["mlflow_parent_run_id"] == parents[0].info.run_id
    assert "sweep.json" in [a.path for a in client.list_artifacts(parents[0].info.run_id)]


def test_unopenable_mlflow_store_warns_and_records_parquet_only(tmp_path: Path):
    """A store that cannot be created (its directory is a file) must not cost the sweep."""
    spec = {**SPEC, "name": "nostore", "search": {**SPEC["search"], "trials": 1}, "seeds": [0]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "afile").write_text("")
    uri = f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}"
    proc = run_sweeper(["--tracking-uri", uri, "run", "s.yaml", "--num-cpus", "2"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "warning: cannot open the MLflow store" in proc.stdout and "Parquet only" in proc.stdout
    df = pd.read_parquet(tmp_path / "results" / "nostore" / "trials")
    assert list(df["status"]) == ["completed"] and df["mlflow_run_id"].isna().all()
    assert "Traceback" not in proc.stdout + proc.stderr


def test_report_and_sweep_meta_written(tiny_sweep):
    work, proc = tiny_sweep
    sweep = work / "results" / "tiny"
    assert (sweep / "report" / "report.md").read_text().strip()
    meta = json.loads((sweep / "sweep.json").read_text())
    assert meta["trials"] == 6 and meta["versions"]["ray"] == "2.60.0"
    assert meta["spec"]["name"] == "tiny"


def test_progress_output_names_trials_metric_and_what_is_left(tiny_sweep):
    _, proc = tiny_sweep
    out = proc.stdout
    assert out.count("started") >= 6
    assert "left" in out and "done 6/6" in out
    assert "mode_coverage=" in out
    assert "best configuration:" in out and "report:" in out and "sweeper ui" in out
    assert "sweep tiny finished in " in out and "(Ray start " in out  # where the time went
