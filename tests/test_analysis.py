"""Planted-answer tests for sweeper.analysis: the statistics must recover what the data was built with."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers import trial_row

from sweeper import analysis as an

GRID = [0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.6, 2.0, 3.0]
# Planted mean of a higher-is-better metric: 1.4 best, 1.2 and 1.6 within noise, 1.0 clearly worse.
UNIMODAL = {
    0.7: 0.50,
    0.8: 0.70,
    0.9: 0.80,
    1.0: 0.85,
    1.2: 0.899,
    1.4: 0.90,
    1.6: 0.898,
    2.0: 0.80,
    3.0: 0.60,
}
# Two separate plateaus (paper Fig. 8 style): 0.7–0.8 and 2.0–2.4.
BIMODAL = {0.7: 0.90, 0.8: 0.90, 1.0: 0.50, 1.2: 0.30, 1.6: 0.50, 2.0: 0.90, 2.4: 0.90, 3.0: 0.60}
# One clear peak, for the repeat rate.
PEAKED = {0.7: 0.6, 1.0: 0.7, 1.4: 0.9, 2.0: 0.75, 3.0: 0.5}


def make_trials(
    means: dict[float, float],
    *,
    normalizers: tuple[str, ...] = ("sn",),
    seeds: int = 5,
    noise: float = 0.005,
    offset: dict[str, float] | None = None,
    dataset: str = "cifar10",
    rng_seed: int = 0,
    **config,
) -> pd.DataFrame:
    """Trials: ``mode_coverage`` = planted mean + offset[normalizer] + N(0, noise); ``fid`` = 100 − 50·it."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for norm in normalizers:
        for c, mu in means.items():
            for s in range(seeds):
                v = mu + (offset or {}).get(norm, 0.0) + rng.normal(0, noise)
                rows.append(_row(f"{dataset}-{norm}-{c}-{s}", norm, c, s, v, dataset=dataset, **config))
    return pd.DataFrame(rows)


def _row(tid: str, norm: str, c: float, seed: int, v: float, *, dataset: str = "cifar10", **over) -> dict:
    metrics = {
        "final_mode_coverage": v, "best_mode_coverage": v + 0.01, "best_mode_coverage_step": 900,
        "final_fid": 100 - 50 * v, "best_fid": 100 - 50 * v - 1, "best_fid_step": 800,
    }  # fmt: skip
    return trial_row(tid, norm, c, seed, dataset=dataset, **{**metrics, **over})


def _one(best: pd.DataFrame, **eq) -> pd.Series:
    m = np.ones(len(best), dtype=bool)
    for k, v in eq.items():
        m &= (best[k] == v).to_numpy()
    assert m.sum() == 1, (eq, m.sum())
    return best[m].iloc[0]


# ---------------------------------------------------------------------------------------------- names
@pytest.mark.parametrize(
    ("metric", "direction"),
    [
        ("fid", "min"),
        ("fid_small", "min"),
        ("kid", "min"),
        ("mode_kl", "min"),
        ("loss_d", "min"),
        ("is", "max"),
        ("mode_coverage", "max"),
        ("hq_fraction", "max"),
        ("modes_captured", "max"),
        ("eval/fid", "min"),
    ],
)
def test_default_direction(metric: str, direction: str) -> None:
    assert an.default_direction(metric) == direction


def test_resolve_directions_override_and_rule() -> None:
    assert an.resolve_directions(["fid", "x"], {"x": "min"}) == {"fid": "min", "x": "min"}
    with pytest.raises(ValueError, match="'max' or 'min', got 'up'"):
        an.resolve_directions(["fid"], {"fid": "up"})


def test_metric_names_and_setting_columns() -> None:
    df = make_trials({1.0: 0.5}).assign(checkpoint_path="/x", steps_done=np.arange(5), new_result_column=1.5)
    assert an.metric_names(df) == ["mode_coverage", "fid"]
    cols = an.setting_columns(df)
    assert cols == list(an.CORE_SETTING_COLUMNS)  # nothing varies but seeds: the core key only
    for c in ("seed", "scale", "trial_id", "checkpoint_path", "final_fid", "best_fid_step", "wall_seconds",
              "steps_done", "new_result_column", "eval_samples", "feature_extractor"):  # fmt: skip
        assert c not in cols
    assert "normalizer" not in an.setting_columns(df, include_normalizer=False)
    wgan = make_trials({1.0: 0.5}, loss="wgan_gp").assign(trial_id=lambda d: "w" + d["trial_id"])
    both = pd.concat([df, wgan])
    assert "loss" in an.setting_columns(both)  # a knob that only config_json states still separates settings
    assert len(an.best_scales(both, ["fid"], ["final"], n_boot=0)) == 2


def test_setting_label() -> None:
    vals = {"lr_g": 1e-4, "lr_d": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_dis": 1, "batch_size": 64}
    assert an.setting_label(vals) == "lr 1e-4/2e-4, β (0.5, 0.999), n_dis 1"
    assert an.setting_label(vals, extra=["batch_size"]).endswith("bs 64")


def test_format_mean_sem() -> None:
    assert an.format_mean_sem(31.4321, 0.9) == "31.43 ± 0.90"
    assert an.format_mean_sem(7.1234, float("nan")) == "7.123"
    assert an.format_mean_sem(float("nan"), 1.0) == "n/a"
    assert an.format_modes([[0.7, 0.8], [2.0, 2.0]]) == "0.7–0.8 ∪ 2"
    assert an.format_modes([[1, 1], [2, 2], [3, 3]], max_modes=2) == "1 ∪ 2 ∪ … (3 runs)"


# ------------------------------------------------------------------------------------- scale table
def test_latest_attempt_wins() -> None:
    df = make_trials({1.0: 0.5}, seeds=2, noise=0.0)
    retry = df.iloc[[0]].assign(attempt=2, final_mode_coverage=0.9)
    st = an.scale_table(pd.concat([df, retry]), "mode_coverage")
    assert st["n"].iloc[0] == 2
    assert st["mean"].iloc[0] == pytest.approx((0.9 + 0.5) / 2)


def test_scale_table_statistics_and_counting_rule() -> None:
    rows = [
        _row("a", "sn", 1.0, 0, 1.0),
        _row("b", "sn", 1.0, 1, 2.0),
        _row("c", "sn", 1.0, 2, 3.0, status="diverged"),  # counts
        _row("d", "sn", 1.0, 3, 100.0, status="failed"),  # never counts
        _row("e", "sn", 1.0, 4, float("nan")),  # not finite
        _row("f", "sn", 2.0, 0, 5.0),  # single seed → no SEM
        _row("g", "sn", 3.0, 0, 5.0, status="failed"),  # run but nothing counted → n = 0
    ]
    st = an.scale_table(pd.DataFrame(rows), "mode_coverage", "final").set_index("scale")
    assert st.loc[1.0, "n"] == 3 and st.loc[1.0, "n_trials"] == 5
    assert st.loc[1.0, "mean"] == pytest.approx(2.0)
    assert st.loc[1.0, "sem"] == pytest.approx(1.0 / math.sqrt(3))
    assert sorted(st.loc[1.0, "values"]) == [1.0, 2.0, 3.0]
    assert st.loc[2.0, "n"] == 1 and math.isnan(st.loc[2.0, "sem"])
    assert st.loc[3.0, "n"] == 0 and math.isnan(st.loc[3.0, "mean"])
    best = an.scale_table(pd.DataFrame(rows), "mode_coverage", "best").set_index("scale")
    assert best.loc[1.0, "mean"] == pytest.approx(2.01)


# ------------------------------------------------------------------------------------- best scales
@pytest.mark.parametrize("metric", ["mode_coverage", "fid"])
def test_best_scale_recovered(metric: str) -> None:
    r = _one(an.best_scales(make_trials(PEAKED), [metric], ["final"], n_boot=200), selection="final")
    assert r["best_scale"] == 1.4
    assert r["n_seeds"] == 5 and np.isfinite(r["sem"])
    assert r["direction"] == ("max" if metric == "mode_coverage" else "min")
    sign = 1 if metric == "mode_coverage" else -50
    assert r["mean"] == pytest.approx((100 if metric == "fid" else 0) + sign * 0.9, abs=0.01 * abs(sign))


@pytest.mark.parametrize("metric", ["mode_coverage", "fid"])
def test_good_set_keeps_near_best_and_drops_worse(metric: str) -> None:
    r = _one(an.best_scales(make_trials(UNIMODAL), [metric], ["final"], n_boot=200), selection="final")
    assert r["best_scale"] in (1.2, 1.4, 1.6)  # within noise of each other by construction
    assert {1.2, 1.4, 1.6} <= set(r["good_scales"])
    assert 1.0 not in r["good_scales"] and 3.0 not in r["good_scales"]
    assert r["n_modes"] == 1 and "Welch" in r["good_rule"]


def test_bimodal_two_modes() -> None:
    r = _one(
        an.best_scales(make_trials(BIMODAL), ["mode_coverage"], ["final"], n_boot=100), selection="final"
    )
    assert r["n_modes"] == 2
    assert [list(m) for m in r["modes"]] == [[0.7, 0.8], [2.0, 2.4]]


def test_failed_scale_breaks_a_mode() -> None:
    df = make_trials({1.0: 0.9, 1.2: 0.9, 1.4: 0.9}, noise=0.0)
    df.loc[df["scale"] == 1.2, "status"] = "failed"
    r = _one(an.best_scales(df, ["mode_coverage"], ["final"], n_boot=50), selection="final")
    assert r["n_modes"] == 2 and 1.2 not in r["good_scales"]


def test_bootstrap_repeat_rate() -> None:
    best = an.best_scales(make_trials(PEAKED, noise=0.03), ["mode_coverage"], ["final"], n_boot=1000, seed=3)
    r = _one(best, selection="final")
    p = np.asarray(r["pick_rates"])
    assert p.sum() == pytest.approx(1.0)
    assert r["scales"][int(np.argmax(p))] == 1.4 == r["best_scale"]
    assert r["repeat_rate"] == pytest.approx(p.max()) and r["repeat_rate"] > 0.9
    again = _one(
        an.best_scales(make_trials(PEAKED, noise=0.03), ["mode_coverage"], ["final"], seed=3),
        selection="final",
    )
    assert again["repeat_rate"] == r["repeat_rate"]  # seeded: reports are reproducible
    assert "not the probability" in an.REPEAT_RULE  # says what it measures, and what it does not


def test_near_tie_splits_the_repeat_rate() -> None:
    r = _one(
        an.best_scales(make_trials({1.0: 0.9, 2.0: 0.9}, noise=0.05), ["mode_coverage"], ["final"]),
        selection="final",
    )
    assert 0.1 < r["repeat_rate"] < 0.9


def test_single_seed_continuous_scales() -> None:
    rng = np.random.default_rng(1)
    scales = np.exp(rng.uniform(np.log(0.5), np.log(4.0), 60))
    rows = [
        _row(f"t{i}", "bsn", c, i, 1 - (np.log(c) - np.log(1.5)) ** 2 + rng.normal(0, 0.01))
        for i, c in enumerate(scales)
    ]
    r = _one(an.best_scales(pd.DataFrame(rows), ["mode_coverage"], ["final"]), selection="final")
    assert r["n_seeds"] == 1 and math.isnan(r["sem"])
    assert 1.2 < r["best_scale"] < 1.9
    assert "combined SEM" in r["good_rule"]
    assert r["repeat_rate"] == 1.0 and r["n_scales"] == 60
    assert all(0.8 < g < 3.0 for g in r["good_scales"])


def test_settings_are_separate_groups() -> None:
    a = make_trials(PEAKED)
    b = make_trials({1.0: 0.5, 2.0: 0.8}).assign(lr_d=2e-4, trial_id=lambda d: "lr2-" + d["trial_id"])
    best = an.best_scales(pd.concat([a, b]), ["mode_coverage"], ["final"], n_boot=50)
    assert len(best) == 2
    assert set(best["best_scale"]) == {1.4, 2.0}
    assert set(best["setting"]) == {
        "lr 1e-4/1e-4, β (0.5, 0.999), n_dis 1",
        "lr 1e-4/2e-4, β (0.5, 0.999), n_dis 1",
    }


# ------------------------------------------------------------------------------------- paired SN vs BSSN
@pytest.mark.parametrize("metric", ["mode_coverage", "fid"])
def test_paired_difference_sign(metric: str) -> None:
    df = make_trials(PEAKED, normalizers=("sn", "bsn"), offset={"bsn": 0.05}, noise=0.005)
    d = an.paired_difference(df, metric, "final", ("sn", 1.0), ("bsn", 1.0))
    assert len(d) == 1
    r = d.iloc[0]
    assert r["n_pairs"] == 5 and r["mean_diff"] > 0 and r["ci_low"] > 0  # positive = BSSN better
    assert r["sign_test_p"] == pytest.approx(0.0625) and r["min_sign_test_p"] == pytest.approx(0.0625)
    flipped = an.paired_difference(df, metric, "final", ("bsn", 1.0), ("sn", 1.0)).iloc[0]
    assert flipped["mean_diff"] == pytest.approx(-r["mean_diff"])


def test_compare_sn_bssn_tuned_scales() -> None:
    sn = make_trials(PEAKED, normalizers=("sn",))
    bsn = make_trials({1.0: 0.7, 1.4: 0.8, 2.0: 0.95, 3.0: 0.6}, normalizers=("bsn",), rng_seed=1)
    c = an.compare_sn_bssn(pd.concat([sn, bsn]), "mode_coverage", "final")
    assert list(c["comparison"]) == [
        "SN vs BSN (c=1)", "SSN vs BSSN (tuned c, held-out seeds)", "SSN vs BSSN (tuned c, in-sample)",
    ]  # fmt: skip
    for tuned in (c.iloc[1], c.iloc[2]):  # clear peaks: every fold picks them, so both agree here
        assert (tuned["a_scale"], tuned["b_scale"]) == (1.4, 2.0)
        assert tuned["mean_diff"] == pytest.approx(0.05, abs=0.01) and tuned["n_pairs"] == 5
    assert c.iloc[1]["rule"] == an.HELDOUT_RULE and "held-out seeds" in an.HELDOUT_RULE
    assert c.iloc[0]["mean_diff"] == pytest.approx(0.0, abs=0.01)


def _frame(values: dict[tuple[str, float], list[float]], **extra) -> pd.DataFrame:
    """Plain trial rows (no config_json) from per-seed values: {(normalizer, scale): [seed0, seed1, ...]}."""
    rows = [
        {"trial_id": f"{n}-{c}-{s}", "normalizer": n, "scale": c, "seed": s, "status": "completed",
         "final_fid": v, **extra}
        for (n, c), vs in values.items() for s, v in enumerate(vs)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_heldout_difference_by_hand() -> None:
    """Each seed's scales are chosen on the other seeds: the folds below are worked out by hand."""
    vals = {
        ("sn", 1.0): [10.0, 10.0, 10.0], ("sn", 2.0): [4.0, 13.0, 13.0],  # seed 0 makes 2.0 look good
        ("bsn", 1.0): [9.0, 9.0, 9.0], ("bsn", 2.0): [12.0, 12.0, 12.0],
    }  # fmt: skip
    h = an.heldout_difference(_frame(vals), "fid", "final", "sn", "bsn", {"fid": "min"}).iloc[0]
    # in-sample: sn means 10 vs 10 -> 1.0 (tie -> smaller); folds: without seed 0 sn picks 1.0 (10 < 13),
    # without seed 1 or 2 it picks 2.0 (8.5 < 10); bsn always picks 1.0.
    assert list(h["a_scales"]) == [1.0, 2.0, 2.0] and list(h["b_scales"]) == [1.0, 1.0, 1.0]
    raw = np.array([9 - 10, 9 - 13, 9 - 13], dtype=float)  # bsn - sn on each held-out seed
    assert h["raw_diff"] == pytest.approx(raw.mean()) and h["mean_diff"] == pytest.approx(-raw.mean())
    from scipy import stats

    half = stats.t.ppf(0.975, 2) * raw.std(ddof=1) / np.sqrt(3)
    assert (h["raw_ci_low"], h["raw_ci_high"]) == pytest.approx((raw.mean() - half, raw.mean() + half))
    assert (h["a_scale"], h["b_scale"], h["n_pairs"], h["n_missing"]) == (1.0, 1.0, 3, 0)
    nan_key = an.heldout_difference(_frame(vals, lr_d=np.nan), "fid", "final", directions={"fid": "min"})
    assert nan_key["raw_diff"].tolist() == [h["raw_diff"]]  # a NaN in the setting key still pairs


def test_heldout_removes_the_winners_curse_of_more_scales() -> None:
    """Null truth (every scale equal): in-sample tuning favours the normalizer given 12 scales over
    the one given 2; the held-out estimate does not."""
    rng = np.random.default_rng(0)
    ins, held = [], []
    for _ in range(30):
        vals = {("sn", float(c)): list(rng.normal(0, 1, 5)) for c in range(1, 13)}
        vals.update({("bsn", float(c)): list(rng.normal(0, 1, 5)) for c in range(1, 3)})
        df = _frame(vals)
        ins.append(an.paired_difference(df, "fid", "final", ("sn", "best"), ("bsn", "best"), {"fid": "min"})
                   ["mean_diff"].iloc[0])  # fmt: skip
        held.append(an.heldout_difference(df, "fid", "final", directions={"fid": "min"})["mean_diff"].iloc[0])
    assert np.mean(ins) < -0.4  # in-sample: "SN better" out of nothing (winner's curse over 12 scales)
    assert abs(np.mean(held)) < 0.3 and abs(np.mean(held)) < abs(np.mean(ins)) / 2


# ------------------------------------------------------------------------------------- survivorship
def test_a_scale_that_lost_most_seeds_cannot_be_best() -> None:
    vals = {("sn", 1.0): [10.0, 10.2, 9.8, 10.1, 9.9], ("sn", 2.0): [5.0, np.nan, np.nan, np.nan, 6.0]}
    df = _frame(vals)
    df.loc[df["final_fid"].isna(), "status"] = "diverged"
    st = an.scale_table(df, "fid", "final", {"fid": "min"}).set_index("scale")
    assert (st.loc[2.0, "n"], st.loc[2.0, "n_run"], st.loc[2.0, "n_lost"], st.loc[2.0, "n_diverged"]) == (2, 5, 3, 3)
    assert not st.loc[2.0, "eligible"] and st.loc[1.0, "eligible"]
    r = an.best_scales(df, ["fid"], ["final"], {"fid": "min"}, n_boot=100).iloc[0]
    assert r["best_scale"] == 1.0 and list(r["excluded_scales"]) == [2.0] and 2.0 not in r["good_scales"]
    assert r["mean"] == np.mean(vals[("sn", 1.0)]) and r["n_lost"] == 0
    df.loc[df["trial_id"] == "sn-2.0-1", ["status", "final_fid"]] = ["completed", 5.5]  # now 2 of 5 lost
    r = an.best_scales(df, ["fid"], ["final"], {"fid": "min"}, n_boot=100).iloc[0]
    assert r["best_scale"] == 2.0 and (r["n_seeds"], r["n_run"], r["n_lost"], r["n_diverged"]) == (3, 5, 2, 2)
    assert r["mean"] == np.mean([5.0, 5.5, 6.0]) and "survivors alone" in an.SURVIVOR_RULE


def test_seed_warnings() -> None:
    df = make_trials(PEAKED, normalizers=("sn", "bsn"), offset={"bsn": 0.05})
    d = an.paired_difference(df, "fid")
    w = an.seed_warnings(an.best_scales(df, ["fid"], ["final"], n_boot=50), d)
    assert any("0.0625 > 0.05" in x and "at least 6" in x for x in w)
    assert any("winner's curse" in x for x in w)
    d6 = an.paired_difference(make_trials(PEAKED, normalizers=("sn", "bsn"), seeds=6), "fid")
    assert not any("sign-test" in x for x in an.seed_warnings(None, d6))


# ------------------------------------------------------------------------------------- failures
def test_failure_table_rates() -> None:
    df = make_trials({1.0: 0.5, 2.0: 0.5}, seeds=10)
    idx = df.index[df["scale"] == 2.0]
    df.loc[idx[:2], "status"] = "failed"
    df.loc[idx[2], "status"] = "diverged"
    ft = an.failure_table(df, ["normalizer"]).set_index("scale")
    assert ft.loc[2.0, "failure_rate"] == pytest.approx(0.2)
    assert ft.loc[2.0, "divergence_rate"] == pytest.approx(0.1)
    assert ft.loc[1.0, "failure_rate"] == 0 and ft.loc[2.0, "n_trials"] == 10


def test_bin_scales_for_continuous() -> None:
    s = pd.Series(np.geomspace(0.1, 10, 200))
    lab, key = an.bin_scales(s, 10)
    assert lab.nunique() == 10 and key.is_monotonic_increasing
    lab2, _ = an.bin_scales(pd.Series([0.7, 1.0, 1.0]), 10)
    assert list(lab2) == ["0.7", "1", "1"]


# ------------------------------------------------------------------------------------- Table 1
def test_table1_layout() -> None:
    sn = make_trials(PEAKED, normalizers=("sn",))
    bsn = make_trials({1.0: 0.8, 2.0: 0.95}, normalizers=("bsn",), rng_seed=2)
    t = an.table1(pd.concat([sn, bsn]), ["fid", "mode_coverage"], "final")
    assert list(t.index) == ["SN", "SSN", "BSN", "BSSN"]
    assert list(t.columns) == ["cifar10 fid ↓", "cifar10 mode_coverage ↑"]
    col = t["cifar10 mode_coverage ↑"]
    assert col["SN"].endswith("(c=1)") and col["SSN"].endswith("(c=1.4)")
    assert col["BSSN"].startswith("**") and col["BSSN"].endswith("(c=2)")
    assert " ± " in col["BSN"]


def test_table1_na_without_scale_one() -> None:
    df = make_trials({1.4: 0.9, 2.0: 0.8}, normalizers=("sn",))
    t = an.table1(df, ["mode_coverage"])
    assert t.loc["SN"].iloc[0] == "n/a" and t.loc["BSN"].iloc[0] == "n/a"
    assert "(c=1.4)" in t.loc["SSN"].iloc[0]


# ------------------------------------------------------------------------------------- robustness
def test_empty_and_missing_inputs() -> None:
    empty = make_trials({1.0: 0.5}).iloc[0:0]
    assert an.scale_table(empty, "fid").empty
    assert an.best_scales(empty).empty
    assert an.table1(empty).shape[1] == 0
    assert an.failure_table(empty).empty
    one = make_trials({1.0: 0.5}, seeds=1)
    r = _one(an.best_scales(one, ["nope"], ["final"]), selection="final")  # metric absent: a row, no crash
    assert r["n_seeds"] == 0 and math.isnan(r["best_scale"])
    bare = pd.DataFrame({"scale": [1.0, 2.0], "final_fid": [3.0, np.nan]})  # no status/seed/normalizer
    b = an.best_scales(bare, ["fid"], ["final"], n_boot=10)
    assert b["best_scale"].iloc[0] == 1.0
    assert an.paired_difference(bare, "fid").empty
