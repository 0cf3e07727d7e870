"""Per-scale statistics and the best scale per (setting, metric): mean ± SEM over seeds, good scales, P(best).
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
    latest_attempts,
    metric_names,
    metric_values,
    replicate_key,
    setting_columns,
    setting_labels,
)

#: The rule :func:`best_scales` uses for ``good_scales``, quoted verbatim in reports.
GOOD_SCALE_RULE = (
    "a scale is *good* when its mean is not significantly worse than the best scale's: "
    "one-sided Welch t-test (H1: worse than best) with p >= alpha (0.05) when both scales have >= 2 seeds; "
    "otherwise (a scale with 1 seed) when its mean is within 1 combined SEM of the best, "
    "sqrt(SEM_s^2 + SEM_best^2), where a 1-seed SEM is the setting's pooled within-scale SD "
    "(or, with no repeated seeds at all, the successive-difference SD across scales); "
    "modes are maximal runs of good scales in sorted scale order"
)


def scale_table(
    trials: pd.DataFrame,
    metric: str,
    selection: str = "final",
    directions: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Per (setting, scale): ``n`` seeds, ``mean``, ``std`` (ddof 1), ``sem`` = std/√n (NaN if n<2).

    Also ``values``/``seeds`` (aligned lists), ``n_trials`` (latest attempts incl. failed) and
    ``trial_ids``. Scales that were run but have no counted value stay in the table with n = 0 so
    that they break runs of good scales (a scale where everything failed is not a plateau).
    """
    df = latest_attempts(trials)
    keys = setting_columns(df)
    gk = keys + ["scale"]
    direction = direction_of(metric, directions)
    cols = [*gk, "n_trials", "n", "mean", "std", "sem", "values", "seeds", "trial_ids"]
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

    val = metric_values(df, metric, selection)
    rep = replicate_key(df)
    ps = pd.DataFrame({"g": g, "rep": rep.to_numpy(), "v": val.to_numpy()})
    ps = ps[np.isfinite(ps["v"].to_numpy())]
    ps = ps.groupby(["g", "rep"], sort=False)["v"].mean().reset_index()
    o = np.argsort(ps["g"].to_numpy(), kind="stable")
    pg = ps["g"].to_numpy()[o].astype(np.int64)
    pv = ps["v"].to_numpy(dtype=float)[o]
    pr = ps["rep"].to_numpy()[o]
    pb = np.searchsorted(pg, np.arange(n_groups + 1))
    cnt = np.diff(pb)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(pg, weights=pv, minlength=n_groups) / cnt
        dev2 = np.bincount(pg, weights=(pv - mean[pg]) ** 2, minlength=n_groups)
        std = np.where(cnt >= 2, np.sqrt(dev2 / np.maximum(cnt - 1, 1)), np.nan)
    mean = np.where(cnt > 0, mean, np.nan)
    out["n"] = cnt.astype(int)
    out["mean"] = mean
    out["std"] = std
    out["sem"] = np.where(cnt >= 2, std / np.sqrt(np.maximum(cnt, 1)), np.nan)
    out["values"] = [pv[pb[i] : pb[i + 1]].tolist() for i in range(n_groups)]
    out["seeds"] = [pr[pb[i] : pb[i + 1]].tolist() for i in range(n_groups)]
    out = out.reset_index(drop=True)[cols]
    return out.assign(metric=metric, selection=selection, direction=direction)


# --------------------------------------------------------------------------------------------------
# Best scales, good scales, modes, bootstrap P(best)
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


def _bootstrap_p_best(values: list[np.ndarray], n_boot: int, seed: int) -> np.ndarray:
    """P(scale is selected as best) under resampling seeds with replacement within every scale.

    Selection-aware: the argmax is redone on each resample, so the probability reflects how
    often *this data's* selection procedure would pick each scale. Values are sign-flipped to max.
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


def _analyse_group(
    scales: np.ndarray,
    n: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    sem: np.ndarray,
    values: Sequence[Sequence[float]],
    trial_ids: Sequence[Sequence[str]],
    sign: float,
    alpha: float,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """Best scale, good set, modes and P(best) of one setting; inputs sorted by scale.

    Plain arrays rather than a DataFrame: this runs once per (setting, metric, selection), which is
    thousands of times on a large sweep.
    """
    if np.isfinite(scales).any():
        keep = np.isfinite(scales)
        scales, n, mean, std, sem = scales[keep], n[keep], mean[keep], std[keep], sem[keep]
        values = [v for v, k in zip(values, keep, strict=True) if k]
        trial_ids = [t for t, k in zip(trial_ids, keep, strict=True) if k]
    n = n.astype(float)
    m = mean * sign
    var = np.nan_to_num(std**2, nan=0.0)
    valid = (n > 0) & np.isfinite(m)
    res: dict[str, Any] = {
        "best_scale": np.nan,
        "mean": np.nan,
        "sem": np.nan,
        "std": np.nan,
        "n_seeds": 0,
        "good_scales": [],
        "n_good": 0,
        "good_rule": "no data",
        "modes": [],
        "n_modes": 0,
        "p_best": np.nan,
        "scales": [float(x) for x in scales],
        "p_best_by_scale": [float("nan")] * len(scales),
        "n_scales": int(valid.sum()),
        "best_trial_ids": [],
    }
    if not valid.any():
        return res
    b = int(np.flatnonzero(valid)[np.argmax(m[valid])])
    res.update(
        best_scale=float(scales[b]),
        mean=float(mean[b]),
        sem=float(sem[b]),
        std=float(std[b]),
        n_seeds=int(n[b]),
        best_trial_ids=[str(t) for t in trial_ids[b]],
    )
    # Good scales.
    good = np.zeros(len(scales), dtype=bool)
    good[b] = True
    both_rep = valid & (n >= 2) & (n[b] >= 2)
    rules: set[str] = set()
    if both_rep.any():
        p = _welch_p_worse(m[b], var[b], n[b], m[both_rep], var[both_rep], n[both_rep])
        good[both_rep] = p >= alpha
        rules.add(f"Welch one-sided, alpha={alpha:g}")
    small = valid & ~both_rep
    small[b] = False
    if small.any():
        sd = _noise_sd(m[valid], var[valid], n[valid])
        se = np.where(n >= 2, np.sqrt(var / np.maximum(n, 1)), sd / np.sqrt(np.maximum(n, 1)))
        comb = np.sqrt(se[small] ** 2 + se[b] ** 2)
        gap = m[b] - m[small]
        good[small] = np.where(np.isfinite(comb), gap <= comb, gap <= 0)
        rules.add("within 1 combined SEM (n<2)")
    good &= valid
    res["good_rule"] = "; ".join(sorted(rules)) if rules else "only one scale"
    res["good_scales"] = [float(x) for x in scales[good]]
    res["n_good"] = int(good.sum())
    # Modes: maximal runs of good scales (scales run without a counted value break a run).
    edges = np.diff(np.concatenate([[0], good.astype(np.int8), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    res["modes"] = [[float(scales[a]), float(scales[e])] for a, e in zip(starts, ends, strict=True)]
    res["n_modes"] = len(starts)
    # Bootstrap P(best).
    vidx = np.flatnonzero(valid)
    pb = np.full(len(scales), np.nan)
    if n_boot > 0:
        pb[:] = 0.0
        if np.all(n[vidx] == 1):  # nothing to resample: the selection is deterministic
            pb[b] = 1.0
        else:
            vals = [np.asarray(values[i], dtype=float) * sign for i in vidx]
            pb[vidx] = _bootstrap_p_best(vals, n_boot, seed)
    res["p_best_by_scale"] = [float(x) for x in pb]
    res["p_best"] = float(pb[b])
    return res


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
    ``best_scale`` (argmax/argmin of the mean; ties → smaller scale), ``mean``, ``sem``, ``std``,
    ``n_seeds`` at the best scale, ``good_scales`` (see :data:`GOOD_SCALE_RULE`), ``n_good``,
    ``good_rule``, ``modes`` (list of [lo, hi] runs of good scales; >1 = multimodal like paper
    Fig. 8), ``n_modes``, ``p_best`` (bootstrap P(best) of the chosen scale, B=``n_boot``,
    seeded by ``seed`` so reports are reproducible), ``scales`` and ``p_best_by_scale`` (aligned;
    sums to 1), ``n_scales`` (scales with data), ``best_trial_ids``.

    Note the best scale is chosen on the same data it is reported on (as in the paper): its mean is
    optimistically biased; ``p_best`` and the good-scale set say how fragile that choice is.
    """
    df = latest_attempts(trials)
    metrics = list(metrics) if metrics is not None else metric_names(df)
    keys = setting_columns(df)
    rows: list[dict[str, Any]] = []
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
            sid_s = sid[order]
            bounds = np.searchsorted(sid_s, np.arange(len(kf) + 1))
            cols_np = {
                c: st[c].to_numpy()[order]
                for c in ("scale", "n", "mean", "std", "sem", "values", "trial_ids")
            }
            first_label = label_of[order]
            for i in range(len(kf)):
                a, z = bounds[i], bounds[i + 1]
                if a == z:
                    continue
                row = dict(key_rows[i])
                row.update(setting=first_label[a], metric=metric, selection=selection, direction=direction)
                row.update(
                    _analyse_group(
                        cols_np["scale"][a:z].astype(float),
                        cols_np["n"][a:z].astype(float),
                        cols_np["mean"][a:z].astype(float),
                        cols_np["std"][a:z].astype(float),
                        cols_np["sem"][a:z].astype(float),
                        cols_np["values"][a:z],
                        cols_np["trial_ids"][a:z],
                        sign,
                        alpha,
                        n_boot,
                        seed,
                    )
                )
                rows.append(row)
    cols = [
        *keys,
        "setting",
        "metric",
        "selection",
        "direction",
        "best_scale",
        "mean",
        "sem",
        "std",
        "n_seeds",
        "good_scales",
        "n_good",
        "good_rule",
        "modes",
        "n_modes",
        "p_best",
        "scales",
        "p_best_by_scale",
        "n_scales",
        "best_trial_ids",
    ]
    out = pd.DataFrame(rows, columns=cols)
    for c in ("dataset", "normalizer"):
        if c not in out.columns:
            out.insert(0, c, pd.Series(dtype=object))
    return out
