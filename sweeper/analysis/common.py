"""What every analysis shares: metric names and directions, formatting, grouping, replicates.

Why this stage exists on its own: the numbers that turn trial rows into claims ("BSSN beats SN",
"the best scale is 1.4") must be unit-testable on planted answers without Ray, Torch or a GPU.
Every function takes DataFrames in the trial-summary / curves layouts of the results contract
and returns DataFrames; nothing here writes files or plots (that is :mod:`sweeper.analysis.report`).

Conventions shared by every function (stated once here, repeated in the report):

- **Latest attempt.** Only the highest ``attempt`` of each ``trial_id`` counts (retries replace
  earlier attempts; they are not extra seeds).
- **Setting** = the training configuration up to ``seed`` and ``scale``, keyed on TrainConfig
  fields only (:mod:`sweeper.analysis.settings`). ``normalizer`` is part of the setting; SN-vs-BSSN
  pairing uses the setting *without* it.
- **Counted values.** A value counts when ``status`` is ``completed``, ``diverged`` or
  ``stopped_early`` *and* the value is finite. ``failed`` rows never count.
- **Lost seeds and survivorship.** A seed run at a scale whose value does not count (failed, or
  diverged/stopped without a finite value) is *lost* there. Tables show lost seeds next to each
  mean, and a scale where more than half of the seeds were lost cannot be "best": its mean would
  rest on its survivors alone (:data:`sweeper.analysis.scales.SURVIVOR_RULE`).
- **Selection.** ``"final"`` reads ``final_<metric>`` (end of training; the paper's Table 1
  [inferred]), ``"best"`` reads ``best_<metric>`` (best during training; paper Fig. 8 / App. M).
- **Replicates are seeds.** Rows sharing a seed within one (setting, scale) are averaged first, so
  ``n`` counts distinct seeds; a row without a seed is its own replicate.
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
# Grouping and replicates
# --------------------------------------------------------------------------------------------------
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


def metric_values(df: pd.DataFrame, metric: str, selection: str) -> pd.Series:
    """``selection_metric`` where it counts (counted status and finite), else NaN."""
    col = metric_column(metric, selection)
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    v = pd.to_numeric(df[col], errors="coerce").astype(float)
    ok = df["status"].isin(COUNTED_STATUSES).to_numpy() & np.isfinite(v.to_numpy())
    return v.where(ok)
