"""SN vs BSSN: paired differences at matched settings and seeds, sign tests, seed warnings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from sweeper.analysis.common import (
    direction_of,
    fmt_value,
    format_scale,
    group_ids,
    latest_attempts,
    per_seed_values,
    setting_columns,
    setting_labels,
)
from sweeper.analysis.scales import best_scales


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
    from scipy.special import stdtr, stdtrit

    gid = group_ids(merged, pair_keys)
    labels = setting_labels(merged, pair_keys)
    rows = []
    for _, sub in merged.groupby(gid.to_numpy(), sort=True):
        d = sub["diff"].to_numpy(dtype=float)
        k = len(d)
        mean = float(d.mean())
        sd = float(d.std(ddof=1)) if k >= 2 else float("nan")
        sem = sd / math.sqrt(k) if k >= 2 else float("nan")
        if k >= 2 and sem > 0:
            half = float(stdtrit(k - 1, 0.5 + confidence / 2)) * sem
            p = float(2 * stdtr(k - 1, -abs(mean) / sem))
        elif k >= 2:  # identical differences: a degenerate but exact interval
            half, p = 0.0, (1.0 if mean == 0 else 0.0)
        else:
            half, p = float("nan"), float("nan")
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


def compare_sn_bssn(
    trials: pd.DataFrame,
    metric: str,
    selection: str = "final",
    directions: Mapping[str, str] | None = None,
    *,
    best: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The two comparisons the paper makes: SN vs BSN at c = 1, and SSN vs BSSN at each one's tuned c.

    Returns :func:`paired_difference` rows with a ``comparison`` column; positive = BSN/BSSN better.
    The tuned c is selected on the same seeds it is compared on (no held-out selection, as in the
    paper), which favours neither side but inflates both.
    """
    parts = []
    for name, a, b in (
        ("SN vs BSN (c=1)", ("sn", 1.0), ("bsn", 1.0)),
        ("SSN vs BSSN (tuned c)", ("sn", "best"), ("bsn", "best")),
    ):
        r = paired_difference(trials, metric, selection, a, b, directions, best=best)
        if not r.empty:
            parts.append(r.assign(comparison=name))
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
                "means are optimistically biased (winner's curse), more so the more scales were tried."
            )
            shaky = int((multi["p_best"] < 0.5).sum())
            if shaky:
                out.append(
                    f"{shaky} of {len(multi)} best-scale choices have bootstrap P(best) < 0.5: another scale "
                    "would "
                    "often be picked on resampled seeds; read the good-scale set, not the single best scale."
                )
    return out
