"""Driver death: SIGKILL the sweep driver (and its local Ray) mid-sweep, then `sweeper resume`."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_TRAIN, sweeper_cmd
from proc_utils import kill_everything_under, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

SPEC = {
    "name": "crashy",
    "train": {**TINY_TRAIN, "iterations": 30, "eval_every": 10},
    "space": {"normalizer": {"choice": ["sn", "bsn"]}, "scale": {"loguniform": [0.5, 2.0]}},
    "seeds": [0, 1],
    "search": {"sampler": "tpe", "seed": 1, "trials": 4},
    "resources": {"max_concurrent": 2},
}


def test_sigkill_driver_then_resume_gives_exact_results(tmp_path: Path, sweeper_env: dict[str, str]):
    (tmp_path / "crashy.yaml").write_text(yaml.safe_dump(SPEC))
    env = sweeper_env
    trials_dir = tmp_path / "results" / "crashy" / "trials"
    log = (tmp_path / "first.log").open("w")
    driver = subprocess.Popen(
        [*sweeper_cmd(), "run", "crashy.yaml", "--num-cpus", "2"], cwd=tmp_path, env=env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        assert (
            wait_for(lambda: len(list(trials_dir.glob("*.parquet"))) >= 2 or driver.poll() is not None, timeout_s=240)
            and driver.poll() is None
        ), (tmp_path / "first.log").read_text()[-3000:]
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the local Ray it started die at once
        driver.wait(timeout=30)
    finally:
        kill_everything_under(Path(env["TMPDIR"]))
    done_before = len(list(trials_dir.glob("*.parquet")))
    assert done_before < 8, "the sweep finished before it could be killed; make the trials longer"

    proc = subprocess.run(
        [*sweeper_cmd(), "resume", "crashy"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    df = pd.read_parquet(trials_dir)
    assert not df.duplicated(["trial_id", "attempt"]).any()
    latest = df.sort_values("attempt").groupby("trial_id").tail(1)
    assert len(latest) == 8  # 4 configurations x 2 seeds, each exactly once
    assert (latest["status"] == "completed").all()
    assert (df["status"] == "completed").sum() == 8  # one completed row per trial, no duplicates

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("crashy")
    runs = client.search_runs([exp.experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    finished = [r for r in runs if r.data.tags.get("snsweep.role") == "trial" and r.info.status == "FINISHED"]
    assert sorted(r.data.tags["trial_id"] for r in finished) == sorted(latest["trial_id"])
    parents = [r for r in runs if r.data.tags.get("snsweep.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"

    # The Optuna study (optuna.db beside mlflow.db) went on across the driver's death: one COMPLETE
    # trial per configuration at its Parquet mean, nothing left RUNNING (orphans were failed).
    import optuna

    study = optuna.load_study(study_name="crashy", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    means = latest.groupby(["normalizer", "scale"])["final_mode_coverage"].mean()
    assert sorted((t.params["normalizer"], t.params["scale"]) for t in complete) == sorted(means.index)
    for t in complete:
        assert t.value == means[(t.params["normalizer"], t.params["scale"])]
        assert sorted(t.user_attrs["trial_ids"]) == sorted(
            latest.loc[(latest["normalizer"] == t.params["normalizer"]) & (latest["scale"] == t.params["scale"]),
                       "trial_id"]
        )  # fmt: skip
