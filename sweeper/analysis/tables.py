"""Whole-sweep tables: failures per scale, scale bins, and the paper's Table 1 layout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from sweeper.analysis.common import (
    STATUSES,
    direction_of,
    format_mean_sem,
    format_scale,
    group_ids,
    key_frame,
    metric_names,
    replicate_key,
)
from sweeper.analysis.scales import best_scales, scale_table
from sweeper.analysis.settings import latest_attempts, setting_columns, setting_labels

_ROWS_TABLE1 = (("SN", "sn", "one"), ("SSN", "sn", "best"), ("BSN", "bsn", "one"), ("BSSN", "bsn", "best"))


# --------------------------------------------------------------------------------------------------
# Failures
# --------------------------------------------------------------------------------------------------
def bin_scales(scales: pd.Series, max_bins: int = 15) -> tuple[pd.Series, pd.Series]:
    """Labels and sort keys for scales: exact values when ≤ ``max_bins`` distinct, else log bins.

    Why: continuous (log-uniform sampled) scales give one row per trial in a per-scale table;
    log-spaced bins keep failure/heatmap tables readable while grid sweeps stay exact.
    """
    s = pd.to_numeric(scales, errors="coerce").astype(float)
    uniq = np.unique(s[np.isfinite(s)])
    if len(uniq) <= max_bins:
        return s.map(format_scale).astype(object), s
    lo, hi = float(uniq.min()), float(uniq.max())
    if lo > 0:
        edges = np.geomspace(lo, hi, max_bins + 1)
    else:
        edges = np.linspace(lo, hi, max_bins + 1)
    idx = np.clip(np.searchsorted(edges, s.to_numpy(), side="right") - 1, 0, max_bins - 1)
    names = [f"{edges[i]:.2g}–{edges[i + 1]:.2g}" for i in range(max_bins)]
    lab = pd.Series(
        [names[i] if np.isfinite(v) else "n/a" for i, v in zip(idx, s, strict=True)], index=s.index
    )
    key = pd.Series(np.where(np.isfinite(s), edges[idx], np.nan), index=s.index)
    return lab.astype(object), key


def failure_table(
    trials: pd.DataFrame, by: Sequence[str] | None = None, *, max_scales: int | None = None
) -> pd.DataFrame:
    """Per (``by`` columns, scale): trial counts by status, ``failure_rate`` and ``divergence_rate``.

    ``by`` defaults to the setting columns. Rates are over latest attempts: failed / all and
    diverged / all, kept apart from the metric statistics so a scale that crashes half its runs is
    not judged only by its survivors. ``max_scales`` bins scales (see :func:`bin_scales`).
    """
    df = latest_attempts(trials)
    keys = list(by) if by is not None else setting_columns(df)
    keys = [k for k in keys if k in df.columns]
    cols = [*keys, "scale", "n_trials", *STATUSES, "other", "failure_rate", "divergence_rate"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    work = df[keys].copy()
    if max_scales is not None:
        lab, key = bin_scales(df["scale"], max_scales)
        work["scale"], work["_order"] = lab.to_numpy(), key.to_numpy()
    else:
        work["scale"], work["_order"] = df["scale"].to_numpy(), df["scale"].to_numpy()
    st = df["status"].to_numpy()
    for s in STATUSES:
        work[s] = st == s
    work["other"] = ~np.isin(st, STATUSES)
    gid = group_ids(work, [*keys, "scale"])
    out = key_frame(work, gid, [*keys, "scale", "_order"])
    g = gid.to_numpy()
    out["n_trials"] = pd.Series(g).value_counts().sort_index()
    sums = work[[*STATUSES, "other"]].groupby(g).sum()
    for s in [*STATUSES, "other"]:
        out[s] = sums[s].astype(int)
    out["failure_rate"] = out["failed"] / out["n_trials"]
    out["divergence_rate"] = out["diverged"] / out["n_trials"]
    out = (
        out.sort_values([*keys, "_order"], kind="stable", na_position="last")
        if keys
        else out.sort_values("_order", kind="stable")
    )
    return out.drop(columns="_order").reset_index(drop=True)[cols]


# --------------------------------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------------------------------
def scale_sweep_settings(
    df: pd.DataFrame, pair_keys: list[str], normalizers: Sequence[str] | None = ("sn", "bsn")
) -> pd.DataFrame:
    """Per dataset, the setting that is the scale sweep: the most scales run with >= 2 seeds, then
    the most scales, then the most rows (rows of ``normalizers`` only; None = every normalizer).

    Why: the paper's scale sweeps live at one default setting (lr 1e-4/1e-4, β (0.5, 0.999),
    n_dis 1) with 5 seeds per scale; other settings usually ran only c = 1, and a random-search
    block with one seed per scale would turn "best scale" into "luckiest seed".
    """
    sub = df if normalizers is None else df[df["normalizer"].isin(list(normalizers))]
    if sub.empty:
        return sub.iloc[0:0]
    gid = group_ids(sub, pair_keys)
    kf = key_frame(sub, gid, pair_keys)
    g = gid.to_numpy()
    per_scale = pd.DataFrame(
        {"g": g, "scale": sub["scale"].to_numpy(), "seed": replicate_key(sub).to_numpy()}
    )
    seeds = per_scale.groupby(["g", "scale"], dropna=False)["seed"].nunique().reset_index()
    kf["_nrep"] = seeds[seeds["seed"] >= 2].groupby("g").size().reindex(kf.index).fillna(0)
    kf["_nscales"] = sub["scale"].groupby(g).nunique()
    kf["_nrows"] = pd.Series(g).value_counts().sort_index()
    kf["_gid"] = kf.index
    kf = kf.sort_values(
        ["_nrep", "_nscales", "_nrows", "_gid"], ascending=[False, False, False, True], kind="stable"
    )
    return kf.drop_duplicates(subset=["dataset"], keep="first")


def table1_values(
    trials: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    selection: str = "final",
    directions: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Long form of the paper's Table 1: one row per (dataset, metric, row ∈ SN/SSN/BSN/BSSN).

    SN = ``sn`` at c = 1, SSN = ``sn`` at its best scale, BSN = ``bsn`` at c = 1, BSSN = ``bsn``
    at its best scale, each best scale chosen separately per metric (paper §5). Per dataset the
    setting is the SN/BSN scale sweep (see :func:`scale_sweep_settings`); mean/sem NaN when a cell was
    not run (e.g. c = 1 missing).
    """
    df = latest_attempts(trials)
    metrics = list(metrics) if metrics is not None else metric_names(df)
    cols = ["dataset", "metric", "direction", "row", "normalizer", "scale", "mean", "sem", "n", "n_run", "setting"]
    keys = setting_columns(df)
    pair_keys = [k for k in keys if k != "normalizer"]
    chosen = scale_sweep_settings(df, pair_keys)
    if chosen.empty or not metrics:
        return pd.DataFrame(columns=cols)
    sub = df.merge(chosen[pair_keys], on=pair_keys, how="inner")
    sub = sub[sub["normalizer"].isin(["sn", "bsn"])]
    sub.attrs.update(df.attrs)  # still prepared: same latest attempts, same setting key
    label = setting_labels(chosen, pair_keys)
    label_by_ds = dict(zip(chosen["dataset"], label, strict=True))
    rows = []
    for metric in metrics:
        direction = direction_of(metric, directions)
        st = scale_table(sub, metric, selection, directions)
        bs = best_scales(sub, [metric], [selection], directions, n_boot=0)
        for ds in chosen["dataset"]:
            for row_name, norm, which in _ROWS_TABLE1:
                mean = sem = scale = np.nan
                n = n_run = 0
                if which == "one":
                    hit = st[
                        (st["dataset"] == ds) & (st["normalizer"] == norm) & np.isclose(st["scale"], 1.0)
                    ]
                    hit = hit[hit["n"] > 0]
                    if len(hit):
                        h = hit.iloc[0]
                        mean, sem, n, scale = float(h["mean"]), float(h["sem"]), int(h["n"]), 1.0
                        n_run = int(h["n_run"])
                else:
                    hit = bs[(bs["dataset"] == ds) & (bs["normalizer"] == norm) & (bs["n_seeds"] > 0)]
                    if len(hit):
                        h = hit.iloc[0]
                        mean, sem, n, scale = (
                            float(h["mean"]),
                            float(h["sem"]),
                            int(h["n_seeds"]),
                            h["best_scale"],
                        )
                        n_run = int(h["n_run"])
                rows.append(
                    {
                        "dataset": ds,
                        "metric": metric,
                        "direction": direction,
                        "row": row_name,
                        "normalizer": norm,
                        "scale": float(scale),
                        "mean": mean,
                        "sem": sem,
                        "n": n,
                        "n_run": n_run,
                        "setting": label_by_ds.get(ds, ""),
                    }
                )
    return pd.DataFrame(rows, columns=cols)


def table1(
    trials: pd.DataFrame | None = None,
    metrics: Sequence[str] | None = None,
    selection: str = "final",
    directions: Mapping[str, str] | None = None,
    *,
    values: pd.DataFrame | None = None,
    bold_best: bool = True,
) -> pd.DataFrame:
    """Paper Table 1 layout: rows SN, SSN, BSN, BSSN; one column per "dataset metric ↑/↓".

    Cells are ``"mean ± sem (c=…)"``, with ``"k of n seeds"`` where seeds were lost at that scale;
    ``"n/a"`` where the cell was not run (e.g. no c = 1 run).
    With ``bold_best`` the best mean per column is wrapped in ``**`` (Markdown bold), as the paper
    bolds the best per column. Columns where every cell is n/a are dropped. ``values`` may pass a
    precomputed :func:`table1_values` result.
    """
    if values is None:
        if trials is None:
            raise ValueError("table1 needs `trials` or `values`")
        values = table1_values(trials, metrics, selection, directions)
    index = [r[0] for r in _ROWS_TABLE1]
    if values.empty:
        return pd.DataFrame(index=pd.Index(index, name="method"))
    out: dict[str, list[str]] = {}
    # Paper layout: columns grouped by dataset, metrics within (CIFAR10 IS, CIFAR10 FID, STL10 ...).
    ds_order = {d: i for i, d in enumerate(dict.fromkeys(values["dataset"]))}
    m_order = {m: i for i, m in enumerate(dict.fromkeys(values["metric"]))}
    values = values.assign(_d=values["dataset"].map(ds_order), _m=values["metric"].map(m_order))
    values = values.sort_values(["_d", "_m"], kind="stable")
    for (ds, metric), sub in values.groupby(["dataset", "metric"], sort=False, dropna=False):
        sub = sub.set_index("row").reindex(index)
        if not np.isfinite(sub["mean"].to_numpy(dtype=float)).any():
            continue
        direction = str(sub["direction"].dropna().iloc[0])
        arrow = "↑" if direction == "max" else "↓"
        means = sub["mean"].to_numpy(dtype=float)
        fin = np.isfinite(means)
        best_val = (np.nanmax if direction == "max" else np.nanmin)(means) if fin.any() else np.nan
        cells = []
        for r in index:
            row = sub.loc[r]
            if not np.isfinite(float(row["mean"])):
                cells.append("n/a")
                continue
            txt = format_mean_sem(row["mean"], row["sem"])
            if bold_best and float(row["mean"]) == best_val:
                txt = f"**{txt}**"
            n, n_run = int(row["n"]), int(row.get("n_run", row["n"]) or row["n"])
            extra = f", {n} of {n_run} seeds" if n_run > n else (f", n={n}" if n < 2 else "")
            cells.append(f"{txt} (c={format_scale(row['scale'])}{extra})")
        out[f"{ds} {metric} {arrow}"] = cells
    return pd.DataFrame(out, index=pd.Index(index, name="method"))
