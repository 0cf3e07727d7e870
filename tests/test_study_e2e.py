"""Real sweeps (Ray Tune, Optuna, MLflow, Parquet) leave an Optuna study that Optuna's own tools open:
one COMPLETE trial per configuration, valued at the Parquet mean over seeds, per-seed values as user attrs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import TINY_TRAIN, run_sweeper

pytestmark = pytest.mark.slow

TRAIN = {**TINY_TRAIN, "metrics": ["fid_small", "mode_coverage"], "diagnostics": False}
"""fid_small: a tiny run's mode metrics are all 0, its small-extractor FID differs per configuration."""


def _check_study_matches_parquet(study: optuna.Study, trials: pd.DataFrame, params: list[str], metric: str) -> None:
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    configs = trials.groupby(params, dropna=False)
    assert len(complete) == configs.ngroups  # one per configuration
    for t in complete:
        mask = pd.Series(True, index=trials.index)
        for p in params:
            mask &= trials[p] == t.params[p]
        rows = trials[mask].sort_values("seed")
        assert len(rows) == 2 and rows["seed"].tolist() == [0, 1], (t.params, rows)
        assert t.value == pytest.approx(rows[f"final_{metric}"].mean(), rel=1e-12)
        assert t.user_attrs["seeds"] == [0, 1]
        assert t.user_attrs["trial_ids"] == rows["trial_id"].tolist()
        for seed, v in zip(rows["seed"], rows[f"final_{metric}"], strict=True):
            assert t.user_attrs[f"objective_seed_{seed}"] == pytest.approx(v, rel=1e-12)


def test_a_sweep_leaves_a_study_that_load_study_opens_and_a_report_with_importance(tmp_path: Path):
    spec = {
        "name": "studied",
        "train": TRAIN,
        "space": {"normalizer": {"choice": ["none", "sn", "bsn"]}, "scale": {"loguniform": [0.5, 2.0]},
                  "lr_d": {"loguniform": [1e-4, 1e-3]}},  # fmt: skip
        "seeds": [0, 1],
        "objective": {"metric": "fid_small"},
        "search": {"sampler": "tpe", "seed": 0, "trials": 4},
        "resources": {"max_concurrent": 2},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    proc = run_sweeper(["run", "s.yaml", "--num-cpus", "2"], tmp_path, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    db = tmp_path / "optuna.db"  # beside mlflow.db: the embedded default
    assert db.is_file() and (tmp_path / "mlflow.db").is_file()
    assert f"Optuna study: optuna-dashboard sqlite:///{db}" in proc.stdout

    meta = json.loads((tmp_path / "results" / "studied" / "sweep.json").read_text())
    assert (meta["optuna_storage"], meta["optuna_study"]) == (f"sqlite:///{db}", "studied")
    os.chdir(tmp_path)
    study = optuna.load_study(study_name="studied", storage="sqlite:///optuna.db")  # what a notebook types
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    trials = pd.read_parquet(tmp_path / "results" / "studied" / "trials")
    assert (trials["status"] == "completed").all() and trials["final_fid_small"].notna().all()
    _check_study_matches_parquet(study, trials, ["normalizer", "scale", "lr_d"], "fid_small")

    md = (tmp_path / "results" / "studied" / "report" / "report.md").read_text()
    section = md.split("## Parameter importance and parallel coordinates", 1)[1].split("\n## ", 1)[0]
    assert "| parameter | fanova | ped_anova |" in section, section
    assert {"| normalizer |", "| scale |", "| lr_d |"} <= {ln[: ln.index(" |", 2) + 2] for ln in section.splitlines()
                                                         if ln.startswith("| ") and "---" not in ln}
    assert (tmp_path / "results" / "studied" / "report" / "figures" / "parallel_blobs.png").is_file()


def test_a_packed_grid_leaves_one_trial_per_point_in_the_env_named_storage(tmp_path: Path, monkeypatch):
    """Grid points are enqueued into the study; packs tell each member's objective through the seed
    repeater; $SNSWEEP_OPTUNA_STORAGE (relative: from the working directory) decides where."""
    spec = {
        "name": "packed-grid",
        "train": TRAIN,
        "space": {"normalizer": {"grid": ["sn", "bsn"]}, "scale": {"grid": [0.5, 1.0, 2.0]}},
        "seeds": [0, 1],
        "objective": {"metric": "fid_small"},
        "search": {"sampler": "grid"},
        "pack": 3,
    }
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("SNSWEEP_OPTUNA_STORAGE", "sqlite:///studies/grid.db")
    proc = run_sweeper(["run", "g.yaml", "--num-cpus", "2"], tmp_path, timeout=500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    db = tmp_path / "studies" / "grid.db"
    assert db.is_file() and not (tmp_path / "optuna.db").exists()
    meta = json.loads((tmp_path / "results" / "packed-grid" / "sweep.json").read_text())
    assert meta["optuna_storage"] == f"sqlite:///{db}"
    study = optuna.load_study(study_name="packed-grid", storage=f"sqlite:///{db}")
    trials = pd.read_parquet(tmp_path / "results" / "packed-grid" / "trials")
    assert len(trials) == 12 and trials["trial_id"].str.contains("-m").all()  # 4 packs of 3 members
    _check_study_matches_parquet(study, trials, ["normalizer", "scale"], "fid_small")
    assert len(study.trials) == 6  # no extra trial: every grid point once
