"""The kill matrix: SIGKILL the real `sweeper run` / `resume` (its PID only) at each point, then resume.

Each point must end with exactly one terminal row per trial of the spec (4 configurations x 2
seeds), no trial or configuration recorded twice, no MLflow run left RUNNING and one FINISHED run
per trial, no process of the dead driver's local Ray alive 10 s after the kill, nothing of the
scenario alive at the end, and `sweeper status` calling the sweep finished. The scenarios live in
tests/kill_matrix.py, which also runs the matrix one point per scenario and prints it as a table.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from kill_matrix import N_TRIALS, chains, run_point
from proc_utils import kill_everything_under

pytestmark = pytest.mark.slow

CHAINS = chains()


@pytest.mark.parametrize("chain", list(CHAINS))
def test_a_sweep_killed_at_each_point_resumes_to_exactly_its_spec(chain: str):
    """``early``: during Ray start, right after the banner, between Tuner creation and the first
    trial, at the first trial start. ``late``: mid-trials, mid-trials again during `resume`,
    during the report. Each kill lands on the session that resumed the one before."""
    outcome, scenario = run_point(chain, CHAINS[chain])
    log = "\n".join(scenario.log)[-6000:]
    assert all(code == -9 for code in outcome.killed), f"a kill did not land: {outcome.killed}\n{log}"
    assert outcome.resume_rc == 0, log
    assert outcome.recorded == N_TRIALS and outcome.completed_rows == N_TRIALS, log
    assert outcome.duplicates == 0 and outcome.duplicates_between == 0, log
    assert outcome.running_runs == 0 and outcome.finished_runs_off == 0, log
    assert outcome.study_running == 0 and outcome.study_configurations_off == 0, log  # one COMPLETE each
    assert outcome.leftover_after_kill == [], log
    assert outcome.leftover_at_end == [], log
    assert outcome.status_line.startswith(f"kill: finished, {N_TRIALS}/{N_TRIALS} trials finished"), log


def test_an_unfinished_trial_continues_from_its_last_checkpoint(tmp_path):
    """One long trial, SIGKILLed after its second checkpoint: the resumed attempt (same trial id,
    attempt 2) starts where the checkpoint was, not at step 0, and records the whole curve."""
    import os
    import signal
    import subprocess
    import sys

    import yaml
    from conftest import REPO
    from kill_matrix import TRAIN
    from mlflow.tracking import MlflowClient
    from proc_utils import wait_for

    from sweeper import results

    spec = {
        "name": "long", "train": {**TRAIN, "iterations": 1600, "eval_every": 200},
        "space": {"normalizer": {"choice": ["sn"]}}, "seeds": [0], "search": {"sampler": "tpe", "trials": 1},
    }  # fmt: skip
    (tmp_path / "long.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "home").mkdir()
    ray_tmp = Path(tempfile.mkdtemp(prefix="kc-", dir="/tmp"))
    env = {**os.environ, "HOME": str(tmp_path / "home"), "TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO),
           "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip
    tune = tmp_path / "results" / "long" / "tune"
    try:
        cmd = [sys.executable, "-m", "sweeper.cli", "run", "long.yaml", "--num-cpus", "1"]
        driver = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        assert wait_for(lambda: len(list(tune.glob("*/checkpoint_000001"))) == 1 or driver.poll() is not None, 240)
        os.kill(driver.pid, signal.SIGKILL)
        assert driver.wait() == -9
        proc = subprocess.run([sys.executable, "-m", "sweeper.cli", "resume", "long"], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=400)  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "1 unfinished trial(s) run again (1 from their last checkpoint)" in proc.stdout, proc.stdout
        df = results.load(tmp_path / "results" / "long")
        assert len(df) == 1 and df["attempt"].iloc[0] == 2 and df["status"].iloc[0] == "completed"
        curve = results.load_curves(tmp_path / "results" / "long")
        steps = sorted(curve.loc[curve["metric"] == "mode_coverage", "step"])
        assert steps == list(range(200, 1601, 200))  # the whole curve, no gap, no repeat
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        run = client.get_run(df["mlflow_run_id"].iloc[0])
        logged = [m.step for m in client.get_metric_history(run.info.run_id, "mode_coverage")]
        assert min(logged) >= 600, logged  # this attempt trained from the checkpoint at step >= 400
    finally:
        kill_everything_under(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
