"""The session's searcher: the ledger's slots, then real Optuna suggestions, then FINISHED (no Ray)."""

from __future__ import annotations

from pathlib import Path

from ray.tune.search import Searcher
from sweep_files import GRID, SAMPLED, new_sweep, record, start

from sweeper.run import ledger
from sweeper.run.remaining import make_session_searcher, tune_trials
from sweeper.run.reporting import INDEX_KEY, TRIAL_ID_KEY
from sweeper.spec import SweepSpec

SN = {"normalizer": "sn", "scale": 0.7}


def _suggest_all(searcher, n: int = 50) -> list:
    out = []
    for i in range(n):
        cfg = searcher.suggest(f"t{i}")
        out.append(cfg)
        if cfg == Searcher.FINISHED:
            break
    return out


def test_slots_come_first_then_new_configurations_then_finished(tmp_path: Path):
    spec, path = new_sweep(tmp_path, SAMPLED)
    start(path, "a0", SN, 0)
    record(path, spec, "a0", SN, 0, value=0.4)
    start(path, "a1", SN, 1)  # died mid-training
    plan = ledger.read(spec, path).plan()
    searcher = make_session_searcher(spec, plan)
    got = _suggest_all(searcher)
    assert got[0] == {**SN, INDEX_KEY: 1, TRIAL_ID_KEY: "a1"}  # the unfinished trial, same id
    new = got[1:-1]
    assert got[-1] == Searcher.FINISHED and len(new) == 4  # 2 configurations x 2 seeds, no more
    assert [c[INDEX_KEY] for c in new] == [0, 1, 0, 1]
    assert all(TRIAL_ID_KEY not in c and set(c) == {"normalizer", "scale", INDEX_KEY} for c in new)
    assert new[0]["scale"] == new[1]["scale"] != new[2]["scale"]  # each configuration once per seed


def test_a_fresh_study_learns_the_finished_configurations_first(tmp_path: Path):
    spec, path = new_sweep(tmp_path, SAMPLED)
    for i, value in ((0, 0.2), (1, 0.6)):
        start(path, f"a{i}", SN, i)
        record(path, spec, f"a{i}", SN, i, value=value)
    searcher = make_session_searcher(spec, ledger.read(spec, path).plan())
    study = searcher.inner.searcher._ot_study  # Repeater(OptunaSearch)
    told = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert [(t.params, t.value) for t in told] == [(SN, 0.4)]


def test_a_grid_needs_no_sampler_and_a_last_pack_is_smaller(tmp_path: Path):
    spec, path = new_sweep(tmp_path, {**GRID, "pack": 3})
    plan = ledger.read(spec, path).plan()
    assert plan.total == 8 and tune_trials(spec, plan) == 8  # an upper bound: packs are cut per normalizer
    searcher = make_session_searcher(spec, plan)
    packs = [searcher.suggest(f"p{i}") for i in range(5)]
    members = [p["__pack__"] for p in packs[:4]]
    assert [len(m) for m in members] == [3, 3, 1, 1] and packs[4] == Searcher.FINISHED
    assert all(len({c["normalizer"] for c in m}) == 1 for m in members)  # one normalizer per pack
    assert sum(len(m) for m in members) == 8  # every training exactly once
    assert searcher.inner.inner is None  # grid trials are all slots


def test_a_fresh_sampled_sweep_asks_optuna_as_before(tmp_path: Path):
    """With nothing recorded the session's searcher is the plain one: same suggestions, same order."""
    from sweeper.run.search import make_searcher

    spec = SweepSpec.model_validate(SAMPLED)
    _, path = new_sweep(tmp_path, SAMPLED)
    ours = _suggest_all(make_session_searcher(spec, ledger.read(spec, path).plan()))
    plain = make_searcher(spec)
    assert ours[:-1] == [plain.suggest(f"t{i}") for i in range(6)] and ours[-1] == Searcher.FINISHED
