"""The planted-best-scale check (issue 17): 2 normalizers x 6 scales x 5 seeds with decoys.

Rows are built by the recorder's own row function and carry every column it writes; the analysis
must find each planted scale with mean and s.e. equal to numpy's, to the last digit. The decoys
(failed with a good value, diverged with null finals, retried attempts, one lucky seed) are
described in ``tests/planted.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import planted
import pytest

from sweeper import analysis, results


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return planted.build()


def test_rows_carry_every_column_the_recorder_writes(rows: pd.DataFrame) -> None:
    assert set(results.BASE_COLUMNS) <= set(rows.columns)
    assert rows["steps_done"].nunique() > 3 and rows["started_at"].is_unique and rows["mlflow_run_id"].is_unique
    assert rows["config_json"].nunique() == rows["trial_id"].nunique()  # seeds and scales differ per trial
    assert set(rows["status"]) == {"completed", "diverged", "failed"} and rows["attempt"].max() == 2


@pytest.mark.parametrize(("norm", "selection"), sorted(planted.PLANTED))
def test_every_planted_scale_is_found_with_numpy_mean_and_se(rows: pd.DataFrame, norm: str, selection: str) -> None:
    best = analysis.best_scales(rows, ["fid"], [selection], {"fid": "min"}, n_boot=200)
    mine = best[best["normalizer"] == norm]
    assert len(mine) == 1, mine[["setting", "best_scale", "n_seeds"]]  # one setting: nothing splits it
    r = mine.iloc[0]
    c = planted.PLANTED[(norm, selection)]
    v = planted.counted_values(rows, norm, c, selection)
    assert r["best_scale"] == c
    assert r["mean"] == np.mean(v)  # exactly numpy's
    assert r["sem"] == np.std(v, ddof=1) / np.sqrt(len(v))
    assert r["n_seeds"] == len(v) == (4 if (norm, selection) == ("sn", "final") else 5)
    if (norm, selection) == ("sn", "final"):  # the diverged seed at 1.4 is lost there, and shown as lost
        assert (r["n_run"], r["n_lost"], r["n_diverged"]) == (5, 1, 1)


def test_the_decoys_are_seen_through(rows: pd.DataFrame) -> None:
    st = {
        sel: analysis.scale_table(rows, "fid", sel, {"fid": "min"}).set_index(["normalizer", "scale"])
        for sel in ("final", "best")
    }
    best = analysis.best_scales(rows, ["fid"], ["final", "best"], {"fid": "min"}, n_boot=0).set_index(
        ["normalizer", "selection"]
    )
    for sel in ("final", "best"):  # one lucky survivor among 4 diverged seeds: excluded, not "best"
        lucky = st[sel].loc[planted.LUCKY]
        assert (lucky["n"], lucky["n_run"], lucky["n_diverged"], lucky["eligible"]) == (1, 5, 4, False)
        assert lucky["mean"] == 15.0 < best.loc[("bsn", sel), "mean"]
        assert 4.0 in best.loc[("bsn", sel), "excluded_scales"]
    assert st["final"].loc[("sn", 10.0), "n"] == 0  # the failed trial's FID 5 never counts
    assert list(best.loc[("sn", "final"), "excluded_scales"]) == [5.0, 10.0]  # 3 of 5 and 5 of 5 lost
    assert st["best"].loc[("sn", 10.0), "n_failed"] == 1 and st["best"].loc[("sn", 10.0), "n"] == 4
    retried = st["final"].loc[("bsn", 1.0)]  # attempt 2 replaces the failed attempt 1 (FID 12)
    assert retried["n"] == 5 and retried["n_failed"] == 0 and min(retried["values"]) > 20


def test_the_check_reports_4_of_4(rows: pd.DataFrame) -> None:
    assert planted.score(rows)["right"] == 4


def test_the_same_answer_through_parquet(rows: pd.DataFrame, tmp_path: Path) -> None:
    """Rows written and read back by sweeper.results give the same cells (types survive the trip)."""
    for row in planted.build_rows():
        results.write_trial(tmp_path / "planted", row, ["fid"])
    back = results.load(tmp_path / "planted")
    assert len(back) == len(rows) and back["error"].isna().sum() == (rows["error"].isna()).sum()
    a = analysis.best_scales(rows, ["fid"], ["final", "best"], {"fid": "min"}, n_boot=0)
    b = analysis.best_scales(back, ["fid"], ["final", "best"], {"fid": "min"}, n_boot=0)
    cols = ["normalizer", "selection", "best_scale", "mean", "sem", "n_seeds", "n_lost"]
    key = ["normalizer", "selection"]
    pd.testing.assert_frame_equal(a[cols].sort_values(key).reset_index(drop=True),
                                  b[cols].sort_values(key).reset_index(drop=True))  # fmt: skip


def test_headline_of_the_planted_sweep(rows: pd.DataFrame) -> None:
    for sel in ("final", "best"):
        h = analysis.headline(rows, "fid", sel, {"fid": "min"}, n_boot=200)
        (block,) = h["blocks"]
        got = {r["normalizer"]: r for r in block["rows"]}
        assert set(got) == {"sn", "bsn"} and all(r["kind"] == "best" for r in got.values())
        for norm in ("sn", "bsn"):
            v = planted.counted_values(rows, norm, planted.PLANTED[(norm, sel)], sel)
            assert got[norm]["scale"] == planted.PLANTED[(norm, sel)] and got[norm]["mean"] == np.mean(v)
        c = block["comparison"]
        assert c["n_seeds"] == 5 and c["n_pairs"] + c["n_missing"] == 5
        lines = analysis.headline_lines(h)
        assert f"best scale for sn: c = {planted.PLANTED[('sn', sel)]:g} (fid " in "\n".join(lines)
        assert any(line.strip().startswith("bsn - sn at their best scales") for line in lines)
