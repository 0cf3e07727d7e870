"""SN vs BSSN: paired differences at matched settings and seeds, the selection-aware tuned
comparison (held-out seeds), sign tests, seed warnings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis.common import direction_of, fmt_value, format_scale, group_ids, replicate_key
from sweeper.analysis.scales import best_scales, choose_best, eligible_scales, per_seed_values
from sweeper.analysis.settings import latest_attempts, setting_columns, setting_labels

#: How the tuned-scale comparison avoids selection bias, quoted verbatim in reports.
HELDOUT_RULE = (
    "held-out seeds (leave one seed out): for each seed run under both normalizers, each normalizer's "
    "best scale is chosen on the *other* seeds (same survivorship rule), and that seed's own values at "
    "the two chosen scales give one paired difference; the estimate is the mean of these held-out "
    "differences and the interval a two-sided t interval over them (n - 1 degrees of freedom, treating "
    "the folds as independent, which cross-fitting only approximates). Choosing and estimating on "
    "different seeds removes the winner's-curse bias that in-sample tuning has, which grows with the "
    "number of scales tried (so it favours the normalizer given more scales)"
)


# --------------------------------------------------------------------------------------------------
# Paired SN vs BSSN
# --------------------------------------------------------------------------------------------------
def min_sign_test_p(n: int) -> float:
    """Smallest two-sided sign-test p reachable with ``n`` pairs: 2·0.5^n (capped at 1)."""
    return float(min(1.0, 2 * 0.5 ** max(int(n), 0)))


def _sign_test_p(wins: int, m: int) -> float:
    if m <= 0:
        return float("nan")
    k = min(wins, m - wins)
    tail = sum(math.comb(m, i) for i in range(k + 1)) / 2**m
    return float(min(1.0, 2 * tail))


def _side_values(
    ps: pd.DataFrame, name: str, scale: float | str, best: pd.DataFrame | None, keys: list[str]
) -> pd.DataFrame:
    side = ps[ps["normalizer"] == name]
    if isinstance(scale, str):
        if scale != "best":
            raise ValueError(f"a comparison scale must be a number or 'best', got {scale!r}")
        if best is None or best.empty:
            return side.iloc[0:0].assign(_c=np.nan)
        bs = best[best["normalizer"] == name][[*keys, "best_scale"]]
        side = side.merge(bs, on=keys, how="inner")
        side = side[np.isclose(side["scale"], side["best_scale"], rtol=1e-9, atol=1e-12)]
        return side.drop(columns="best_scale").assign(_c=side["scale"].to_numpy())
    side = side[np.isclose(side["scale"], float(scale), rtol=1e-9, atol=1e-12)]
    return side.assign(_c=float(scale))


def paired_difference(
    trials: pd.DataFrame,
    metric: str,
    selection: str = "final",
    a: tuple[str, float | str] = ("sn", 1.0),
    b: tuple[str, float | str] = ("bsn", 1.0),
    directions: Mapping[str, str] | None = None,
    *,
    best: pd.DataFrame | None = None,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Seed-paired difference of ``b`` minus ``a`` per setting (normalizer excluded from the key).

    Sign convention: ``mean_diff`` > 0 means **b is better** whatever the metric's direction
    (for lower-is-better metrics the raw difference is negated). With the default a = SN, b =
    BSN/BSSN: positive = BSSN better. A side's scale is a number or ``"best"`` (that normalizer's
    tuned scale for this metric and selection, from ``best`` or computed here). Pairs are seeds run
    under both sides in the same setting; the interval is a two-sided t interval at
    ``confidence`` over the paired differences (NaN with < 2 pairs). Also reported: paired t-test
    p, exact two-sided sign-test p, and the smallest sign-test p that n pairs can ever reach.
    """
    df = latest_attempts(trials)
    direction = direction_of(metric, directions)
    sign = 1.0 if direction == "max" else -1.0
    keys = setting_columns(df)
    pair_keys = [k for k in keys if k != "normalizer"]
    ps = per_seed_values(df, metric, selection)
    if (a[1] == "best" or b[1] == "best") and best is None:
        best = best_scales(df, [metric], [selection], directions, n_boot=0)
    if best is not None and not best.empty:
        best = best[(best["metric"] == metric) & (best["selection"] == selection)]
    cols = [
        *pair_keys,
        "setting",
        "metric",
        "selection",
        "direction",
        "a",
        "b",
        "a_scale",
        "b_scale",
        "n_pairs",
        "a_mean",
        "b_mean",
        "mean_diff",
        "sem_diff",
        "ci_low",
        "ci_high",
        "p_value",
        "sign_test_p",
        "min_sign_test_p",
        "seeds",
        "diffs",
    ]
    if ps.empty:
        return pd.DataFrame(columns=cols)
    va = _side_values(ps, a[0], a[1], best, keys)
    vb = _side_values(ps, b[0], b[1], best, keys)
    on = [*pair_keys, "seed"]
    merged = va[[*on, "value", "_c"]].merge(vb[[*on, "value", "_c"]], on=on, suffixes=("_a", "_b"))
    if merged.empty:
        return pd.DataFrame(columns=cols)
    merged["diff"] = sign * (merged["value_b"] - merged["value_a"])
    gid = group_ids(merged, pair_keys)
    labels = setting_labels(merged, pair_keys)
    rows = []
    for _, sub in merged.groupby(gid.to_numpy(), sort=True):
        d = sub["diff"].to_numpy(dtype=float)
        k = len(d)
        mean, sem, half, p = _t_interval(d, confidence)
        nz = d[d != 0]
        first = sub.iloc[0]
        row = {k2: first[k2] for k2 in pair_keys}
        row.update(
            setting=labels.loc[sub.index[0]],
            metric=metric,
            selection=selection,
            direction=direction,
            a=f"{a[0]} c={a[1] if isinstance(a[1], str) else format_scale(a[1])}",
            b=f"{b[0]} c={b[1] if isinstance(b[1], str) else format_scale(b[1])}",
            a_scale=float(sub["_c_a"].iloc[0]),
            b_scale=float(sub["_c_b"].iloc[0]),
            n_pairs=k,
            a_mean=float(sub["value_a"].mean()),
            b_mean=float(sub["value_b"].mean()),
            mean_diff=mean,
            sem_diff=sem,
            ci_low=mean - half,
            ci_high=mean + half,
            p_value=p,
            sign_test_p=_sign_test_p(int((nz > 0).sum()), len(nz)),
            min_sign_test_p=min_sign_test_p(k),
            seeds=[fmt_value(s) for s in sub["seed"]],
            diffs=[float(x) for x in d],
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=cols)


def _t_interval(d: np.ndarray, confidence: float) -> tuple[float, float, float, float]:
    """(mean, sem, half-width, two-sided t p) of paired differences ``d``."""
    from scipy.special import stdtr, stdtrit

    k = len(d)
    mean = float(d.mean()) if k else float("nan")
    if k < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sem = float(d.std(ddof=1)) / math.sqrt(k)
    if sem > 0:
        return mean, sem, float(stdtrit(k - 1, 0.5 + confidence / 2)) * sem, float(2 * stdtr(k - 1, -abs(mean) / sem))
    return mean, sem, 0.0, (1.0 if mean == 0 else 0.0)  # identical differences: degenerate but exact


HELDOUT_COLUMNS = [
    "setting", "metric", "selection", "direction", "a", "b", "a_scale", "b_scale", "n_seeds", "n_pairs",
    "n_missing", "a_scales", "b_scales", "a_mean", "b_mean", "mean_diff", "sem_diff", "ci_low", "ci_high",
    "raw_diff", "raw_ci_low", "raw_ci_high", "p_value", "sign_test_p", "min_sign_test_p", "seeds", "diffs",
    "rule",
]  # fmt: skip


def _keys_of(frame: pd.DataFrame, keys: list[str]) -> list[tuple]:
    """Setting keys as hashable tuples; NaN becomes None so that equal settings get equal keys."""
    return [tuple(None if isinstance(x, float) and math.isnan(x) else x for x in row)
            for row in frame[keys].itertuples(index=False, name=None)]  # fmt: skip


def _side_tables(df: pd.DataFrame, ps: pd.DataFrame, keys: list[str]) -> tuple[dict, dict]:
    """Per (setting incl. normalizer): {scale: set of seeds run} and {scale: {seed: value}}."""
    runs: dict[tuple, dict[float, set]] = {}
    rep = replicate_key(df).to_numpy()
    for k, c, r in zip(_keys_of(df, keys), df["scale"].to_numpy(dtype=float), rep, strict=True):
        runs.setdefault(k, {}).setdefault(float(c), set()).add(r)
    vals: dict[tuple, dict[float, dict]] = {}
    for k, c, r, v in zip(_keys_of(ps, keys), ps["scale"].to_numpy(dtype=float), ps["seed"].to_numpy(),
                          ps["value"].to_numpy(dtype=float), strict=True):  # fmt: skip
        vals.setdefault(k, {}).setdefault(float(c), {})[r] = v
    return runs, vals


def _choose_without(runs: dict[float, set], vals: dict[float, dict], held: Any, sign: float) -> float | None:
    """The best eligible scale of one normalizer chosen on every seed but ``held``."""
    scales = sorted(c for c in runs if math.isfinite(c))
    n_run = np.array([len(runs[c] - {held}) for c in scales])
    kept = [[v for r, v in vals.get(c, {}).items() if r != held] for c in scales]
    n = np.array([len(v) for v in kept])
    mean = np.array([np.mean(v) if v else np.nan for v in kept])
    b = choose_best(mean, eligible_scales(n, n_run), sign)
    return None if b is None else scales[b]


def heldout_difference(
    trials: pd.DataFrame,
    metric: str,
    selection: str = "final",
    a: str = "sn",
    b: str = "bsn",
    directions: Mapping[str, str] | None = None,
    *,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Tuned ``b`` minus tuned ``a`` per setting, each scale chosen on held-out seeds (:data:`HELDOUT_RULE`).

    One row per setting (normalizer excluded from the key) where both normalizers ran. Sign
    convention as :func:`paired_difference`: ``mean_diff``/``ci_*`` > 0 means **b is better**;
    ``raw_diff``/``raw_ci_*`` are b − a in the metric's own units. ``a_scale``/``b_scale`` are the
    scales chosen on all seeds (what the best-scale table shows), ``a_scales``/``b_scales`` the
    scale chosen in each fold; ``n_seeds`` seeds ran under both, ``n_pairs`` gave a held-out
    difference and ``n_missing`` did not (the seed had no counted value at a chosen scale: it
    failed or diverged there, which the estimate then cannot see; the report says how many).
    """
    df = latest_attempts(trials)
    direction = direction_of(metric, directions)
    sign = 1.0 if direction == "max" else -1.0
    keys = setting_columns(df)
    pair_keys = [k for k in keys if k != "normalizer"]
    ps = per_seed_values(df, metric, selection)
    if ps.empty or "normalizer" not in keys:
        return pd.DataFrame(columns=[*pair_keys, *HELDOUT_COLUMNS])
    runs, vals = _side_tables(df, ps, keys)
    ni = keys.index("normalizer")
    labels = setting_labels(df, pair_keys)
    label_of = dict(zip(_keys_of(df, pair_keys), labels, strict=True))
    rows = []
    for pk in sorted({k[:ni] + k[ni + 1 :] for k in runs}, key=repr):
        ka, kb = pk[:ni] + (a,) + pk[ni:], pk[:ni] + (b,) + pk[ni:]
        if ka not in runs or kb not in runs:
            continue
        seeds_a = set().union(*runs[ka].values())
        common = sorted(seeds_a & set().union(*runs[kb].values()), key=repr)
        if not common:
            continue
        full_a = _choose_without(runs[ka], vals.get(ka, {}), object(), sign)
        full_b = _choose_without(runs[kb], vals.get(kb, {}), object(), sign)
        diffs, va, vb, ca, cb, used, missing = [], [], [], [], [], [], 0
        for s in common:
            c_a = _choose_without(runs[ka], vals.get(ka, {}), s, sign)
            c_b = _choose_without(runs[kb], vals.get(kb, {}), s, sign)
            x = vals.get(ka, {}).get(c_a, {}).get(s) if c_a is not None else None
            y = vals.get(kb, {}).get(c_b, {}).get(s) if c_b is not None else None
            if x is None or y is None:
                missing += 1
                continue
            diffs.append(sign * (y - x))
            va.append(x)
            vb.append(y)
            ca.append(c_a)
            cb.append(c_b)
            used.append(s)
        d = np.asarray(diffs, dtype=float)
        mean, sem, half, p = _t_interval(d, confidence)
        nz = d[d != 0]
        lo, hi = mean - half, mean + half
        row = {k: (np.nan if v is None else v) for k, v in zip(pair_keys, pk, strict=True)}
        row.update(
            setting=label_of.get(pk, ""), metric=metric, selection=selection, direction=direction, a=a, b=b,
            a_scale=float("nan") if full_a is None else full_a, b_scale=float("nan") if full_b is None else full_b,
            n_seeds=len(common), n_pairs=len(d), n_missing=missing, a_scales=ca, b_scales=cb,
            a_mean=float(np.mean(va)) if va else float("nan"), b_mean=float(np.mean(vb)) if vb else float("nan"),
            mean_diff=mean, sem_diff=sem, ci_low=lo, ci_high=hi, raw_diff=sign * mean,
            raw_ci_low=lo if sign > 0 else -hi, raw_ci_high=hi if sign > 0 else -lo, p_value=p,
            sign_test_p=_sign_test_p(int((nz > 0).sum()), len(nz)), min_sign_test_p=min_sign_test_p(len(d)),
            seeds=[fmt_value(x) for x in used], diffs=[float(x) for x in d], rule=HELDOUT_RULE,
        )  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows, columns=[*pair_keys, *HELDOUT_COLUMNS])


def compare_sn_bssn(
    trials: pd.DataFrame,
    metric: str,
    selection: str = "final",
    directions: Mapping[str, str] | None = None,
    *,
    best: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The paper's two comparisons, with the tuned one made selection-aware.

    Rows (``comparison``): "SN vs BSN (c=1)": seed-paired at c = 1, no selection involved;
    "SSN vs BSSN (tuned c, held-out seeds)": :func:`heldout_difference` (:data:`HELDOUT_RULE`),
    the honest tuned comparison; "SSN vs BSSN (tuned c, in-sample)": both c's picked on the same
    seeds they are compared on, as the paper did. The in-sample row is kept for comparison with
    the paper only: it is optimistic for both sides and, because the winner's curse grows with
    the number of scales tried, it favours the normalizer that was given more scales (SN: 27 vs
    19 on CIFAR10). Positive = BSN/BSSN better throughout.
    """
    parts = []
    c1 = paired_difference(trials, metric, selection, ("sn", 1.0), ("bsn", 1.0), directions, best=best)
    if not c1.empty:
        parts.append(c1.assign(comparison="SN vs BSN (c=1)"))
    held = heldout_difference(trials, metric, selection, "sn", "bsn", directions)
    if not held.empty:
        held = held.assign(a=[f"sn c={format_scale(x)}" for x in held["a_scale"]],
                           b=[f"bsn c={format_scale(x)}" for x in held["b_scale"]])  # fmt: skip
        parts.append(held.assign(comparison="SSN vs BSSN (tuned c, held-out seeds)"))
    tuned = paired_difference(trials, metric, selection, ("sn", "best"), ("bsn", "best"), directions, best=best)
    if not tuned.empty:
        parts.append(tuned.assign(comparison="SSN vs BSSN (tuned c, in-sample)"))
    if not parts:
        return pd.DataFrame(columns=["comparison"])
    return pd.concat(parts, ignore_index=True)


# --------------------------------------------------------------------------------------------------
# Seed warnings
# --------------------------------------------------------------------------------------------------
def seed_warnings(
    best: pd.DataFrame | None = None, paired: pd.DataFrame | None = None, *, alpha: float = 0.05
) -> list[str]:
    """Plain-language warnings when the seeds cannot carry the claims the tables invite.

    Why: the paper's cells use 5 (ImageNet: 3) seeds; with n paired seeds no sign test can go
    below 2·0.5^n (0.0625 for 5), a 1-seed scale has no SEM at all, and a best scale picked among
    many on the same data is optimistically biased. Each warning states the rule and the number.
    """
    out: list[str] = []
    need = math.ceil(math.log2(2 / alpha))
    if paired is not None and not paired.empty and "n_pairs" in paired:
        for k in sorted({int(x) for x in paired["n_pairs"].dropna()}):
            if k < 1:
                continue
            pmin = min_sign_test_p(k)
            if pmin > alpha:
                out.append(
                    f"Paired comparisons with {k} seed{'s' if k != 1 else ''}: the smallest possible "
                    "two-sided "
                    f"sign-test p is 2·0.5^{k} = {pmin:.4g} > {alpha:g}, so no seed-by-seed sign test can "
                    f"reach significance; at least {need} paired seeds are needed. Read the t interval, "
                    "and treat a consistent sign as suggestive only."
                )
            if k < 2:
                out.append(f"Paired comparisons with {k} seed: no confidence interval can be computed.")
            elif k < 4:
                out.append(
                    f"Paired comparisons with {k} seeds: the t interval has {k - 1} degree(s) of freedom "
                    "and is "
                    "very wide; it also assumes roughly normal differences, which so few seeds cannot check."
                )
    if best is not None and not best.empty and "n_seeds" in best:
        has = best[best["n_seeds"] > 0]
        one = int((has["n_seeds"] < 2).sum())
        if one:
            out.append(
                f"{one} best-scale cell(s) rest on a single seed: their SEM is undefined (shown without ±) "
                "and their good-scale sets use a pooled noise estimate instead of a t-test, so their modes "
                "(runs of good scales) fragment easily on noise."
            )
        few = int(((has["n_seeds"] >= 2) & (has["n_seeds"] < 3)).sum())
        if few:
            out.append(f"{few} best-scale cell(s) rest on 2 seeds: their SEM is itself very uncertain.")
        multi = has[has["n_scales"] > 1]
        if len(multi):
            out.append(
                "Best scales are selected on the same seeds they are reported on (as in the paper): their "
                "means are optimistically biased (winner's curse), more so the more scales were tried; the "
                "tuned SN vs BSSN difference is therefore estimated on held-out seeds."
            )
            shaky = int((multi["repeat_rate"] < 0.5).sum())
            if shaky:
                out.append(
                    f"{shaky} of {len(multi)} best-scale choices repeat in fewer than half of the seed "
                    "resamples: another scale would often be chosen on resampled seeds; read the good-scale "
                    "set, not the single best scale."
                )
        lost = has[has["n_lost"] > 0] if "n_lost" in has else has.iloc[0:0]
        if len(lost):
            out.append(
                f"{len(lost)} best-scale cell(s) lost seeds at their best scale (failed, or diverged without a "
                "finite value): their means are over the surviving seeds only; the tables show how many."
            )
    return out
