"""What every analysis shares: metric names and directions, formatting, latest attempts, settings, replicates.

Why this module exists on its own: the numbers that turn trial rows into claims ("BSSN beats SN",
"the best scale is 1.4") must be unit-testable on planted answers without Ray, Torch or a GPU.
Every function takes DataFrames in the trial-summary (v1) / curves layouts of the results contract
and returns DataFrames; nothing here writes files or plots (that is :mod:`sweeper.analysis.report`).

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


def direction_of(metric: str, directions: Mapping[str, str] | None) -> str:
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


def arrow(direction: str) -> str:
    """The direction as the report says it, next to a metric name."""
    return "↑ higher is better" if direction == "max" else "↓ lower is better"


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


def fmt_lr(x: Any, digits: int = 3) -> str:
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


def fmt_value(x: Any, digits: int = 4) -> str:
    if isinstance(x, float | np.floating):
        return "?" if not math.isfinite(float(x)) else f"{float(x):.{digits}g}"
    if isinstance(x, np.integer):
        return str(int(x))
    return str(x)


# --------------------------------------------------------------------------------------------------
# Preparation: latest attempts, setting columns, labels
# --------------------------------------------------------------------------------------------------
PREPARED = "snsweep_prepared"


def latest_attempts(trials: pd.DataFrame) -> pd.DataFrame:
    """Keep the latest attempt of every trial_id and fill missing core columns.

    Why the filling: the report must never crash on a partial table (a hand-made CSV, an old
    schema); a missing ``status`` means "completed" (there is no other way to have a value), a
    missing ``scale`` or ``seed`` is NaN, a missing ``dataset``/``normalizer`` is ``"?"``.
    Rows without a trial_id are all kept (they cannot be retries of each other).
    """
    if trials.attrs.get(PREPARED):
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
    df.attrs[PREPARED] = True
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
            f"lr {fmt_lr(values.get('lr_g', '?'), digits)}/{fmt_lr(values.get('lr_d', '?'), digits)}"
        )
    if "beta1" in values or "beta2" in values:
        b1, b2 = (fmt_value(values.get(k, "?"), digits + 1) for k in ("beta1", "beta2"))
        parts.append(f"β ({b1}, {b2})")
    if "n_dis" in values:
        parts.append(f"n_dis {fmt_value(values['n_dis'])}")
    for c in extra:
        if c in _LABEL_SKIP or c not in values:
            continue
        parts.append(f"{'bs' if c == 'batch_size' else c} {fmt_value(values[c], digits + 1)}")
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
    gid_all = group_ids(df, cols)
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


def group_ids(df: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """Integer id per distinct key combination (NaN keys allowed), sorted when the keys sort."""
    if not keys:
        return pd.Series(np.zeros(len(df), dtype=np.int64), index=df.index)
    try:
        return df.groupby(list(keys), dropna=False, sort=True).ngroup()
    except TypeError:  # mixed types in an extra column cannot be sorted
        return df.groupby(list(keys), dropna=False, sort=False).ngroup()


def key_frame(df: pd.DataFrame, gid: pd.Series, keys: Sequence[str]) -> pd.DataFrame:
    first = ~gid.duplicated()
    out = df.loc[first.to_numpy(), list(keys)].copy()
    out.index = gid[first].to_numpy()
    return out.sort_index()


def replicate_key(df: pd.DataFrame) -> pd.Series:
    """Seed where every row has one; otherwise ``s<seed>`` / ``t<trial_id>`` strings (one type)."""
    seed = df["seed"]
    if seed.notna().all():
        return seed
    tid = df["trial_id"].astype(str)
    return pd.Series(np.where(seed.notna(), "s" + seed.astype(str), "t" + tid), index=df.index, dtype=object)


# --------------------------------------------------------------------------------------------------
# Per-seed values and the scale table
# --------------------------------------------------------------------------------------------------
def metric_values(df: pd.DataFrame, metric: str, selection: str) -> pd.Series:
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
    work["seed"] = replicate_key(df).to_numpy()
    work["value"] = metric_values(df, metric, selection).to_numpy()
    work = work[np.isfinite(work["value"].to_numpy())]
    if work.empty:
        return work.reset_index(drop=True)
    gid = group_ids(work, keys + ["scale", "seed"])
    kf = key_frame(work, gid, keys + ["scale", "seed"])
    kf["value"] = work["value"].groupby(gid.to_numpy()).mean()
    return kf.reset_index(drop=True)
