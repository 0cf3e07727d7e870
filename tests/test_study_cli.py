"""The study from the command line: --optuna-storage and its env var are checked before anything starts,
`sweeper dashboard NAME` serves optuna-dashboard on 127.0.0.1 over the study sweep.json names."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from concurrent.futures import Future
from pathlib import Path

import optuna
import psutil
import pytest
from conftest import sweeper_cmd
from proc_utils import stop
from ray_fixtures import free_ports

from sweeper import spec as specmod
from sweeper.cli import cluster
from sweeper.errors import SweepError
from sweeper.run import study as studymod
from sweeper.run.meta import sweep_meta
from sweeper.run.reporting import INDEX_KEY, OBJECTIVE
from sweeper.run.storage import default_storage


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--optuna-storage", "http://127.0.0.1:5000"], {}, "--optuna-storage http://127.0.0.1:5000: Optuna keeps"),
        (["--optuna-storage", "optuna.db"], {}, "for a local file write sqlite:///optuna.db"),
        ([], {studymod.ENV: "sqlite://rel.db"}, "$SNSWEEP_OPTUNA_STORAGE sqlite://rel.db: a SQLite study is sqlite"),
    ],
)
def test_a_bad_storage_url_is_one_line_before_anything_starts(tmp_path: Path, sweeper_env, args, env, needle):
    proc = subprocess.run(
        [*sweeper_cmd(), "--results-dir", str(tmp_path / "res"), *args, "run", "demo"],
        cwd=tmp_path, env={**sweeper_env, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "res").exists() and not list(tmp_path.glob("*.db"))
    assert not (Path(sweeper_env["HOME"]) / ".ray").exists()  # Ray never started


def _now(fn, *args) -> Future:
    future: Future = Future()
    future.set_result(fn(*args))
    return future


def _sweep_with_a_study(tmp_path: Path, name: str = "dash") -> tuple[specmod.SweepSpec, Path]:
    """What a finished sweep leaves: sweep.json naming its study, and the study (4 configurations)."""
    from sweeper.run.search import make_searcher

    spec = specmod.SweepSpec.model_validate(
        {"name": name, "space": {"normalizer": {"choice": ["sn", "bsn"]}, "scale": {"loguniform": [0.5, 2.0]}},
         "seeds": [0, 1], "search": {"sampler": "tpe", "trials": 4}}  # fmt: skip
    )
    storage = default_storage(tmp_path / "results", f"sqlite:///{tmp_path / 'mlflow.db'}")
    plan = studymod.plan_study(spec, storage, resume=False)
    study = plan.open(_now, overwrite=False)
    searcher = make_searcher(spec, study)
    for i in range(spec.n_trials):
        config = searcher.suggest(f"t{i}")
        value = config["scale"] * (1 if config["normalizer"] == "sn" else 2) + 0.01 * config[INDEX_KEY]
        searcher.on_trial_complete(f"t{i}", {OBJECTIVE: value})
    plan.sweep_path.mkdir(parents=True)
    (plan.sweep_path / "sweep.json").write_text(json.dumps(sweep_meta(spec, storage, plan.target), default=str))
    return spec, plan.sweep_path


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_dashboard_serves_the_sweeps_study_on_loopback(tmp_path: Path, sweeper_env):
    _, sweep_path = _sweep_with_a_study(tmp_path)
    assert json.loads((sweep_path / "sweep.json").read_text())["optuna_storage"] == f"sqlite:///{tmp_path}/optuna.db"
    (port,) = free_ports(1)
    log = (tmp_path / "dash.log").open("w")
    proc = subprocess.Popen(
        [*sweeper_cmd(), "dashboard", "dash", "--port", str(port)], cwd=tmp_path, env=sweeper_env,
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        studies = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                studies = _get(f"{base}/api/studies")
                break
            except OSError:
                time.sleep(0.5)
        assert studies is not None, (tmp_path / "dash.log").read_text()
        (summary,) = [s for s in studies["study_summaries"] if s["study_name"] == "dash"]
        detail = _get(f"{base}/api/studies/{summary['study_id']}")
        complete = [t for t in detail["trials"] if t["state"] == "Complete"]
        assert len(complete) == 4
        attrs = {a["key"]: a["value"] for a in complete[0]["user_attrs"]}
        assert {"objective_seed_0", "objective_seed_1", "trial_ids", "seeds"} <= attrs.keys()
        importances = _get(f"{base}/api/studies/{summary['study_id']}/param_importances")["param_importances"][0]
        assert {i["name"] for i in importances} == {"normalizer", "scale"}
        with urllib.request.urlopen(f"{base}/dashboard", timeout=5) as r:
            assert r.status == 200 and b"<html" in r.read().lower()
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("tcp") if c.status == "LISTEN"]
        assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
        first = (tmp_path / "dash.log").read_text().splitlines()[0]
        assert first.startswith(f"optuna-dashboard on {base}/dashboard/studies/{summary['study_id']} over sqlite:")
    finally:
        stop([proc.pid])
    assert proc.poll() is not None


def test_dashboard_errors_are_one_line(tmp_path: Path, sweeper_env, monkeypatch):
    def dash(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*sweeper_cmd(), "dashboard", *args], cwd=tmp_path, env=sweeper_env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    proc = dash("nosuch")
    assert proc.returncode == 2 and proc.stderr == "error: no sweep 'nosuch' under results (no sweep.json); see " \
        "`sweeper status`\n", proc.stderr
    none_dir = tmp_path / "results" / "kept-none"
    none_dir.mkdir(parents=True)
    (none_dir / "sweep.json").write_text(json.dumps({"name": "kept-none", "optuna_storage": None}))
    proc = dash("kept-none")
    assert proc.returncode == 2 and "sweep 'kept-none' keeps no Optuna study" in proc.stderr
    assert proc.stderr.count("\n") == 1
    proc = dash()  # the default storage, where no sweep has run yet
    assert proc.returncode == 2 and "no Optuna study database at" in proc.stderr and proc.stderr.count("\n") == 1
    assert not (tmp_path / "optuna.db").exists()  # looking never creates an empty database


def test_a_submitted_job_is_told_the_storage_and_a_relative_file_is_refused():
    cmd = cluster.entrypoint("demo", results_dir="/r", tracking_uri=None, optuna_storage="postgresql://u@db/o")
    assert "--optuna-storage postgresql://u@db/o run demo" in cmd
    assert "--optuna-storage" not in cluster.entrypoint("demo", results_dir="/r", tracking_uri=None)
    with pytest.raises(SweepError, match="the job runs in a temporary directory; give the head's absolute path"):
        cluster._check_optuna_storage("sqlite:///optuna.db")
    assert cluster._check_optuna_storage("sqlite:////mnt/r/optuna.db") == "sqlite:////mnt/r/optuna.db"


def test_load_study_sees_what_the_searcher_told(tmp_path: Path):
    os.chdir(tmp_path)
    _sweep_with_a_study(tmp_path, "plain")
    study = optuna.load_study(study_name="plain", storage="sqlite:///optuna.db")
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 4
