"""The sweep's Optuna study on real Optuna storage (SQLite), driven the way a sweep session drives it.

No Ray cluster: the session's searcher (``sweeper.run.remaining.make_session_searcher``: the
ledger's plan, Ray's OptunaSearch on the study in a seed repeater, a pack searcher when packed)
is called in the order Tune calls it, and the recorder's part (started.jsonl, Parquet rows) is
written as the recorder writes it. A "dead driver" is a session that stops with trials asked and
unfinished; a resume is a fresh session on the same study and ledger.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import optuna
import pytest
from sweep_files import new_sweep, record, start

from sweeper import results
from sweeper import spec as specmod
from sweeper.errors import SweepError
from sweeper.run import ledger
from sweeper.run import study as studymod
from sweeper.run.remaining import make_session_searcher
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
        {
            "name": name,
            "space": space,
            "seeds": [0, 1],
            "pack": pack,
            "search": {"sampler": "grid" if grid else "tpe", "trials": 4, "seed": 3},
            **extra,
        }  # fmt: skip
    )


def _value(config: dict[str, Any]) -> float:
    """A deterministic objective of the configuration and the replicate (seeds differ by 0.01)."""
    return config["scale"] * (1.0 if config["normalizer"] == "sn" else 2.0) + 0.01 * config[INDEX_KEY]


def _open(spec: specmod.SweepSpec, tmp: Path, *, resume: bool = False, overwrite: bool = False):
    """The study as a session opens it; a fresh one is recorded in sweep.json, as begin_session does."""
    storage = default_storage(tmp / "results", f"sqlite:///{tmp / 'mlflow.db'}")
    plan = studymod.plan_study(spec, storage, resume=resume)
    meta_path = tmp / "results" / spec.name / "sweep.json"
    if not resume and plan.target is not None and meta_path.exists():
        meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), **plan.target.record()}))
    return plan.open(now, overwrite=overwrite)


def _searcher(spec: specmod.SweepSpec, study: Any, path: Path) -> Any:
    """The session's searcher, as sweep.py builds it: the ledger's plan, the study."""
    return make_session_searcher(spec, ledger.read(spec, path).plan(), study)


def _load(tmp: Path, name: str = "st") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp / 'optuna.db'}")


def _params(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("__")}


class Driver:
    """What the recorder and Tune do with the session's searcher: start.jsonl lines, Parquet rows,
    and the searcher told each finished trial (a packed one under m{i}/)."""

    def __init__(self, spec: specmod.SweepSpec, path: Path, searcher: Any):
        self.spec, self.path, self.searcher = spec, path, searcher
        self.n = 0

    def suggest(self, tid: str) -> list[tuple[str, dict[str, Any]]]:
        config = self.searcher.suggest(tid)
        if not isinstance(config, dict):
            return []
        members = [(f"{tid}-m{i}", m) for i, m in enumerate(config["__pack__"])] if "__pack__" in config else [
            (tid, config)]  # fmt: skip
        for mid, m in members:
            start(self.path, m.get("__trial_id__", mid), _params(m), m["__trial_index__"])
        return [(tid, config)]

    def finish(self, tid: str, config: dict[str, Any]) -> None:
        members = list(enumerate(config["__pack__"])) if "__pack__" in config else [(None, config)]
        report: dict[str, Any] = {}
        for i, m in members:
            mid = m.get("__trial_id__", tid if i is None else f"{tid}-m{i}")
            record(self.path, self.spec, mid, _params(m), m["__trial_index__"], value=_value(m))
            report[OBJECTIVE if i is None else f"m{i}/{OBJECTIVE}"] = _value(m)
        self.searcher.on_trial_complete(tid, {OBJECTIVE: max(report.values()), **report})


def _check_one_complete_per_configuration(study: optuna.Study, spec: specmod.SweepSpec, path: Path) -> None:
    """Every configuration the Parquet rows hold has exactly one COMPLETE trial at its mean over seeds."""
    rows = results.latest_attempts(results.load(path))
    by_key: dict[tuple, dict[int, tuple[float, str]]] = {}
    for r in rows.itertuples():
        by_key.setdefault((r.normalizer, float(r.scale)), {})[int(r.seed)] = (r.final_mode_coverage, r.trial_id)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert sorted((t.params["normalizer"], t.params["scale"]) for t in complete) == sorted(by_key)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    for t in complete:
        seeds = by_key[(t.params["normalizer"], t.params["scale"])]
        assert t.value == pytest.approx(sum(v for v, _ in seeds.values()) / len(seeds), abs=1e-12)
        assert t.user_attrs["seeds"] == sorted(seeds)
        assert t.user_attrs["trial_ids"] == [seeds[s][1] for s in sorted(seeds)]
        for seed, (v, _) in seeds.items():
            assert t.user_attrs[f"objective_seed_{seed}"] == pytest.approx(v, abs=1e-12)


@pytest.mark.parametrize(("grid", "pack"), [(False, 1), (True, 1), (False, 2), (True, 3)])
def test_driver_death_then_resume_leaves_one_complete_trial_per_configuration(tmp_path, grid, pack):
    """A session that dies with trials asked and unfinished, then a resume session on the same study."""
    os.chdir(tmp_path)
    spec, path = new_sweep(tmp_path / "results", _spec(grid=grid, pack=pack).model_dump(mode="json"))
    study = _open(spec, tmp_path)
    first = Driver(spec, path, _searcher(spec, study, path))
    asked = [x for i in range(3) for x in first.suggest(f"t{i}")]
    first.finish(*asked[0])  # one trial (or pack) finished; the rest die with the driver
    if not grid:
        assert _load(tmp_path).get_trials(states=(optuna.trial.TrialState.RUNNING,))  # the dead driver's

    again = _open(spec, tmp_path, resume=True)
    assert again.fail_running() == len(_load(tmp_path).get_trials(states=(optuna.trial.TrialState.FAIL,)))
    second = Driver(spec, path, _searcher(spec, again, path))
    for i in range(100):
        got = second.suggest(f"r{i}")
        if not got:
            break
        second.finish(*got[0])
    assert ledger.read(spec, path).complete  # every trial of the spec recorded once
    again.fail_running()
    again.record_finished(spec, results.load(path))  # what the session's end does (sweep._close_study)
    _check_one_complete_per_configuration(_load(tmp_path), spec, path)
    assert again.record_finished(spec, results.load(path)) == 0  # idempotent


def test_a_configuration_whose_seeds_all_failed_is_fail_and_a_retry_adds_its_one_complete_trial(tmp_path):
    os.chdir(tmp_path)
    spec, path = new_sweep(tmp_path / "results", _spec().model_dump(mode="json"))
    study = _open(spec, tmp_path)
    searcher = _searcher(spec, study, path)
    a, b = searcher.suggest("a"), searcher.suggest("b")
    for tid, cfg in (("a", a), ("b", b)):
        record(path, spec, tid, _params(cfg), cfg["__trial_index__"], status="failed", value=float("nan"))
        searcher.on_trial_complete(tid, None, error=True)
    assert [t.state for t in _load(tmp_path).trials] == [optuna.trial.TrialState.FAIL]
    assert study.record_finished(spec, results.load(path)) == 0  # every seed failed: nothing to tell
    record(path, spec, "a", _params(a), 0, value=0.25, attempt=2)  # resume --retry-failed: seed 0 succeeds
    assert study.record_finished(spec, results.load(path)) == 1
    complete = _load(tmp_path).get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 1 and complete[0].params == _params(a)
    assert complete[0].value == pytest.approx(0.25)  # seed 1 is still lost: the mean of the one left
    assert complete[0].user_attrs["objective_seed_1"] is None


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
    """An existing study with trials is refused (one line); --overwrite deletes it."""
    os.chdir(tmp_path)
    spec, path = new_sweep(tmp_path / "results", _spec().model_dump(mode="json"))
    _searcher(spec, _open(spec, tmp_path), path).suggest("a")
    with pytest.raises(SweepError, match=r"already has 1 trials from an earlier sweep; `--overwrite` deletes it"):
        _open(spec, tmp_path).storage()
    _open(spec, tmp_path, overwrite=True).storage()
    assert _load(tmp_path).trials == []


def test_a_resume_whose_study_never_got_made_makes_it_from_the_recorded_trials(tmp_path):
    """The driver died before its study existed (killed during Ray start): resume makes it, and the
    rows it already holds become its trials before anything is sampled."""
    os.chdir(tmp_path)
    spec, path = new_sweep(tmp_path / "results", _spec().model_dump(mode="json"))
    storage = default_storage(tmp_path / "results", f"sqlite:///{tmp_path / 'mlflow.db'}")
    target = studymod.resolve(spec, storage)
    meta = json.loads((path / "sweep.json").read_text())
    (path / "sweep.json").write_text(json.dumps({**meta, **target.record()}))
    optuna.create_study(study_name="other", storage=target.url)  # the storage exists, the sweep's study not
    for i, seed_value in enumerate((0.2, 0.4)):
        record(path, spec, f"a{i}", {"normalizer": "sn", "scale": 0.9}, i, value=seed_value)
    said: list[str] = []
    study = studymod.plan_study(spec, storage, resume=True).open(now, overwrite=False, progress=said.append)
    assert study.storage() is not None and "making it from the recorded trials" in said[0]
    assert study.record_finished(spec, results.load(path)) == 1
    (trial,) = _load(tmp_path).trials
    assert trial.params == {"normalizer": "sn", "scale": 0.9} and trial.value == pytest.approx(0.3)


def test_a_finished_sweep_leaves_no_running_trial(tmp_path):
    """A time budget or an abort cuts groups short: fail_running fails what Tune never told."""
    os.chdir(tmp_path)
    spec, path = new_sweep(tmp_path / "results", _spec().model_dump(mode="json"))
    study = _open(spec, tmp_path)
    driver = Driver(spec, path, _searcher(spec, study, path))
    asked = [x for tid in ("a", "b", "c") for x in driver.suggest(tid)]
    driver.finish(*asked[0])
    driver.finish(*asked[1])  # the first configuration's two seeds
    assert study.fail_running() == 1
    assert sorted(t.state.name for t in _load(tmp_path).trials) == ["COMPLETE", "FAIL"]


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
    assert study.storage() is None and study.target is None and study.hint() is None and study.fail_running() == 0
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
    from sweeper.run.sweep import existing_sweep

    spec = _spec(name="old")
    recorded = spec.model_dump(mode="json")
    del recorded["search"]["storage"]
    sweep = tmp_path / "old"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"name": "old", "spec": recorded}))
    assert existing_sweep(spec, tmp_path) is True  # the same sweep: it is resumed
    recorded["search"]["trials"] = 9
    (sweep / "sweep.json").write_text(json.dumps({"name": "old", "spec": recorded}))
    with pytest.raises(SweepError, match="exists with a different spec"):
        existing_sweep(spec, tmp_path)
