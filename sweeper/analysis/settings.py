"""Latest attempts and settings: which rows are the same training configuration.

A **setting** is a training configuration up to ``seed`` (the replicate axis) and ``scale`` (the
axis under study). It is keyed on the trainer's configuration alone: the candidate key columns
are ``TrainConfig``'s fields, never "every column that is not on a deny-list", so a result column
added later (``steps_done``, the evaluation facts, a timestamp) can never split one setting into
many. Per field the value comes from the Parquet column of that name when there is one, else from
``config_json`` (the resolved config every row carries), so a knob without a column of its own
(``loss``, ``width``, ``resolution``, ...) still separates settings when the sweep varies it.

The rule, stated once (the report repeats it):

- the core columns (:data:`CORE_SETTING_COLUMNS`) key the setting whenever present;
- any other ``TrainConfig`` field joins the key when every row states it and it takes more than
  one value among the rows analysed;
- fields that cannot change a trained model or its metric values never join: where files and
  caches live, the device, threads, checkpoint cadence, diagnostics, and the list of metrics
  (:data:`NOT_SETTING_FIELDS`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis.common import fmt_lr, fmt_value, group_ids
from sweeper.results import parse_config

PREPARED = "snsweep_prepared"
SETTINGS_ATTR = "snsweep_settings"

#: Config columns of the trial summary that define a setting, in display order.
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

#: TrainConfig fields that never define a setting: the replicate and the studied axis, and knobs
#: that change neither the trained model nor its metric values.
NOT_SETTING_FIELDS: frozenset[str] = frozenset(
    {
        "seed",
        "scale",
        "device",
        "num_threads",
        "checkpoint_every",
        "data_root",
        "inception_weights",
        "stats_cache_dir",
        "diagnostics",
        "metrics",
    }
)

SETTING_RULE = (
    "a setting is one training configuration up to seed and scale: the core config columns "
    f"({', '.join(CORE_SETTING_COLUMNS)}) plus every other TrainConfig field that all rows state and "
    "that takes more than one value (from its Parquet column, else from config_json); result and "
    "bookkeeping columns (steps_done, times, hosts, run ids, evaluation facts other than config "
    "fields) never split a setting"
)


def config_fields() -> list[str]:
    """The trainer's configuration fields (the only candidates for a setting key)."""
    from trainers.config import TrainConfig  # plain dataclasses: no torch

    return TrainConfig.field_names()


def latest_attempts(trials: pd.DataFrame) -> pd.DataFrame:
    """Keep the latest attempt of every trial_id, fill missing core columns, derive the setting key.

    Why the filling: the report must never crash on a partial table (a hand-made CSV, an old
    schema); a missing ``status`` means "completed" (there is no other way to have a value), a
    missing ``scale`` or ``seed`` is NaN, a missing ``dataset``/``normalizer`` is ``"?"``.
    Rows without a trial_id are all kept (they cannot be retries of each other). The setting
    columns (see the module docstring) are added as columns where they come from ``config_json``
    and recorded in ``attrs`` for :func:`setting_columns`.
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
    df, keys = _with_setting_columns(df)
    df.attrs[PREPARED] = True
    df.attrs[SETTINGS_ATTR] = keys
    return df


def _hashable(v: Any) -> Any:
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, sort_keys=True, default=str)
    return v


def _with_setting_columns(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Add the config fields that vary (and are stated by every row) and return the key columns."""
    keys = [c for c in CORE_SETTING_COLUMNS if c in df.columns]
    if df.empty:
        return df, keys
    configs = [parse_config(t) for t in df["config_json"]] if "config_json" in df.columns else None
    extra: dict[str, list[Any]] = {}
    for name in config_fields():
        if name in NOT_SETTING_FIELDS or name in CORE_SETTING_COLUMNS:
            continue
        if name in df.columns:
            col = df[name]
            if col.isna().any():
                continue
            values = col.map(_hashable) if col.dtype == object else col
            if values.nunique(dropna=False) > 1:
                df[name] = values
                keys.append(name)
        elif configs is not None:
            missing = object()
            vals = [c.get(name, missing) for c in configs]
            if any(v is missing or v is None for v in vals):
                continue
            vals = [_hashable(v) for v in vals]
            if len(set(map(repr, vals))) > 1:
                extra[name] = vals
                keys.append(name)
    if extra:
        df = df.assign(**extra)
    return df, keys


def setting_columns(df: pd.DataFrame, *, include_normalizer: bool = True) -> list[str]:
    """Group-key columns of a setting (see the module docstring); derived once per table.

    For a table that :func:`latest_attempts` has not prepared, these are the columns of its
    prepared form (a key field that only ``config_json`` states becomes a column there).
    ``include_normalizer=False`` gives the key used to pair SN with BSN(-S) in the same setting.
    """
    keys = df.attrs.get(SETTINGS_ATTR)
    if keys is None:
        cols = list(latest_attempts(df).attrs[SETTINGS_ATTR])
    else:
        cols = [c for c in keys if c in df.columns]
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
