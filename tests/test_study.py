"""The sweep's Optuna study on real Optuna storage (SQLite), driven the way Ray Tune drives a searcher.

No Ray cluster: the searchers are Ray's own classes (``OptunaSearch``, ``Repeater``, Tune's
``SearchGenerator`` for the checkpoint), called in the order Tune calls them. A "dead driver" is
a searcher that asked for more trials after the snapshot Tune saved; "resume" is a fresh copy of
the searcher as pickled at the start (Tune's tuner.pkl) restored from that snapshot.
"""

from __future__ import annotations

import os
import pickle
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import optuna
import pytest

from sweeper import spec as specmod
from sweeper.errors import SweepError
from sweeper.run import study as studymod
from sweeper.run.reporting import INDEX_KEY, OBJECTIVE
from sweeper.run.storage import default_storage
from sweeper.spec.study_url import shown, url_problem

optuna.logging.set_verbosity(optuna.logging.WARNING)


def now(fn: Any, *args: Any) -> Future:
    """A starter that runs at once (the sweep uses a thread)."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except BaseException as e:  # noqa: BLE001
        future.set_exception(e)
    return future


def _spec(*, grid: bool = False, pack: int = 1, name: str = "st", **extra: Any) -> specmod.SweepSpec:
    space = (
        {"normalizer": {"grid": ["sn", "bsn"]}, "scale": {"grid": [0.5, 1.0, 2.0]}}
        if grid
        else {"normalizer": {"choice": ["sn", "bsn"]}, "scale": {"loguniform": [0.5, 2.0]}}
    )
    return specmod.SweepSpec.model_validate(
        {"name": name, "space": space, "seeds": [0, 1], "pack": pack,
         "search": {"sampler": "grid" if grid else "tpe", "trials": 4, "seed": 3}, **extra}  # fmt: skip
    )


def _value(config: dict[str, Any]) -> float:
    """A deterministic objective of the configuration and the replicate (seeds differ by 0.01)."""
    return config["scale"] * (1.0 if config["normalizer"] == "sn" else 2.0) + 0.01 * config[INDEX_KEY]


def _open(spec: specmod.SweepSpec, tmp: Path, *, resume: bool = False, overwrite: bool = False):
    storage = default_storage(tmp / "results", f"sqlite:///{tmp / 'mlflow.db'}")
    return studymod.plan_study(spec, storage, resume=resume).open(now, overwrite=overwrite)


def _searcher(spec: specmod.SweepSpec, study: Any) -> Any:
    from sweeper.run.search import make_pack_searcher, make_searcher

    return make_pack_searcher(spec, study) if spec.pack > 1 else make_searcher(spec, study)


def _complete(searcher: Any, tid: str, config: dict[str, Any]) -> None:
    if "__pack__" in config:  # what a packed trial reports: each member's objective under m{i}/
        members = {f"m{i}/{OBJECTIVE}": _value(m) for i, m in enumerate(config["__pack__"])}
        searcher.on_trial_complete(tid, {OBJECTIVE: max(members.values()), **members})
    else:
        searcher.on_trial_complete(tid, {OBJECTIVE: _value(config)})


def _members(tid: str, config: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if "__pack__" in config:
        return [(f"{tid}-m{i}", m) for i, m in enumerate(config["__pack__"])]
    return [(tid, config)]


def _load(tmp: Path, name: str = "st") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / 'optuna.db'}")


def _check_one_complete_per_configuration(study: optuna.Study, configs: dict[str, dict[str, Any]], seeds: list[int]):
    """Every configuration Tune ran has exactly one COMPLETE trial, valued at the mean over its seeds."""
    by_key: dict[tuple, list[tuple[str, dict[str, Any]]]] = {}
    for tid, cfg in configs.items():
        for mid, member in _members(tid, cfg):
            by_key.setdefault((member["normalizer"], member["scale"]), []).append((mid, member))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted((t.params["normalizer"], t.params["scale"]) for t in complete) == sorted(by_key)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    for t in complete:
        replicates = sorted(by_key[(t.params["normalizer"], t.params["scale"])], key=lambda r: r[1][INDEX_KEY])
        values = [_value(m) for _, m in replicates]
        assert t.value == pytest.approx(sum(values) / len(values), abs=1e-12)
        assert t.user_attrs["seeds"] == seeds
        assert t.user_attrs["trial_ids"] == [mid for mid, _ in replicates]
        for seed, v in zip(seeds, values, strict=True):
            assert t.user_attrs[f"objective_seed_{seed}"] == pytest.approx(v, abs=1e-12)


@pytest.mark.parametrize(("grid", "pack"), [(False, 1), (True, 1), (False, 2), (True, 3)])
def test_driver_death_then_resume_leaves_one_complete_trial_per_configuration(tmp_path, grid, pack):
    """Tune's snapshot, then a driver that asked and told more before it died, then a restore."""
    from ray.tune.search.search_generator import SearchGenerator

    os.chdir(tmp_path)
    spec = _spec(grid=grid, pack=pack)
    searcher = _searcher(spec, _open(spec, tmp_path))
    as_pickled = pickle.dumps(searcher)  # Tune's tuner.pkl holds the searcher as it was at the start
    n = spec.n_tune_trials
    configs: dict[str, dict[str, Any]] = {}
    for i in range(n // 2):
        configs[f"t{i}"] = searcher.suggest(f"t{i}")
    for i in range(n // 2 - 1):
        _complete(searcher, f"t{i}", configs[f"t{i}"])
    snapshot = tmp_path / "tune"
    snapshot.mkdir()
    SearchGenerator(searcher).save_to_dir(str(snapshot), "s")
    asked = {t.number for t in _load(tmp_path).trials if t.state != optuna.trial.TrialState.WAITING}
    for i in range(n // 2, n // 2 + 2):  # asked after the snapshot: no restored Tune trial knows them
        configs[f"t{i}"] = searcher.suggest(f"t{i}")
    last = f"t{n // 2 - 1}"
    _complete(searcher, last, configs[last])  # told after the snapshot; Tune will run it again
    running = {t.number for t in _load(tmp_path).get_trials(states=(optuna.trial.TrialState.RUNNING,))}
    orphans = running - asked  # what a dead driver leaves: trials only the study knows
    assert orphans

    restored = pickle.loads(as_pickled)
    SearchGenerator(restored).restore_from_dir(str(snapshot))
    failed = {t.number for t in _load(tmp_path).get_trials(states=(optuna.trial.TrialState.FAIL,))}
    assert failed == orphans
    still = {t.number for t in _load(tmp_path).get_trials(states=(optuna.trial.TrialState.RUNNING,))}
    assert still == running & asked  # the restored Tune trials will tell these
    for i in range(n // 2, n // 2 + 2):
        del configs[f"t{i}"]  # Tune never saw them; it asks again
    _complete(restored, last, configs[last])
    for i in range(n // 2, n):
        configs[f"t{i}"] = restored.suggest(f"t{i}")
        _complete(restored, f"t{i}", configs[f"t{i}"])
    study = _load(tmp_path)
    _check_one_complete_per_configuration(study, configs, [0, 1])
    if grid:  # every grid point ran, the orphans' points once more through a retry
        points = {(t.params["normalizer"], t.params["scale"]) for t in study.get_trials(
            states=(optuna.trial.TrialState.COMPLETE,))}  # fmt: skip
        assert points == {(n_, c) for n_ in ("sn", "bsn") for c in (0.5, 1.0, 2.0)}
        retried = [t for t in study.trials if "retry_of" in t.user_attrs]
        assert sorted(t.user_attrs["retry_of"] for t in retried) == sorted(orphans)


def test_a_failed_configuration_rerun_on_resume_gets_one_complete_trial(tmp_path):
    """Every seed failed (told FAIL); Tune re-runs an errored trial on resume and it succeeds."""
    os.chdir(tmp_path)
    spec = _spec()
    searcher = _searcher(spec, _open(spec, tmp_path))
    a, b = searcher.suggest("a"), searcher.suggest("b")
    searcher.on_trial_complete("a", None, error=True)
    searcher.on_trial_complete("b", None, error=True)
    study = _load(tmp_path)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]
    searcher.on_trial_complete("a", {OBJECTIVE: _value(a)})  # resume_errored: the trial ran again
    searcher.on_trial_complete("a", {OBJECTIVE: _value(a)})  # and a second time: still one copy
    trials = _load(tmp_path).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 1 and complete[0].user_attrs["retry_of"] == trials[0].number
    assert complete[0].params == trials[0].params
    assert complete[0].value == pytest.approx(_value(a))  # seed 1 is still lost: the mean of the one left
    assert complete[0].user_attrs["objective_seed_1"] is None and b[INDEX_KEY] == 1


def test_the_study_is_named_after_the_sweep_and_says_what_its_values_are(tmp_path):
    os.chdir(tmp_path)
    spec = _spec(name="named")
    _open(spec, tmp_path).storage()
    study = _load(tmp_path, "named")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # mode_coverage
    assert study.user_attrs["objective"] == "mode_coverage" and study.user_attrs["seeds"] == [0, 1]
    assert study.user_attrs["results"] == str((tmp_path / "results" / "named").resolve())
    assert "mean over seeds" in study.user_attrs["value"]


def test_a_fresh_sweep_never_mixes_into_an_earlier_study(tmp_path):
    """An existing study with trials is refused (one line); --overwrite deletes it; a study that
    only holds the queued grid of a start that died is replaced silently."""
    os.chdir(tmp_path)
    spec = _spec()
    searcher = _searcher(spec, _open(spec, tmp_path))
    searcher.suggest("a")
    with pytest.raises(SweepError, match=r"already has 1 trials from an earlier sweep; `--overwrite` deletes it"):
        _open(spec, tmp_path).storage()
    _open(spec, tmp_path, overwrite=True).storage()
    assert _load(tmp_path).trials == []

    grid = _spec(grid=True)
    _searcher(grid, _open(grid, tmp_path, overwrite=True))  # enqueues 6 points, then "dies"
    assert len(_load(tmp_path).trials) == 6
    _open(grid, tmp_path).storage()
    assert _load(tmp_path).trials == []


def test_resume_needs_the_study_it_started_with(tmp_path):
    os.chdir(tmp_path)
    spec = _spec()
    results_dir = tmp_path / "results"
    storage = default_storage(results_dir, f"sqlite:///{tmp_path / 'mlflow.db'}")
    target = studymod.resolve(spec, storage)
    (results_dir / "st").mkdir(parents=True)
    (results_dir / "st" / "sweep.json").write_text(__import__("json").dumps({"name": "st", **target.record()}))
    optuna.create_study(study_name="other", storage=target.url)
    with pytest.raises(SweepError, match="the Optuna study 'st' is gone from sqlite:///"):
        studymod.plan_study(spec, storage, resume=True).open(now, overwrite=False).storage()


def test_a_finished_sweep_leaves_no_running_trial(tmp_path):
    """A time budget or an abort cuts groups short: Study.finish fails what Tune never told."""
    os.chdir(tmp_path)
    spec = _spec()
    study = _open(spec, tmp_path)
    searcher = _searcher(spec, study)
    for tid in ("a", "b", "c"):
        searcher.suggest(tid)
    _complete(searcher, "a", {**searcher._trial_id_to_group["a"].config, INDEX_KEY: 0})
    _complete(searcher, "b", {**searcher._trial_id_to_group["b"].config, INDEX_KEY: 1})
    assert study.finish() == 1
    states = sorted(t.state.name for t in _load(tmp_path).trials)
    assert states == ["COMPLETE", "FAIL"]


# --- where the study lives ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("sqlite:///optuna.db", None),
        ("sqlite:////abs/optuna.db", None),
        ("postgresql://snsweep@db.internal/optuna", None),
        ("postgresql+psycopg2://u:secret@db:5432/optuna", None),
        ("mysql+pymysql://u@db/optuna", None),
        ("none", None),
        ("NONE", None),
        ("optuna.db", "for a local file write sqlite:///optuna.db"),
        ("sqlite://optuna.db", "three slashes"),
        ("sqlite:///", "three slashes"),
        ("sqlite:///:memory:", "write none to keep no study"),
        ("http://127.0.0.1:5000", "not behind an HTTP server"),
        ("redis://localhost/0", "unsupported scheme 'redis'"),
        ("", "is empty"),
    ],
)
def test_storage_urls(url: str, problem: str | None):
    got = url_problem(url)
    assert (got is None) if problem is None else (problem in got), got


def test_passwords_never_show():
    assert shown("postgresql://u:secret@db:5432/optuna") == "postgresql://u:***@db:5432/optuna"
    assert shown("postgresql+psycopg2://u:s3:cr@db/x") == "postgresql+psycopg2://u:***@db/x"
    assert shown("sqlite:////tmp/optuna.db") == "sqlite:////tmp/optuna.db"
    assert shown("postgresql://u@db/optuna") == "postgresql://u@db/optuna"


def test_where_a_fresh_sweep_keeps_its_study(tmp_path, monkeypatch):
    """--optuna-storage > search.storage > $SNSWEEP_OPTUNA_STORAGE > optuna.db beside mlflow.db."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(studymod.ENV, raising=False)
    mlflow_db = tmp_path / "track" / "mlflow.db"
    plain = _spec()
    in_file = _spec(search={"sampler": "tpe", "storage": "sqlite:///from-file.db"})

    def where(spec: specmod.SweepSpec, cli: str | None = None, tracking: str | None = f"sqlite:///{mlflow_db}"):
        storage = default_storage(tmp_path / "res", tracking, optuna_storage=cli)
        if tracking is None:
            storage.tracking_uri = None
        target = studymod.resolve(spec, storage)
        return None if target is None else (target.url, target.source, target.name)

    assert where(plain) == (f"sqlite:///{tmp_path / 'track' / 'optuna.db'}", "default", "st")
    assert where(plain, tracking="http://127.0.0.1:5000")[0] == f"sqlite:///{tmp_path / 'res' / 'optuna.db'}"
    assert where(plain, tracking=None)[0] == f"sqlite:///{tmp_path / 'res' / 'optuna.db'}"
    monkeypatch.setenv(studymod.ENV, "postgresql://u@db/optuna")
    assert where(plain)[:2] == ("postgresql://u@db/optuna", "$SNSWEEP_OPTUNA_STORAGE")
    assert where(in_file)[:2] == (f"sqlite:///{tmp_path / 'from-file.db'}", "search.storage")  # made absolute
    assert where(in_file, cli="sqlite:///cli.db")[:2] == (f"sqlite:///{tmp_path / 'cli.db'}", "--optuna-storage")
    assert where(in_file, cli="none") is None
    assert where(_spec(search={"sampler": "tpe", "storage": "none"})) is None
    monkeypatch.setenv(studymod.ENV, "optuna.db")
    with pytest.raises(SweepError, match=r"^\$SNSWEEP_OPTUNA_STORAGE 'optuna.db' is not a storage URL; for a local"):
        where(plain)
    with pytest.raises(SweepError, match=r"^--optuna-storage http://h:1: Optuna keeps studies in a database"):
        default_storage(tmp_path, optuna_storage="http://h:1")


def test_the_sweep_file_field_is_checked_with_the_spec():
    with pytest.raises(specmod.SpecError, match=r"x.yaml: search.storage: sqlite://o.db: a SQLite study is sqlite"):
        specmod.from_data({"name": "a", "search": {"storage": "sqlite://o.db"}}, "x.yaml")


def test_an_existing_sweep_keeps_the_storage_it_recorded(tmp_path, monkeypatch):
    monkeypatch.delenv(studymod.ENV, raising=False)
    meta = {"name": "s", "optuna_storage": "sqlite:////data/optuna.db", "optuna_study": "s"}
    assert studymod.for_existing(meta, None, strict=True).url == "sqlite:////data/optuna.db"
    assert studymod.for_existing({"name": "s", "optuna_storage": None}, None, strict=True) is None
    with pytest.raises(SweepError, match=r"keeps its Optuna study in sqlite:////data/optuna.db, and resume continues"):
        studymod.for_existing(meta, "sqlite:////else/optuna.db", strict=True)
    assert studymod.for_existing(meta, "sqlite:////else/optuna.db", strict=False).url == "sqlite:////else/optuna.db"
    secret = {"name": "s", "optuna_storage": "postgresql://u:***@db/optuna", "optuna_study": "s"}
    with pytest.raises(SweepError, match="sweep.json keeps no password: pass the full URL with --optuna-storage"):
        studymod.for_existing(secret, None, strict=True)
    monkeypatch.setenv(studymod.ENV, "postgresql://u:pw@db/optuna")
    assert studymod.for_existing(secret, None, strict=True).url == "postgresql://u:pw@db/optuna"


def test_an_unopenable_default_storage_warns_and_an_explicit_one_fails(tmp_path, monkeypatch):
    """Like the MLflow store: a default that cannot be opened costs the study, not the sweep; a
    storage the user named must work."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(studymod.ENV, raising=False)
    (tmp_path / "afile").write_text("")  # the default's folder is a file
    spec = _spec()
    storage = default_storage(tmp_path / "results", f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}")
    said: list[str] = []
    study = studymod.plan_study(spec, storage, resume=False).open(now, overwrite=False, progress=said.append)
    assert study.storage() is None and study.target is None and study.hint() is None and study.finish() == 0
    assert len(said) == 1 and said[0].startswith(f"warning: cannot open the Optuna storage sqlite:///{tmp_path}")
    assert said[0].endswith("this sweep keeps no Optuna study (pass --optuna-storage)")
    from sweeper.run.search import make_searcher

    assert make_searcher(spec, study).suggest("a") is not None  # in memory, as before
    storage.optuna_storage = f"sqlite:///{tmp_path / 'afile' / 'optuna.db'}"
    named = studymod.plan_study(spec, storage, resume=False).open(now, overwrite=False, progress=said.append)
    with pytest.raises(SweepError, match=r"^cannot open the Optuna storage .* \(--optuna-storage\): .* fix it or"):
        named.storage()


def test_a_sweep_started_before_search_storage_existed_is_not_a_different_spec(tmp_path):
    """Its sweep.json spec lacks `search.storage`: --resume-if-exists must still see the same spec."""
    import json

    from sweeper.run.sweep import restorable

    spec = _spec(name="old")
    recorded = spec.model_dump(mode="json")
    del recorded["search"]["storage"]
    sweep = tmp_path / "old"
    (sweep / "tune").mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"name": "old", "spec": recorded}))
    with pytest.raises(SweepError, match="cannot be restored"):  # past the spec check: the (empty) Tune state
        restorable(spec, tmp_path)
    recorded["search"]["trials"] = 9
    (sweep / "sweep.json").write_text(json.dumps({"name": "old", "spec": recorded}))
    with pytest.raises(SweepError, match="exists with a different spec"):
        restorable(spec, tmp_path)
