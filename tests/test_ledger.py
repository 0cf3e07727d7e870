"""The ledger: the spec's trials, what is recorded, and the plan a resume runs (no Ray)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sweep_files import GRID, SAMPLED, finished_sweep, new_sweep, record, start

from sweeper.run import ledger
from sweeper.run.meta import FINISHED, INCOMPLETE, end_session
from sweeper.run.reporting import INDEX_KEY, TRIAL_ID_KEY

SN = {"normalizer": "sn", "scale": 0.7}
BSN = {"normalizer": "bsn", "scale": 1.3}


def test_an_empty_sampled_sweep_plans_its_whole_budget(tmp_path: Path):
    spec, path = new_sweep(tmp_path, SAMPLED)
    book = ledger.read(spec, path)
    assert (book.recorded, book.missing, book.complete) == (0, 6, False)
    plan = book.plan()
    assert (plan.slots, plan.new_configurations, plan.total, plan.seed_offset) == ([], 3, 6, 0)
    assert book.missing_lines() == ["3 configurations not sampled yet (6 trials)"]


def test_a_grid_is_known_in_advance_and_every_missing_point_is_a_slot(tmp_path: Path):
    spec, path = new_sweep(tmp_path, GRID)
    start(path, "a", {"normalizer": "sn", "scale": 0.5}, 0)
    record(path, spec, "a", {"normalizer": "sn", "scale": 0.5}, 0)
    start(path, "b", {"normalizer": "sn", "scale": 0.5}, 1)  # started, never finished
    book = ledger.read(spec, path)
    assert (book.spec_trials, book.recorded, book.missing) == (8, 1, 7)
    plan = book.plan()
    assert plan.new_configurations == 0 and plan.total == 7 and len(plan.slots) == 7
    first = plan.slots[0]
    assert first.config == {"normalizer": "sn", "scale": 0.5, INDEX_KEY: 1, TRIAL_ID_KEY: "b"}  # same id again
    assert first.trial_id == "b"
    assert all(s.trial_id is None and TRIAL_ID_KEY not in s.config for s in plan.slots[1:])
    assert sorted((s.config["normalizer"], s.config["scale"], s.config[INDEX_KEY]) for s in plan.slots[1:]) == [
        ("bsn", 0.5, 0), ("bsn", 0.5, 1), ("bsn", 1.0, 0), ("bsn", 1.0, 1), ("sn", 1.0, 0), ("sn", 1.0, 1),
    ]  # fmt: skip
    lines = book.missing_lines()
    assert lines[0] == "normalizer=sn scale=0.5 seed=1 (trial b, started, not finished)" and len(lines) == 7


def test_a_sampled_sweep_finishes_its_configurations_then_samples_the_rest(tmp_path: Path):
    spec, path = new_sweep(tmp_path, SAMPLED)
    for tid, params, i, value in (("a0", SN, 0, 0.2), ("a1", SN, 1, 0.4), ("b0", BSN, 0, 0.9)):
        start(path, tid, params, i)
        record(path, spec, tid, params, i, value=value)
    book = ledger.read(spec, path)
    assert (book.recorded, book.missing) == (3, 3)
    plan = book.plan()
    # b's second seed (never started), then one configuration not sampled yet
    assert [s.config for s in plan.slots] == [{**BSN, INDEX_KEY: 1}]
    assert plan.new_configurations == 1 and plan.total == 3 and plan.seed_offset == 2
    assert plan.evaluated == [(SN, pytest.approx(0.3))]  # the finished configuration, told to Optuna


def test_diverged_and_failed_trials_are_recorded_and_tell_the_searcher_a_penalty(tmp_path: Path):
    spec, path = new_sweep(tmp_path, SAMPLED)
    start(path, "a0", SN, 0)
    record(path, spec, "a0", SN, 0, status="diverged")
    start(path, "a1", SN, 1)
    record(path, spec, "a1", SN, 1, status="failed")
    book = ledger.read(spec, path)
    assert book.recorded == 2 and book.counts() == {"diverged": 1, "failed": 1}
    assert book.plan().evaluated == [(SN, -1e6)]  # mode_coverage is maximized


def test_the_latest_attempt_counts_and_a_line_cut_short_by_a_kill_is_ignored(tmp_path: Path):
    spec, path = new_sweep(tmp_path, SAMPLED)
    start(path, "a0", SN, 0, attempt=1)
    start(path, "a0", SN, 0, attempt=2, trial_path=tmp_path / "tune" / "run_a0")
    with (path / ledger.STARTED_FILE).open("a") as f:
        f.write('{"trial_id": "x", "params": {"normal')  # the driver died mid-line
    book = ledger.read(spec, path)
    assert len(book.configurations) == 1
    entry = book.configurations[0].entries[0]
    assert (entry.trial_id, entry.attempt, entry.trial_path) == ("a0", 2, str(tmp_path / "tune" / "run_a0"))
    assert book.attempts() == {"a0": 2}


def test_an_unfinished_trial_continues_from_its_newest_complete_checkpoint(tmp_path: Path):
    spec, path = new_sweep(tmp_path, SAMPLED)
    trial_dir = tmp_path / "tune" / "run_a0"
    for n, complete in ((0, True), (1, True), (2, False)):  # checkpoint_2 was cut short by the kill
        d = trial_dir / f"checkpoint_00000{n}"
        d.mkdir(parents=True)
        if complete:
            (d / "checkpoint.pt").write_bytes(b"x")
    start(path, "a0", SN, 0, trial_path=trial_dir)
    slot = ledger.read(spec, path).plan().slots[0]
    assert slot.trial_id == "a0" and slot.checkpoint == str(trial_dir / "checkpoint_000001")


def test_equal_values_sampled_twice_are_two_configurations(tmp_path: Path):
    """A categorical space can hand out the same values twice: each stays its own configuration."""
    spec, path = new_sweep(tmp_path, SAMPLED)
    for tid, i in (("a0", 0), ("a1", 1), ("b0", 0), ("b1", 1)):
        start(path, tid, SN, i)
        record(path, spec, tid, SN, i)
    book = ledger.read(spec, path)
    assert len(book.configurations) == 2 and book.recorded == 4 and book.missing == 2


def test_rows_without_start_lines_are_placed_by_their_config(tmp_path: Path):
    """A sweep recorded before started.jsonl existed still resumes without running a trial twice."""
    spec, path = new_sweep(tmp_path, GRID)
    record(path, spec, "old", {"normalizer": "bsn", "scale": 1.0}, 1)
    book = ledger.read(spec, path)
    assert book.recorded == 1
    assert {"normalizer": "bsn", "scale": 1.0, INDEX_KEY: 1} not in [s.config for s in book.plan().slots]


def test_finished_is_written_only_when_the_ledger_is_complete(tmp_path: Path):
    spec, path = new_sweep(tmp_path, GRID)
    start(path, "a", {"normalizer": "sn", "scale": 0.5}, 0)
    record(path, spec, "a", {"normalizer": "sn", "scale": 0.5}, 0)
    meta = end_session(path, ledger.read(spec, path))
    assert meta["state"] == INCOMPLETE and meta["finished_at"] is None
    assert meta["ledger"] == {"expected": 8, "recorded": 1, "missing": 7}
    _, done = finished_sweep(tmp_path / "other")
    meta = json.loads((done / "sweep.json").read_text())
    assert meta["state"] == FINISHED and meta["finished_at"] and meta["ledger"]["missing"] == 0


def test_a_time_budgeted_sweep_ends_with_what_it_ran_once_its_budget_is_spent(tmp_path: Path):
    from sweeper.run.meta import add_budget_used

    spec, path = new_sweep(tmp_path, {**SAMPLED, "search": {**SAMPLED["search"], "time_budget_s": 60}})
    start(path, "a0", SN, 0)
    record(path, spec, "a0", SN, 0)
    add_budget_used(path, 45.0)  # a session's trials ran 45 s of the 60
    book = ledger.read(spec, path)
    assert book.budget_left_s == pytest.approx(15.0) and not book.complete  # a resume gets the last 15 s
    add_budget_used(path, 20.0)
    book = ledger.read(spec, path)
    assert book.budget_spent and book.complete and book.missing == 5
    assert end_session(path, book)["state"] == FINISHED


def test_retry_failed_turns_failed_trials_into_slots_under_their_ids(tmp_path: Path):
    spec, path = new_sweep(tmp_path, GRID)
    pt = {"normalizer": "sn", "scale": 0.5}
    start(path, "a", pt, 0)
    record(path, spec, "a", pt, 0, status="failed")
    assert ledger.read(spec, path).recorded == 1  # failed is final unless asked otherwise
    book = ledger.read(spec, path, retry_failed=True)
    assert book.recorded == 0
    slot = book.plan().slots[0]
    assert slot.trial_id == "a" and slot.config == {**pt, INDEX_KEY: 0, TRIAL_ID_KEY: "a"}
    assert book.attempts() == {"a": 1}  # the retry is attempt 2
