"""Per-scale statistics and the best scale per (setting, metric, selection).

Per scale: mean ± s.e. over seeds and how many seeds were lost there (failed, or diverged/stopped
without a finite value). Per setting: the best scale among the scales that the survivorship rule
allows, the good-scale set, its modes, and how often the choice repeats when seeds are resampled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis.common import (
    SELECTIONS,
    direction_of,
    group_ids,
    key_frame,
    metric_names,
    metric_values,
    replicate_key,
)
from sweeper.analysis.settings import latest_attempts, setting_columns, setting_labels

#: The rule :func:`best_scales` uses for ``good_scales``, quoted verbatim in reports.
GOOD_SCALE_RULE = (
    "a scale is *good* when its mean is not significantly worse than the best scale's: "
    "one-sided Welch t-test (H1: worse than best) with p >= alpha (0.05) when both scales have >= 2 seeds; "
    "otherwise (a scale with 1 seed) when its mean is within 1 combined SEM of the best, "
    "sqrt(SEM_s^2 + SEM_best^2), where a 1-seed SEM is the setting's pooled within-scale SD "
    "(or, with no repeated seeds at all, the successive-difference SD across scales); "
    "scales excluded by the survivorship rule are never good; "
    "modes are maximal runs of good scales in sorted scale order"
)

#: Which scales may be "best", quoted verbatim in reports.
SURVIVOR_RULE = (
    "a scale can be best (or good) only if at most half of the seeds run at it were lost "
    "(failed, or diverged/stopped without a finite value under this selection); otherwise its mean "
    "would rest on its survivors alone"
)

#: What ``repeat_rate`` measures, quoted verbatim in reports.
REPEAT_RULE = (
    "how often the choice repeats under seed resampling: the share of B = 1000 bootstrap resamples "
    "(seeds drawn with replacement within every eligible scale, seeded) in which the same scale is "
    "chosen again; it is not the probability that the scale is truly best"
)


def per_seed_values(trials: pd.DataFrame, metric: str, selection: str = "final") -> pd.DataFrame:
    """Long table: setting columns, ``scale``, ``seed``, ``value`` (counted rows, seed duplicates averaged).

    This is the unit every statistic below is computed from; it is also what pairing by seed uses.
    """
    df = latest_attempts(trials)
    keys = setting_columns(df)
    work = df[keys + ["scale"]].copy()
    work["seed"] = replicate_key(df).to_numpy()
    work["value"] = metric_values(df, metric, selection).to_numpy()
    work = work[np.isfinite(work["value"].to_numpy())]
    if work.empty:
        return work.reset_index(drop=True)
    gid = group_ids(work, keys + ["scale", "seed"])
    kf = key_frame(work, gid, keys + ["scale", "seed"])
    kf["value"] = work["value"].groupby(gid.to_numpy()).mean()
    return kf.reset_index(drop=True)


def eligible_scales(n: np.ndarray, n_run: np.ndarray) -> np.ndarray:
    """:data:`SURVIVOR_RULE` as arrays: counted seeds ``n`` of ``n_run`` run at each scale."""
    n, n_run = np.asarray(n, dtype=float), np.asarray(n_run, dtype=float)
    return (n > 0) & (2 * (n_run - n) <= n_run)


def scale_table(
    trials: pd.DataFrame,
    metric: str,
    selection: str = "final",
    directions: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Per (setting, scale): seeds run and lost, ``mean``, ``std`` (ddof 1), ``sem`` = std/√n (NaN if n<2).

    ``n_trials`` (latest attempts, failed included), ``n_run`` (distinct seeds run), ``n`` (seeds
    whose value counts), ``n_lost`` = n_run − n, of which ``n_diverged`` / ``n_failed`` /
    ``n_stopped`` seeds had that status, ``eligible`` (:data:`SURVIVOR_RULE`); ``values``/``seeds``
    (aligned lists) and ``trial_ids``. Scales that were run but have no counted value stay in the
    table with n = 0 so that they break runs of good scales (a scale where everything failed is
    not a plateau).
    """
    df = latest_attempts(trials)
    keys = setting_columns(df)
    gk = keys + ["scale"]
    direction = direction_of(metric, directions)
    cols = [*gk, "n_trials", "n_run", "n", "n_lost", "n_diverged", "n_failed", "n_stopped", "eligible",
            "mean", "std", "sem", "values", "seeds", "trial_ids"]  # fmt: skip
    if df.empty:
        out = pd.DataFrame(columns=cols)
        return out.assign(metric=metric, selection=selection, direction=direction)
    gid = group_ids(df, gk)
    out = key_frame(df, gid, gk)
    g = gid.to_numpy()
    n_groups = len(out)
    # numpy segment arithmetic instead of groupby(...).agg(list): the latter runs Python per group
    # and dominated the report's run time on 10k-trial sweeps.
    order = np.argsort(g, kind="stable")
    bounds = np.searchsorted(g[order], np.arange(n_groups + 1))
    tids = df["trial_id"].astype(str).to_numpy()[order]
    out["n_trials"] = np.diff(bounds)
    out["trial_ids"] = [tids[bounds[i] : bounds[i + 1]].tolist() for i in range(n_groups)]

    rep = replicate_key(df)
    runs = pd.DataFrame({"g": g, "rep": rep.to_numpy(), "status": df["status"].to_numpy()})
    out["n_run"] = runs.groupby("g")["rep"].nunique().reindex(out.index, fill_value=0).to_numpy()
    for col, status in (("n_diverged", "diverged"), ("n_failed", "failed"), ("n_stopped", "stopped_early")):
        sub = runs[runs["status"] == status]
        out[col] = sub.groupby("g")["rep"].nunique().reindex(out.index, fill_value=0).to_numpy()

    val = metric_values(df, metric, selection)
    ps = pd.DataFrame({"g": g, "rep": rep.to_numpy(), "v": val.to_numpy()})
    ps = ps[np.isfinite(ps["v"].to_numpy())]
    # One value per seed, seeds in sorted order within each scale: the statistics below are then
    # exactly what numpy gives for that scale's values listed by seed, whatever the row order.
    ps = ps.groupby(["g", "rep"], sort=True)["v"].mean().reset_index()
    pg = ps["g"].to_numpy().astype(np.int64)
    pv = ps["v"].to_numpy(dtype=float)
    pr = ps["rep"].to_numpy()
    pb = np.searchsorted(pg, np.arange(n_groups + 1))
    cnt = np.diff(pb)
    # numpy's own mean and ddof-1 SD per scale (not bincount sums): "mean ± s.e. equal to numpy's"
    # is a promise the report makes, to the last digit.
    mean, std = np.full(n_groups, np.nan), np.full(n_groups, np.nan)
    for i in np.flatnonzero(cnt > 0):
        seg = pv[pb[i] : pb[i + 1]]
        mean[i] = np.mean(seg)
        if len(seg) >= 2:
            std[i] = np.std(seg, ddof=1)
    out["n"] = cnt.astype(int)
    out["n_lost"] = np.maximum(out["n_run"].to_numpy() - cnt, 0)
    out["eligible"] = eligible_scales(cnt, out["n_run"].to_numpy())
    out["mean"] = mean
    out["std"] = std
    out["sem"] = np.where(cnt >= 2, std / np.sqrt(np.maximum(cnt, 1)), np.nan)
    out["values"] = [pv[pb[i] : pb[i + 1]].tolist() for i in range(n_groups)]
    out["seeds"] = [pr[pb[i] : pb[i + 1]].tolist() for i in range(n_groups)]
    out = out.reset_index(drop=True)[cols]
    return out.assign(metric=metric, selection=selection, direction=direction)


# --------------------------------------------------------------------------------------------------
# Best scales, good scales, modes, bootstrap repeat rate
# --------------------------------------------------------------------------------------------------
def _welch_p_worse(
    mb: np.ndarray, vb: np.ndarray, nb: np.ndarray, ms: np.ndarray, vs: np.ndarray, ns: np.ndarray
):
    """One-sided Welch p for H1 "scale s is worse than best" (values already sign-flipped to max)."""
    from scipy.special import stdtr

    qb, qs = vb / nb, vs / ns
    se2 = qb + qs
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (mb - ms) / np.sqrt(se2)
        dof = se2**2 / (qb**2 / (nb - 1) + qs**2 / (ns - 1))
        p = stdtr(dof, -t)
    # Zero variance on both sides: the test is undefined; equal means are not worse, others are.
    p = np.where(se2 > 0, p, np.where(mb - ms <= 0, 1.0, 0.0))
    return p


def _noise_sd(ms: np.ndarray, vs: np.ndarray, ns: np.ndarray) -> float:
    """Pooled within-scale SD; without repeated seeds, the successive-difference SD across scales.

    The successive-difference estimate also contains the trend in scale, so it over-states noise
    and makes the good-scale set conservative (wider) rather than falsely narrow.
    """
    rep = ns >= 2
    if rep.any():
        dof = float(np.sum(ns[rep] - 1))
        return float(np.sqrt(np.sum((ns[rep] - 1) * vs[rep]) / dof))
    if len(ms) >= 3:
        d = np.diff(ms)
        return float(np.sqrt(np.sum(d**2) / (2 * len(d))))
    return float("nan")


def bootstrap_pick_rates(values: list[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """Share of resamples in which each scale is chosen (seeds resampled with replacement per scale).

    The argmax is redone on each resample, so the rates say how often *this data's* choice would
    be made again; values are sign-flipped so larger is better.
    """
    k = len(values)
    counts = np.array([len(v) for v in values], dtype=np.int64)
    if k == 0 or n_boot <= 0:
        return np.full(k, np.nan)
    rng = np.random.default_rng(seed)
    offs = np.concatenate([[0], np.cumsum(counts)[:-1]])
    flat = np.concatenate(values)
    col_scale = np.repeat(np.arange(k), counts)
    idx = offs[col_scale] + (rng.random((n_boot, flat.size)) * counts[col_scale]).astype(np.int64)
    means = np.add.reduceat(flat[idx], offs, axis=1) / counts
    winners = means.argmax(axis=1)
    return np.bincount(winners, minlength=k) / n_boot


def choose_best(mean: np.ndarray, eligible: np.ndarray, sign: float) -> int | None:
    """Index of the best eligible scale (inputs sorted by scale, so ties go to the smaller scale)."""
    m = np.asarray(mean, dtype=float) * sign
    ok = np.asarray(eligible, dtype=bool) & np.isfinite(m)
    if not ok.any():
        return None
    return int(np.flatnonzero(ok)[np.argmax(m[ok])])


def _good_set(m: np.ndarray, var: np.ndarray, n: np.ndarray, cand: np.ndarray, b: int, alpha: float):
    """Good scales (bool array) and the rule text used, per :data:`GOOD_SCALE_RULE`."""
    good = np.zeros(len(m), dtype=bool)
    good[b] = True
    both_rep = cand & (n >= 2) & (n[b] >= 2)
    rules: set[str] = set()
    if both_rep.any():
        p = _welch_p_worse(m[b], var[b], n[b], m[both_rep], var[both_rep], n[both_rep])
        good[both_rep] = p >= alpha
        rules.add(f"Welch one-sided, alpha={alpha:g}")
    small = cand & ~both_rep
    small[b] = False
    if small.any():
        sd = _noise_sd(m[cand], var[cand], n[cand])
        se = np.where(n >= 2, np.sqrt(var / np.maximum(n, 1)), sd / np.sqrt(np.maximum(n, 1)))
        comb = np.sqrt(se[small] ** 2 + se[b] ** 2)
        gap = m[b] - m[small]
        good[small] = np.where(np.isfinite(comb), gap <= comb, gap <= 0)
        rules.add("within 1 combined SEM (n<2)")
    good &= cand
    return good, "; ".join(sorted(rules)) if rules else "only one scale"


def _analyse_group(g: dict[str, np.ndarray], sign: float, alpha: float, n_boot: int, seed: int) -> dict[str, Any]:
    """Best scale, good set, modes and repeat rate of one setting; ``g`` holds arrays sorted by scale.

    Plain arrays rather than a DataFrame: this runs once per (setting, metric, selection), which is
    thousands of times on a large sweep.
    """
    scales = g["scale"]
    if np.isfinite(scales).any():
        keep = np.isfinite(scales)
        g = {k: v[keep] for k, v in g.items()}
        scales = g["scale"]
    n = g["n"].astype(float)
    m = g["mean"] * sign
    var = np.nan_to_num(g["std"] ** 2, nan=0.0)
    valid = (n > 0) & np.isfinite(m)
    cand = valid & g["eligible"].astype(bool)
    res: dict[str, Any] = {
        "best_scale": np.nan, "mean": np.nan, "sem": np.nan, "std": np.nan, "n_seeds": 0, "n_run": 0,
        "n_lost": 0, "n_diverged": 0, "n_failed": 0,
        "excluded_scales": [float(x) for x in scales[(valid & ~cand) | ((n == 0) & (g["n_run"] > 0))]],
        "good_scales": [], "n_good": 0, "good_rule": "no data", "modes": [], "n_modes": 0,
        "repeat_rate": np.nan, "scales": [float(x) for x in scales],
        "pick_rates": [float("nan")] * len(scales), "n_scales": int(valid.sum()), "best_trial_ids": [],
    }  # fmt: skip
    b = choose_best(g["mean"], cand, sign)
    if b is None:
        if valid.any():
            res["good_rule"] = "no eligible scale (every scale lost more than half of its seeds)"
        return res
    res.update(
        best_scale=float(scales[b]), mean=float(g["mean"][b]), sem=float(g["sem"][b]), std=float(g["std"][b]),
        n_seeds=int(n[b]), n_run=int(g["n_run"][b]), n_lost=int(g["n_lost"][b]),
        n_diverged=int(g["n_diverged"][b]), n_failed=int(g["n_failed"][b]),
        best_trial_ids=[str(t) for t in g["trial_ids"][b]],
    )  # fmt: skip
    good, rule = _good_set(m, var, n, cand, b, alpha)
    res["good_rule"] = rule
    res["good_scales"] = [float(x) for x in scales[good]]
    res["n_good"] = int(good.sum())
    # Modes: maximal runs of good scales (scales run without an eligible value break a run).
    edges = np.diff(np.concatenate([[0], good.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    res["modes"] = [[float(scales[a]), float(scales[e])] for a, e in zip(starts, ends, strict=True)]
    res["n_modes"] = len(starts)
    # Bootstrap: how often the choice repeats when seeds are resampled (eligible scales compete).
    cidx = np.flatnonzero(cand)
    rates = np.full(len(scales), np.nan)
    if n_boot > 0:
        rates[:] = 0.0
        if np.all(n[cidx] == 1):  # nothing to resample: the choice is deterministic
            rates[b] = 1.0
        else:
            vals = [np.asarray(g["values"][i], dtype=float) * sign for i in cidx]
            rates[cidx] = bootstrap_pick_rates(vals, n_boot, seed)
    res["pick_rates"] = [float(x) for x in rates]
    res["repeat_rate"] = float(rates[b])
    return res


BEST_COLUMNS = [
    "setting", "metric", "selection", "direction", "best_scale", "mean", "sem", "std", "n_seeds", "n_run",
    "n_lost", "n_diverged", "n_failed", "excluded_scales", "good_scales", "n_good", "good_rule", "modes",
    "n_modes", "repeat_rate", "scales", "pick_rates", "n_scales", "best_trial_ids",
]  # fmt: skip


def best_scales(
    trials: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    selections: Sequence[str] = SELECTIONS,
    directions: Mapping[str, str] | None = None,
    *,
    alpha: float = 0.05,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (setting incl. normalizer, metric, selection): the best scale and how sure we are.

    Columns: the setting columns, ``setting`` (label), ``metric``, ``selection``, ``direction``,
    ``best_scale`` (argmax/argmin of the mean among scales allowed by :data:`SURVIVOR_RULE`; ties
    → smaller scale), ``mean``, ``sem``, ``std``, ``n_seeds`` (counted seeds at the best scale),
    ``n_run``/``n_lost``/``n_diverged``/``n_failed`` (seeds run, lost, diverged, failed there),
    ``excluded_scales`` (scales run but excluded by the survivorship rule, including those where
    every seed was lost), ``good_scales``
    (see :data:`GOOD_SCALE_RULE`), ``n_good``, ``good_rule``, ``modes`` (list of [lo, hi] runs of
    good scales; >1 = multimodal like paper Fig. 8), ``n_modes``, ``repeat_rate`` (see
    :data:`REPEAT_RULE`; B=``n_boot``, seeded by ``seed`` so reports are reproducible), ``scales``
    and ``pick_rates`` (aligned; the share of resamples choosing each scale, summing to 1),
    ``n_scales`` (scales with data), ``best_trial_ids``.

    The best scale is chosen on the same data it is reported on (as in the paper): its mean is
    optimistically biased; ``repeat_rate`` and the good-scale set say how fragile that choice is,
    and :func:`sweeper.analysis.compare.heldout_difference` compares tuned scales honestly.
    """
    df = latest_attempts(trials)
    metrics = list(metrics) if metrics is not None else metric_names(df)
    keys = setting_columns(df)
    rows: list[dict[str, Any]] = []
    arrays = ("scale", "n", "n_run", "n_lost", "n_diverged", "n_failed", "eligible", "mean", "std", "sem")
    for metric in metrics:
        direction = direction_of(metric, directions)
        sign = 1.0 if direction == "max" else -1.0
        for selection in selections:
            st = scale_table(df, metric, selection, directions)
            if st.empty:
                continue
            label_of = setting_labels(st, keys).to_numpy()
            sid = group_ids(st, keys).to_numpy()
            kf = key_frame(st, pd.Series(sid, index=st.index), keys)
            key_rows = kf.to_dict("records")
            order = np.lexsort((st["scale"].to_numpy(dtype=float), sid))
            bounds = np.searchsorted(sid[order], np.arange(len(kf) + 1))
            cols_np = {c: st[c].to_numpy()[order] for c in (*arrays, "values", "trial_ids")}
            first_label = label_of[order]
            for i in range(len(kf)):
                a, z = bounds[i], bounds[i + 1]
                if a == z:
                    continue
                group = {c: cols_np[c][a:z].astype(float) for c in arrays}
                group["values"], group["trial_ids"] = cols_np["values"][a:z], cols_np["trial_ids"][a:z]
                row = dict(key_rows[i])
                row.update(setting=first_label[a], metric=metric, selection=selection, direction=direction)
                row.update(_analyse_group(group, sign, alpha, n_boot, seed))
                rows.append(row)
    out = pd.DataFrame(rows, columns=[*keys, *BEST_COLUMNS])
    for c in ("dataset", "normalizer"):
        if c not in out.columns:
            out.insert(0, c, pd.Series(dtype=object))
    return out
