"""Pure statistics over sweep results: scale tables, best scales, SN-vs-BSSN differences, Table 1.

Why this module exists on its own: the numbers that turn trial rows into claims ("BSSN beats SN",
"the best scale is 1.4") must be unit-testable on planted answers without Ray, Torch or a GPU.
Every function takes DataFrames in the trial-summary (v1) / curves layouts of the results contract
and returns DataFrames; nothing here writes files or plots (that is :mod:`sweeper.report`).

Conventions shared by every function (stated once here, repeated in the report):

- **Latest attempt.** Only the highest ``attempt`` of each ``trial_id`` counts (retries replace
  earlier attempts; they are not extra seeds).
- **Counted rows.** A value counts when ``status`` is ``completed``, ``diverged`` or
  ``stopped_early`` *and* the value is finite. ``failed`` rows never count; their rate is reported
  separately (:func:`failure_table`) so a scale that kills runs is visible instead of silently
  looking good on its survivors.
- **Selection.** ``"final"`` reads ``final_<metric>`` (end of training; the paper's Table 1
  [inferred]), ``"best"`` reads ``best_<metric>`` (best during training; paper Fig. 8 / App. M).
- **Replicates are seeds.** Rows sharing a seed within one (setting, scale) are averaged first, so
  ``n`` counts distinct seeds; a row without a seed is its own replicate.
- **Setting** = every config column except ``seed`` and ``scale`` (see :func:`setting_columns`).
  ``normalizer`` is part of the setting; SN-vs-BSSN pairing uses the setting *without* it.
- **Directions.** ``"max"`` = higher is better. :func:`default_direction` knows the usual names;
  a ``directions`` mapping overrides it per metric.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "COUNTED_STATUSES",
    "CORE_SETTING_COLUMNS",
    "GOOD_SCALE_RULE",
    "STATUSES",
    "bin_scales",
    "best_scales",
    "compare_sn_bssn",
    "default_direction",
    "failure_table",
    "format_mean_sem",
    "format_modes",
    "format_scale",
    "latest_attempts",
    "metric_column",
    "metric_names",
    "min_sign_test_p",
    "paired_difference",
    "per_seed_values",
    "resolve_directions",
    "scale_table",
    "seed_warnings",
    "setting_columns",
    "setting_label",
    "setting_labels",
    "table1",
    "table1_values",
]

STATUSES: tuple[str, ...] = ("completed", "diverged", "stopped_early", "failed")
COUNTED_STATUSES: tuple[str, ...] = ("completed", "diverged", "stopped_early")
SELECTIONS: tuple[str, ...] = ("final", "best")

#: Config columns of the v1 trial summary that define a setting (besides extras), in display order.
CORE_SETTING_COLUMNS: tuple[str, ...] = (
    "dataset",
    "model",
    "normalizer",
    "lr_g",
    "lr_d",
    "beta1",
    "beta2",
    "n_dis",
    "batch_size",
    "iterations",
)
#: v1 columns that are bookkeeping or outcomes, never part of a setting.
NON_CONFIG_COLUMNS: frozenset[str] = frozenset(
    {
        "sweep",
        "trial_id",
        "attempt",
        "status",
        "error",
        "seed",
        "scale",
        "wall_seconds",
        "started_at",
        "finished_at",
        "host",
        "mlflow_run_id",
        "config_json",
    }
)
# Heuristics for columns other engineers may add later that are clearly not config: a per-trial
# path or timestamp as a group key would make every trial its own "setting".
_NON_CONFIG_PREFIXES = ("final_", "best_", "_")
_NON_CONFIG_SUFFIXES = ("_at", "_seconds", "_id", "_path", "_dir", "_json", "_time", "_version")

#: The rule :func:`best_scales` uses for ``good_scales``, quoted verbatim in reports.
GOOD_SCALE_RULE = (
    "a scale is *good* when its mean is not significantly worse than the best scale's: "
    "one-sided Welch t-test (H1: worse than best) with p >= alpha (0.05) when both scales have >= 2 seeds; "
    "otherwise (a scale with 1 seed) when its mean is within 1 combined SEM of the best, "
    "sqrt(SEM_s^2 + SEM_best^2), where a 1-seed SEM is the setting's pooled within-scale SD "
    "(or, with no repeated seeds at all, the successive-difference SD across scales); "
    "modes are maximal runs of good scales in sorted scale order"
)

_ROWS_TABLE1 = (("SN", "sn", "one"), ("SSN", "sn", "best"), ("BSN", "bsn", "one"), ("BSSN", "bsn", "best"))


# --------------------------------------------------------------------------------------------------
# Names, directions, formatting
# --------------------------------------------------------------------------------------------------
def default_direction(metric: str) -> str:
    """Return ``"min"`` for lower-is-better metrics (fid*, kid*, mode_kl, loss*), else ``"max"``.

    Why a name rule: reports must be right for the usual metric names even when the caller passes
    no direction map; the last path component is also checked so ``eval/fid`` works.
    """
    for name in {metric.lower(), metric.lower().rsplit("/", 1)[-1]}:
        if name.startswith(("fid", "kid", "loss")) or name == "mode_kl":
            return "min"
    return "max"


def resolve_directions(metrics: Iterable[str], directions: Mapping[str, str] | None = None) -> dict[str, str]:
    """Direction per metric: the caller's map wins, :func:`default_direction` fills the rest.

    Raises ``ValueError`` on a direction other than ``"max"``/``"min"`` so a typo cannot silently
    flip which scale is "best".
    """
    out: dict[str, str] = {}
    given = dict(directions or {})
    for m in metrics:
        d = given.get(m, default_direction(m))
        if d not in ("max", "min"):
            raise ValueError(f"direction of metric `{m}` must be 'max' or 'min', got {d!r}")
        out[m] = d
    for m, d in given.items():
        if d not in ("max", "min"):
            raise ValueError(f"direction of metric `{m}` must be 'max' or 'min', got {d!r}")
        out.setdefault(m, d)
    return out


def _direction(metric: str, directions: Mapping[str, str] | None) -> str:
    return resolve_directions([metric], directions)[metric]


def metric_column(metric: str, selection: str) -> str:
    """Column name of ``metric`` under ``selection`` (``final_fid`` / ``best_fid``)."""
    if selection not in SELECTIONS:
        raise ValueError(f"`selection` must be one of {SELECTIONS}, got {selection!r}")
    return f"{selection}_{metric}"


def metric_names(trials: pd.DataFrame) -> list[str]:
    """Metric names present in a trials table, in column order (from ``final_M``/``best_M``)."""
    seen: dict[str, None] = {}
    for c in trials.columns:
        c = str(c)
        if c.startswith("final_"):
            seen.setdefault(c[len("final_") :], None)
        elif c.startswith("best_") and not c.endswith("_step"):
            seen.setdefault(c[len("best_") :], None)
    return [m for m in seen if m]


def format_scale(c: Any) -> str:
    """Compact scale text: grid values as typed (``1.4``), sampled ones to 4 significant digits."""
    try:
        x = float(c)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not math.isfinite(x) else f"{x:.4g}"


def _fmt_num(x: float, decimals: int | None = None) -> str:
    if not math.isfinite(x):
        return "n/a"
    if decimals is not None:
        return f"{x:.{decimals}f}"
    return f"{x:.4g}"


def format_mean_sem(mean: float, sem: float) -> str:
    """``mean ± sem`` with the SEM to 2 significant digits (paper style: ``31.43 ± 0.90``).

    Why: more digits than the SEM supports suggest precision the seeds do not have; with no SEM
    (1 seed) the mean alone is shown to 4 significant digits.
    """
    mean = float(mean) if mean is not None else float("nan")
    sem = float(sem) if sem is not None else float("nan")
    if not math.isfinite(mean):
        return "n/a"
    if not math.isfinite(sem):
        return _fmt_num(mean)
    if sem == 0:
        return f"{_fmt_num(mean)} ± 0"
    decimals = int(min(8, max(0, 1 - math.floor(math.log10(abs(sem))))))
    return f"{mean:.{decimals}f} ± {sem:.{decimals}f}"


def format_modes(modes: Any, max_modes: int | None = None) -> str:
    """``[[0.7, 1.2], [2.5, 3.0]]`` → ``"0.7–1.2 ∪ 2.5–3"``; single scales print once.

    ``max_modes`` truncates with a count: single-seed (sampled) scales can fragment the good set
    into many runs, and a table cell listing all of them helps nobody.
    """
    parts = []
    modes = list(modes) if modes is not None else []
    for m in modes[: max_modes if max_modes is not None else len(modes)]:
        lo, hi = float(m[0]), float(m[1])
        parts.append(format_scale(lo) if lo == hi else f"{format_scale(lo)}–{format_scale(hi)}")
    if len(modes) > len(parts):
        parts.append(f"… ({len(modes)} runs)")
    return " ∪ ".join(parts) if parts else "—"


def _fmt_lr(x: Any, digits: int = 3) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return "?"
    if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
        mant, exp = f"{v:.{digits - 1}e}".split("e")
        mant = mant.rstrip("0").rstrip(".")
        return f"{mant}e{int(exp)}"
    return f"{v:.{digits}g}"


def _fmt_value(x: Any, digits: int = 4) -> str:
    if isinstance(x, float | np.floating):
        return "?" if not math.isfinite(float(x)) else f"{float(x):.{digits}g}"
    if isinstance(x, np.integer):
        return str(int(x))
    return str(x)


# --------------------------------------------------------------------------------------------------
# Preparation: latest attempts, setting columns, labels
# --------------------------------------------------------------------------------------------------
_PREPARED = "snsweep_prepared"


def latest_attempts(trials: pd.DataFrame) -> pd.DataFrame:
    """Keep the latest attempt of every trial_id and fill missing core columns.

    Why the filling: the report must never crash on a partial table (a hand-made CSV, an old
    schema); a missing ``status`` means "completed" (there is no other way to have a value), a
    missing ``scale`` or ``seed`` is NaN, a missing ``dataset``/``normalizer`` is ``"?"``.
    Rows without a trial_id are all kept (they cannot be retries of each other).
    """
    if trials.attrs.get(_PREPARED):
        return trials
    df = trials.reset_index(drop=True)  # positional work below; duplicate labels must not matter
    n = len(df)
    defaults: dict[str, Any] = {
        "trial_id": [f"row{i}" for i in range(n)],
        "attempt": 0,
        "status": "completed",
        "dataset": "?",
        "normalizer": "?",
        "scale": np.nan,
        "seed": np.nan,
    }
    for col, val in defaults.items():
        if col not in df.columns:
            df[col] = val
    df["scale"] = pd.to_numeric(df["scale"], errors="coerce").astype(float)
    df["status"] = df["status"].fillna("failed").astype(str)
    if n:
        att = pd.to_numeric(df["attempt"], errors="coerce").fillna(0)
        has_id = df["trial_id"].notna()
        order = np.argsort(att.to_numpy(), kind="stable")
        df = df.iloc[order]
        keep = ~(has_id.to_numpy()[order] & df.duplicated(subset="trial_id", keep="last").to_numpy())
        df = df[keep].sort_index().reset_index(drop=True)
    df.attrs[_PREPARED] = True
    return df


def _hashable_scalar_column(s: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s) or pd.api.types.is_string_dtype(s):
        if s.dtype != object:
            return True
    return bool(s.map(lambda v: v is None or isinstance(v, str | int | float | bool | np.generic)).all())


def setting_columns(df: pd.DataFrame, *, include_normalizer: bool = True) -> list[str]:
    """Group-key columns of a "setting": every config column except ``seed`` and ``scale``.

    Core v1 columns come first in a fixed order; extra config columns (anything not bookkeeping,
    not an outcome, not a path/timestamp/id, holding plain scalars) follow alphabetically, so a
    sweep that adds a new knob is grouped by it without code changes here.
    ``include_normalizer=False`` gives the key used to pair SN with BSSN.
    """
    cols = [c for c in CORE_SETTING_COLUMNS if c in df.columns]
    extras = []
    for c in df.columns:
        name = str(c)
        if name in CORE_SETTING_COLUMNS or name in NON_CONFIG_COLUMNS:
            continue
        if name.startswith(_NON_CONFIG_PREFIXES) or name.endswith(_NON_CONFIG_SUFFIXES):
            continue
        if _hashable_scalar_column(df[c]):
            extras.append(c)
    cols += sorted(extras, key=str)
    if not include_normalizer and "normalizer" in cols:
        cols.remove("normalizer")
    return cols


_LABEL_SKIP = ("dataset", "normalizer", "lr_g", "lr_d", "beta1", "beta2", "n_dis")


def setting_label(values: Mapping[str, Any], *, extra: Sequence[str] = (), digits: int = 3) -> str:
    """Readable label of a setting, e.g. ``"lr 1e-4/1e-4, β (0.5, 0.999), n_dis 1"``.

    lr is written G/D. ``extra`` names further columns to show (the ones that vary in the table);
    dataset and normalizer are never part of the label because reports show them as columns.
    """
    parts = []
    if "lr_g" in values or "lr_d" in values:
        parts.append(
            f"lr {_fmt_lr(values.get('lr_g', '?'), digits)}/{_fmt_lr(values.get('lr_d', '?'), digits)}"
        )
    if "beta1" in values or "beta2" in values:
        b1, b2 = (_fmt_value(values.get(k, "?"), digits + 1) for k in ("beta1", "beta2"))
        parts.append(f"β ({b1}, {b2})")
    if "n_dis" in values:
        parts.append(f"n_dis {_fmt_value(values['n_dis'])}")
    for c in extra:
        if c in _LABEL_SKIP or c not in values:
            continue
        parts.append(f"{'bs' if c == 'batch_size' else c} {_fmt_value(values[c], digits + 1)}")
    return ", ".join(parts) if parts else "default"


def setting_labels(df: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.Series:
    """:func:`setting_label` for every row; columns beyond lr/β/n_dis appear only if they vary.

    Why "only if they vary": a label listing batch size and iterations on every row is noise when
    they are constant, but two settings must never share a label when they differ.
    """
    cols = list(columns) if columns is not None else setting_columns(df)
    if df.empty:
        return pd.Series([], index=df.index, dtype=object)
    varying = [c for c in cols if c not in _LABEL_SKIP and df[c].nunique(dropna=False) > 1]
    cols = [c for c in cols if c not in ("dataset", "normalizer")]  # shown as their own columns
    gid_all = _group_ids(df, cols)
    first = ~gid_all.duplicated().to_numpy()
    uniq = df.loc[first, cols]
    rows = [dict(zip(cols, row, strict=True)) for row in uniq.itertuples(index=False)]
    labels = [setting_label(r, extra=varying) for r in rows]
    # Sampled (log-uniform) learning rates can round to the same text: add digits, then a counter.
    for attempt in (6, None):
        seen = pd.Series(labels).duplicated(keep=False).to_numpy()
        if not seen.any():
            break
        for i in np.flatnonzero(seen):
            labels[i] = (
                setting_label(rows[i], extra=varying, digits=attempt) if attempt else f"{labels[i]} #{i}"
            )
    mapping = dict(zip(gid_all.to_numpy()[first], labels, strict=True))
    return gid_all.map(mapping).astype(object)


def _group_ids(df: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Integer id per distinct key combination (NaN keys allowed), sorted when the keys sort."""
    if not keys:
        return pd.Series(np.zeros(len(df), dtype=np.int64), index=df.index)
    try:
        return df.groupby(list(keys), dropna=False, sort=True).ngroup()
    except TypeError:  # mixed types in an extra column cannot be sorted
        return df.groupby(list(keys), dropna=False, sort=False).ngroup()


def _key_frame(df: pd.DataFrame, gid: pd.Series, keys: Sequence[str]) -> pd.DataFrame:
    first = ~gid.duplicated()
    out = df.loc[first.to_numpy(), list(keys)].copy()
    out.index = gid[first].to_numpy()
    return out.sort_index()


def _replicate_key(df: pd.DataFrame) -> pd.Series:
    """Seed where every row has one; otherwise ``s<seed>`` / ``t<trial_id>`` strings (one type)."""
    seed = df["seed"]
    if seed.notna().all():
        return seed
    tid = df["trial_id"].astype(str)
    return pd.Series(np.where(seed.notna(), "s" + seed.astype(str), "t" + tid), index=df.index, dtype=object)


# --------------------------------------------------------------------------------------------------
# Per-seed values and the scale table
# --------------------------------------------------------------------------------------------------
def _values(df: pd.DataFrame, metric: str, selection: str) -> pd.Series:
    col = metric_column(metric, selection)
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    v = pd.to_numeric(df[col], errors="coerce").astype(float)
    ok = df["status"].isin(COUNTED_STATUSES).to_numpy() & np.isfinite(v.to_numpy())
    return v.where(ok)


def per_seed_values(trials: pd.DataFrame, metric: str, selection: str = "final") -> pd.DataFrame:
    """Long table: setting columns, ``scale``, ``seed``, ``value`` (counted rows, seed duplicates averaged).

    This is the unit every statistic below is computed from; it is also what pairing by seed uses.
    """
    df = latest_attempts(trials)
    keys = setting_columns(df)
    work = df[keys + ["scale"]].copy()
    work["seed"] = _replicate_key(df).to_numpy()
    work["value"] = _values(df, metric, selection).to_numpy()
    work = work[np.isfinite(work["value"].to_numpy())]
    if work.empty:
        return work.reset_index(drop=True)
    gid = _group_ids(work, keys + ["scale", "seed"])
    kf = _key_frame(work, gid, keys + ["scale", "seed"])
    kf["value"] = work["value"].groupby(gid.to_numpy()).mean()
    return kf.reset_index(drop=True)


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
    direction = _direction(metric, directions)
    cols = [*gk, "n_trials", "n", "mean", "std", "sem", "values", "seeds", "trial_ids"]
    if df.empty:
        out = pd.DataFrame(columns=cols)
        return out.assign(metric=metric, selection=selection, direction=direction)
    gid = _group_ids(df, gk)
    out = _key_frame(df, gid, gk)
    g = gid.to_numpy()
    n_groups = len(out)
    # numpy segment arithmetic instead of groupby(...).agg(list): the latter runs Python per group
    # and dominated the report's run time on 10k-trial sweeps.
    order = np.argsort(g, kind="stable")
    bounds = np.searchsorted(g[order], np.arange(n_groups + 1))
    tids = df["trial_id"].astype(str).to_numpy()[order]
    out["n_trials"] = np.diff(bounds)
    out["trial_ids"] = [tids[bounds[i] : bounds[i + 1]].tolist() for i in range(n_groups)]

    val = _values(df, metric, selection)
    rep = _replicate_key(df)
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
        direction = _direction(metric, directions)
        sign = 1.0 if direction == "max" else -1.0
        for selection in selections:
            st = scale_table(df, metric, selection, directions)
            if st.empty:
                continue
            label_of = setting_labels(st, keys).to_numpy()
            sid = _group_ids(st, keys).to_numpy()
            kf = _key_frame(st, pd.Series(sid, index=st.index), keys)
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
    direction = _direction(metric, directions)
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

    gid = _group_ids(merged, pair_keys)
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
            seeds=[_fmt_value(s) for s in sub["seed"]],
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
    gid = _group_ids(work, [*keys, "scale"])
    out = _key_frame(work, gid, [*keys, "scale", "_order"])
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
def _table1_settings(df: pd.DataFrame, pair_keys: list[str]) -> pd.DataFrame:
    """Per dataset, the SN/BSN setting that is the scale sweep: the most scales run with >= 2 seeds,
    then the most scales, then the most rows.

    Why: the paper's scale sweeps live at one default setting (lr 1e-4/1e-4, β (0.5, 0.999),
    n_dis 1) with 5 seeds per scale; other settings usually ran only c = 1, and a random-search
    block with one seed per scale would turn "best scale" into "luckiest seed".
    """
    sub = df[df["normalizer"].isin(["sn", "bsn"])]
    if sub.empty:
        return sub.iloc[0:0]
    gid = _group_ids(sub, pair_keys)
    kf = _key_frame(sub, gid, pair_keys)
    g = gid.to_numpy()
    per_scale = pd.DataFrame(
        {"g": g, "scale": sub["scale"].to_numpy(), "seed": _replicate_key(sub).to_numpy()}
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
    setting is the SN/BSN scale sweep (see :func:`_table1_settings`); mean/sem NaN when a cell was
    not run (e.g. c = 1 missing).
    """
    df = latest_attempts(trials)
    metrics = list(metrics) if metrics is not None else metric_names(df)
    cols = ["dataset", "metric", "direction", "row", "normalizer", "scale", "mean", "sem", "n", "setting"]
    keys = setting_columns(df)
    pair_keys = [k for k in keys if k != "normalizer"]
    chosen = _table1_settings(df, pair_keys)
    if chosen.empty or not metrics:
        return pd.DataFrame(columns=cols)
    sub = df.merge(chosen[pair_keys], on=pair_keys, how="inner")
    sub = sub[sub["normalizer"].isin(["sn", "bsn"])]
    sub.attrs[_PREPARED] = True
    label = setting_labels(chosen, pair_keys)
    label_by_ds = dict(zip(chosen["dataset"], label, strict=True))
    rows = []
    for metric in metrics:
        direction = _direction(metric, directions)
        st = scale_table(sub, metric, selection, directions)
        bs = best_scales(sub, [metric], [selection], directions, n_boot=0)
        for ds in chosen["dataset"]:
            for row_name, norm, which in _ROWS_TABLE1:
                mean = sem = scale = np.nan
                n = 0
                if which == "one":
                    hit = st[
                        (st["dataset"] == ds) & (st["normalizer"] == norm) & np.isclose(st["scale"], 1.0)
                    ]
                    hit = hit[hit["n"] > 0]
                    if len(hit):
                        h = hit.iloc[0]
                        mean, sem, n, scale = float(h["mean"]), float(h["sem"]), int(h["n"]), 1.0
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

    Cells are ``"mean ± sem (c=…)"``; ``"n/a"`` where the cell was not run (e.g. no c = 1 run).
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
            extra = f", n={int(row['n'])}" if int(row["n"]) < 2 else ""
            cells.append(f"{txt} (c={format_scale(row['scale'])}{extra})")
        out[f"{ds} {metric} {arrow}"] = cells
    return pd.DataFrame(out, index=pd.Index(index, name="method"))
