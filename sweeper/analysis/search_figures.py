"""Figures of the search itself (matplotlib, Agg, imported lazily): parameter importance, parallel coordinates.

The two views W&B Sweeps and optuna-dashboard users read first: which parameters matter, and how
the good configurations are spread over every parameter at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis.common import fmt_value
from sweeper.analysis.importance import LOG_SPAN

MAX_LINES = 2000
"""Configurations drawn in a parallel-coordinates figure (evenly by rank beyond: the plot stays readable)."""
_DPI = 90


def _figure(width: float, height: float) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI)


def _save(fig: Any, out_dir: Path, name: str) -> str:
    rel = f"figures/{name}.png"
    fig.savefig(Path(out_dir) / rel, dpi=_DPI)
    return rel


def importance_figure(table: pd.DataFrame, metric: str, out_dir: Path, name: str) -> str | None:
    """Horizontal bars per parameter: fANOVA and PED-ANOVA importance side by side (each sums to 1)."""
    if table.empty:
        return None
    cols = [c for c in ("fanova", "ped_anova") if c in table and table[c].notna().any()]
    labels = {"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}
    n = len(table)
    fig = _figure(6.4, 1.2 + 0.42 * n * max(1, len(cols)) / 1.6)
    ax = fig.add_axes((0.22, 0.16, 0.74, 0.72))
    y = np.arange(n)[::-1]
    height = 0.8 / max(1, len(cols))
    for i, c in enumerate(cols):
        vals = table[c].fillna(0).to_numpy(dtype=float)
        ax.barh(y + (len(cols) - 1 - 2 * i) * height / 2, vals, height=height, label=labels[c],
                color=("#1f77b4", "#ff7f0e")[i])  # fmt: skip
        for yy, v in zip(y + (len(cols) - 1 - 2 * i) * height / 2, vals, strict=True):
            ax.text(v + 0.01, yy, f"{v:.2f}", va="center", fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(table["parameter"].astype(str))
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("importance (share, sums to 1 per method)")
    ax.set_title(f"Parameter importance for {metric}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, out_dir, name)


def _axis(values: pd.Series) -> tuple[np.ndarray, list[float], list[str]]:
    """Positions in [0, 1] of ``values`` on their own axis, with tick positions and labels."""
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        text = values.astype(str)
        cats = sorted(text.unique())
        pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
        return text.map(pos).to_numpy(dtype=float), list(pos.values()), cats
    v = values.to_numpy(dtype=float)
    low, high = float(np.nanmin(v)), float(np.nanmax(v))
    log = low > 0 and high / low >= LOG_SPAN
    f = np.log10 if log else (lambda x: x)
    lo, hi = f(low), f(high)
    span = (hi - lo) or 1.0
    uniq = np.unique(v[np.isfinite(v)])
    ticks = uniq if len(uniq) <= 6 else (10 ** np.linspace(lo, hi, 5) if log else np.linspace(lo, hi, 5))
    return (f(v) - lo) / span, [float((f(t) - lo) / span) for t in ticks], [fmt_value(float(t), 3) for t in ticks]


def parallel_coordinates_figure(
    points: pd.DataFrame, parameters: list[str], metric: str, direction: str, out_dir: Path, name: str
) -> str | None:
    """One line per configuration across every parameter's axis and the objective's (last), coloured
    by the objective (brighter = better); the best configuration is drawn thick, in black."""
    if points.empty or len(parameters) < 2:
        return None
    order = points.sort_values("value", ascending=direction == "max", kind="stable")  # best last: on top
    if len(order) > MAX_LINES:
        order = order.iloc[np.linspace(0, len(order) - 1, MAX_LINES).round().astype(int)]
    columns = [*parameters, "value"]
    axes = [_axis(order[c]) for c in columns]
    import matplotlib

    k = len(columns)
    fig = _figure(max(6.0, 1.6 * k), 4.2)
    ax = fig.add_axes((0.06, 0.14, 0.86, 0.74))
    value = order["value"].to_numpy(dtype=float)
    span = float(np.ptp(value)) or 1.0
    good = (value - value.min()) / span if direction == "max" else (value.max() - value) / span
    cmap = matplotlib.colormaps["viridis"]
    xs = np.arange(k)
    ys = np.vstack([a[0] for a in axes]).T
    alpha = 0.8 if len(order) <= 100 else 0.35
    for row, g in zip(ys[:-1], good[:-1], strict=True):
        ax.plot(xs, row, color=cmap(g), alpha=alpha, linewidth=1.0)
    ax.plot(xs, ys[-1], color="black", linewidth=2.6, label=f"best: {metric} = {fmt_value(value[-1], 4)}")
    for x, (_, tick_pos, tick_labels) in zip(xs, axes, strict=True):
        ax.axvline(x, color="0.4", linewidth=0.8)
        for tp, tl in zip(tick_pos, tick_labels, strict=True):
            ax.text(x + 0.03, tp, tl, fontsize=7, va="center", ha="left", color="0.2")
    ax.set_xticks(xs)
    ax.set_xticklabels([*parameters, metric], fontsize=9)
    ax.set_yticks([])
    ax.set_xlim(-0.1, k - 0.6)
    ax.set_ylim(-0.05, 1.05)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    sm = matplotlib.cm.ScalarMappable(cmap=cmap)
    bar = fig.colorbar(sm, ax=ax, fraction=0.025, pad=0.01)
    bar.set_ticks([0, 1])
    bar.set_ticklabels(["worst", "best"])
    ax.set_title(f"Parallel coordinates: {len(order)} configurations, coloured by {metric}", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)
    return _save(fig, out_dir, name)
