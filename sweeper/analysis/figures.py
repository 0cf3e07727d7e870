"""The report's figures (matplotlib, Agg backend, imported lazily): scale curves, overviews, curves, heatmaps."""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis.common import arrow, fmt_lr, fmt_value, group_ids, metric_values
from sweeper.analysis.scales import scale_table
from sweeper.analysis.settings import setting_columns, setting_labels
from sweeper.analysis.tables import bin_scales

MAX_SETTINGS_PER_PANEL = 4


MAX_NORMALIZER_PANELS = 9


MAX_DATASET_FIGURES = 6


MAX_OVERVIEW_METRICS = 8


MAX_LAYERS = 12


_DPI = 90


def slug(*parts: Any) -> str:
    s = "_".join(str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-")[:120] or "fig"


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _new_fig(
    n_panels: int,
    ncols: int = 3,
    w: float = 4.2,
    h: float = 3.1,
    *,
    bottom: float = 0.5,
    legend: float = 0.0,
    wspace: float = 0.32,
    left: float = 0.7,
    right: float = 0.2,
):
    """A figure with a fixed margin layout (inches), panels in a grid.

    Why not ``tight_layout``: it measures every tick label and was most of the report's run time;
    fixed margins are good enough for these uniform panel grids. ``bottom`` leaves room for x
    labels (rotated heatmap ticks need more), ``legend`` for a figure-level legend below.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    n_panels = max(1, n_panels)
    ncols = max(1, min(ncols, n_panels))
    nrows = math.ceil(n_panels / ncols)
    top_in, left_in, right_in = 0.5, left, right
    width, height = w * ncols, h * nrows + top_in + bottom + legend
    fig = Figure(figsize=(width, height), dpi=_DPI)
    fig.subplots_adjust(
        left=left_in / width,
        right=1 - right_in / width,
        top=1 - top_in / height,
        bottom=(bottom + legend) / height,
        wspace=wspace,
        hspace=(bottom + 0.35) / (h - 0.35),
    )
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


def _log_x(ax: Any, scales: Any) -> None:
    """Log x axis labelled in plain numbers: at the grid's scales when few, else at 1-2-5 steps.

    Why: a default log axis over 0.7–4 shows a single "10^0" label; researchers read scales as c.
    """
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullLocator

    ax.set_xscale("log")
    uniq = np.unique(np.asarray(scales, dtype=float))
    uniq = uniq[np.isfinite(uniq) & (uniq > 0)]
    # a grid's own values when few and far enough apart to label; sampled scales get 1-2-5 steps
    spaced = len(uniq) < 2 or bool(np.all(uniq[1:] / uniq[:-1] >= 1.15))
    if 0 < len(uniq) <= 8 and spaced:
        ax.xaxis.set_major_locator(FixedLocator(uniq))
    else:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    ax.xaxis.set_minor_locator(NullLocator())  # minor log ticks are many artists: slow, and clutter


def _save(fig: Any, out_dir: Path, name: str) -> str:
    rel = f"figures/{name}.png"
    fig.savefig(out_dir / rel, dpi=_DPI)
    return rel


def _colors(n: int) -> list[Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(max(n, 1))]


# Catalogue order: panels and legends list SN/BSN first, and each normalizer keeps one colour in
# every figure of a report (and across reports), so readers never re-learn the legend.
_NORM_ORDER = (
    "sn",
    "bsn",
    "snconv",
    "none",
    "lecun",
    "sn_gamma_same",
    "sn_gamma_diff",
    "bsn_gamma_same",
    "bsn_gamma_diff",
)


def ordered_norms(values: Any) -> list[str]:
    uniq = list(dict.fromkeys(str(v) for v in values))
    return sorted(uniq, key=lambda n: (_NORM_ORDER.index(n) if n in _NORM_ORDER else len(_NORM_ORDER), n))


def _norm_color(norm: str) -> Any:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    i = _NORM_ORDER.index(norm) if norm in _NORM_ORDER else zlib.crc32(norm.encode()) % 10
    return cmap(i % 10)


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------
def _robust_ylim(ax: Any, values: np.ndarray) -> bool:
    """Clip the y axis to the bulk of the data when a few extreme values (diverged runs) would
    flatten everything else; return True when clipped so the caption can say so."""
    v = values[np.isfinite(values)]
    if v.size < 5:
        return False
    lo, hi = np.percentile(v, [5, 95])
    spread = hi - lo
    if spread <= 0 or (v.max() <= hi + 2 * spread and v.min() >= lo - 2 * spread):
        return False
    ax.set_ylim(lo - 0.6 * spread, hi + 0.6 * spread)
    return True


def scale_figure(
    df: pd.DataFrame,
    metric: str,
    selection: str,
    direction: str,
    best: pd.DataFrame,
    out_dir: Path,
    dataset: Any,
) -> tuple[str, bool] | None:
    """Metric vs scale, one panel per normalizer: per-seed points, mean ± SE, best scale starred.

    The same ≤ 4 settings (those with the most scales: the scale sweeps) get the same colour in
    every panel and one shared legend. Returns (path, whether the y axis was clipped).
    """
    from matplotlib.lines import Line2D

    st = scale_table(df, metric, selection, {metric: direction})
    st = st[(st["n"] > 0) & np.isfinite(st["scale"].to_numpy(dtype=float))]
    if st.empty:
        return None
    keys = setting_columns(df)
    pair_keys = [k for k in keys if k != "normalizer"]
    st = st.assign(_label=setting_labels(st, pair_keys).to_numpy())
    rank = st.groupby("_label").agg(k=("scale", "nunique"), r=("n", "sum"))
    rank = rank.sort_values(["k", "r"], ascending=False)
    # Random search over lr etc. makes every trial its own setting: per-setting lines would be
    # single points, so pool all settings per normalizer and draw a binned mean instead.
    pooled = len(rank) > MAX_SETTINGS_PER_PANEL and int(rank["k"].iloc[0]) < 3
    labels = [] if pooled else list(rank.index[:MAX_SETTINGS_PER_PANEL])
    hidden = len(rank) - len(labels)
    colors = dict(zip(labels, _colors(len(labels)), strict=False))
    norms = ordered_norms(st["normalizer"])[:MAX_NORMALIZER_PANELS]
    fig, axes = _new_fig(len(norms), bottom=0.5, legend=0.3 + 0.17 * max(len(labels), 1))
    logx = bool((st["scale"] > 0).all())
    b = best[(best["metric"] == metric) & (best["selection"] == selection)]
    # Labels depend on which columns vary in the table they were made from: match by key columns.
    b = b.drop(columns="setting").merge(st[[*keys, "_label"]].drop_duplicates(), on=keys, how="inner")
    b = b.rename(columns={"_label": "setting"})
    clipped = False
    for ax, norm in zip(axes, norms, strict=False):
        sub = st[st["normalizer"].astype(str) == norm]
        panel_vals = []
        if pooled and len(sub):
            xs = np.repeat(sub["scale"].to_numpy(dtype=float), sub["n"].to_numpy())
            ys = np.concatenate([np.asarray(v, dtype=float) for v in sub["values"]])
            color = _norm_color(norm)
            ax.scatter(xs, ys, s=7, alpha=0.3, color=color, linewidths=0)
            lab_, key_ = bin_scales(pd.Series(xs), 12)
            g = pd.DataFrame({"k": key_.to_numpy(), "x": xs, "y": ys}).groupby("k")
            agg = g.agg(
                x=("x", lambda v: float(np.exp(np.mean(np.log(v))))),
                m=("y", "mean"),
                sd=("y", "std"),
                n=("y", "size"),
            )
            se = (agg["sd"] / np.sqrt(agg["n"])).where(agg["n"] >= 2).fillna(0)
            ax.errorbar(agg["x"], agg["m"], yerr=se, color="k", lw=1.4, marker="o", ms=3, capsize=2)
            panel_vals.append(ys)
        for lab in labels:
            s = sub[sub["_label"] == lab].sort_values("scale")
            if s.empty:
                continue
            color = colors[lab]
            x = s["scale"].to_numpy(dtype=float)
            y = s["mean"].to_numpy(dtype=float)
            e = s["sem"].to_numpy(dtype=float)
            many = (s["n"] >= 2).to_numpy()
            if many.any():  # seeds as dots only where a scale has several (else the dot is the mean)
                xs = np.repeat(x[many], s["n"].to_numpy()[many])
                ys = np.concatenate([np.asarray(v, dtype=float) for v in s["values"].to_numpy()[many]])
                ax.scatter(xs, ys, s=8, alpha=0.35, color=color, linewidths=0)
                ax.errorbar(
                    x[many],
                    y[many],
                    yerr=e[many],
                    fmt="none",
                    ecolor=color,
                    lw=1.0,
                    capsize=2 if many.sum() <= 30 else 0,
                )
                panel_vals.append(ys)
            ax.plot(x, y, color=color, lw=1.3, marker="o" if len(x) <= 30 else None, ms=3)
            panel_vals.append(y)
            bb = b[(b["normalizer"].astype(str) == norm) & (b["setting"] == lab)]
            if len(bb) and np.isfinite(bb["best_scale"].iloc[0]):
                bx, by = bb["best_scale"].iloc[0], bb["mean"].iloc[0]
                ax.plot([bx], [by], marker="*", ms=12, color=color, mec="k", lw=0)
        if panel_vals:
            clipped |= _robust_ylim(ax, np.concatenate(panel_vals))
        if logx:
            _log_x(ax, sub["scale"])
        ax.set_title(norm, fontsize=10)
        ax.set_xlabel("scale c")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[lab], lw=1.5, marker="o", ms=3, label=lab) for lab in labels]
    if pooled:
        handles = [Line2D([], [], color="k", lw=1.5, marker="o", ms=3, label="binned mean ± SE (log bins)")]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=1,
        fontsize=8,
        title=(
            f"all {len(rank)} settings pooled (dots = trials)"
            if pooled
            else (f"setting ({hidden} more not shown)" if hidden > 0 else "setting")
        ),
        title_fontsize=8,
        frameon=False,
    )
    fig.suptitle(f"{dataset}: {metric} ({arrow(direction)}) vs scale, selection: {selection}", fontsize=11)
    return _save(fig, out_dir, slug("scale", dataset, metric, selection)), clipped


def overview_figure(
    df: pd.DataFrame, metrics: Sequence[str], dirs: Mapping[str, str], out_dir: Path, dataset: Any
) -> str | None:
    """All metrics vs scale (selection final) for the scale-sweep setting, one line per normalizer."""
    metrics = list(metrics)[:MAX_OVERVIEW_METRICS]
    if not metrics:
        return None
    keys = setting_columns(df)
    pair_keys = [k for k in keys if k != "normalizer"]
    # The setting with the most distinct scales (the scale sweep).
    gid = group_ids(df, pair_keys)
    top = df["scale"].groupby(gid.to_numpy()).nunique().idxmax()
    sub_df = df[gid.to_numpy() == top]
    sub_df.attrs.update(df.attrs)
    label = setting_labels(sub_df, pair_keys).iloc[0] if len(sub_df) else ""
    fig, axes = _new_fig(len(metrics), ncols=4, w=3.6, h=2.8, bottom=0.35, legend=0.35)
    drew = False
    norms = ordered_norms(sub_df["normalizer"])
    for ax, metric in zip(axes, metrics, strict=False):
        st = scale_table(sub_df, metric, "final", dirs)
        st = st[(st["n"] > 0) & np.isfinite(st["scale"].to_numpy(dtype=float))]
        for norm in norms:
            s = st[st["normalizer"].astype(str) == norm].sort_values("scale")
            if s.empty:
                continue
            ax.errorbar(
                s["scale"],
                s["mean"],
                yerr=np.nan_to_num(s["sem"].to_numpy(dtype=float)),
                lw=1.2,
                marker="o",
                ms=2.5,
                capsize=2,
                label=norm,
                color=_norm_color(norm),
            )
            drew = True
        if len(st) and (st["scale"] > 0).all():
            _log_x(ax, st["scale"])
        ax.set_title(f"{metric} ({'↑' if dirs.get(metric) == 'max' else '↓'})", fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    if not drew:
        return None
    handles, labels = [], []
    for ax in axes:
        h, lab = ax.get_legend_handles_labels()
        for hh, ll in zip(h, lab, strict=True):
            if ll not in labels:
                handles.append(hh)
                labels.append(ll)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 8), fontsize=8)
    fig.suptitle(f"{dataset}: all metrics vs scale (selection: final; {label})", fontsize=10)
    rel = f"figures/{slug('overview', dataset)}.png"
    fig.savefig(out_dir / rel, dpi=_DPI)
    return rel


def curve_panels(
    cv: pd.DataFrame,
    groups: dict[str, list[str]],
    metrics: Sequence[str],
    title: str,
    out_dir: Path,
    name: str,
    logy: Sequence[str] = (),
) -> str | None:
    """Curves per metric panel, one colour per normalizer: thin per-seed lines, thick seed mean."""
    metrics = [m for m in metrics if (cv["metric"] == m).any()]
    if not metrics:
        return None
    fig, axes = _new_fig(len(metrics), ncols=3, w=4.2, h=3.0)
    for ax, metric in zip(axes, metrics, strict=False):
        cm = cv[cv["metric"] == metric]
        for norm, ids in groups.items():
            c = cm[cm["trial_id"].isin(ids)]
            if c.empty:
                continue
            for _, one in c.groupby("trial_id", sort=False):
                one = one.sort_values("step")
                ax.plot(one["step"], one["value"], color=_norm_color(norm), lw=0.6, alpha=0.3)
            mean = c.groupby("step")["value"].mean()
            ax.plot(mean.index, mean.to_numpy(), color=_norm_color(norm), lw=1.8, label=norm)
        if metric in logy and (cm["value"] > 0).all():
            ax.set_yscale("log")
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out_dir, name)


def layer_panels(
    cv: pd.DataFrame,
    groups: dict[str, list[str]],
    prefix: str,
    title: str,
    out_dir: Path,
    name: str,
    logy: bool,
) -> str | None:
    """Per-layer diagnostics (``grad_norm/*``, ``sigma*``): one panel per normalizer, one line per layer."""
    sub = cv[cv["metric"].str.startswith(prefix)]
    if sub.empty:
        return None
    norms = [n for n, ids in groups.items() if sub["trial_id"].isin(ids).any()][:MAX_NORMALIZER_PANELS]
    if not norms:
        return None
    fig, axes = _new_fig(len(norms), ncols=3, w=4.2, h=3.0)
    for ax, norm in zip(axes, norms, strict=False):
        s = sub[sub["trial_id"].isin(groups[norm])]
        names = sorted(s["metric"].unique(), key=_natural_key)
        if len(names) > MAX_LAYERS:  # keep the ends and an even spread: first/last layers matter most
            keep = np.unique(np.linspace(0, len(names) - 1, MAX_LAYERS).round().astype(int))
            names = [names[i] for i in keep]
        import matplotlib

        cmap = matplotlib.colormaps["viridis"]
        for i, m in enumerate(names):
            mean = s[s["metric"] == m].groupby("step")["value"].mean()
            ax.plot(
                mean.index,
                mean.to_numpy(),
                lw=1.2,
                color=cmap(i / max(len(names) - 1, 1)),
                label=m.split("/", 1)[-1],
            )
        if logy and (s["value"] > 0).all():
            ax.set_yscale("log")
        ax.set_title(norm, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(title, fontsize=10)
    return _save(fig, out_dir, name)


def heatmap_figure(
    df: pd.DataFrame, metric: str, direction: str, axis: str, out_dir: Path, dataset: Any
) -> tuple[str, str] | None:
    """Mean ``metric`` (selection final) over scale × ``axis`` ("lr" or "n_dis"), one panel per normalizer.

    Other config columns are held at their most common combination so cells differ only in the
    two plotted knobs. Continuous scales / lrs are binned.
    """
    if axis == "lr":
        cols = [c for c in ("lr_g", "lr_d") if c in df.columns]
        if not cols:
            return None
        pairs = df[cols].astype(float)
        if len(pairs.drop_duplicates()) <= 12:
            lab = {k: "/".join(fmt_lr(v) for v in k) for k in pairs.drop_duplicates().itertuples(index=False)}
            ax_lab = pd.Series([lab[k] for k in pairs.itertuples(index=False)], index=pairs.index)
            ax_key = pairs[cols[-1]] + pairs[cols[0]] * 1e-6
            ax_name = "lr " + "/".join(c.removeprefix("lr_").upper() for c in cols)
        else:
            ax_lab, ax_key = bin_scales(pairs[cols[-1]], 10)
            ax_name = cols[-1]
        held = [c for c in setting_columns(df) if c not in ("dataset", "normalizer", "lr_g", "lr_d")]
    else:
        if "n_dis" not in df.columns:
            return None
        ax_lab = df["n_dis"].map(fmt_value)
        ax_key = pd.to_numeric(df["n_dis"], errors="coerce")
        ax_name = "n_dis"
        held = [c for c in setting_columns(df) if c not in ("dataset", "normalizer", "n_dis")]
    work = df.assign(_ax=ax_lab.to_numpy(), _axk=ax_key.to_numpy())
    # Hold the other knobs at the most common combination *per axis value*: the paper's n_dis 5 comes
    # with β2 0.9, so one global combination would leave a single row.
    if held:
        combo = group_ids(work, held).to_numpy()
        modal = pd.Series(combo).groupby(work["_ax"].to_numpy()).agg(lambda s: s.value_counts().index[0])
        work = work[combo == work["_ax"].map(modal).to_numpy()]
    if work["_ax"].nunique() < 2 or work["scale"].nunique() < 2:
        return None
    s_lab, s_key = bin_scales(work["scale"], 12)
    work = work.assign(_sc=s_lab.to_numpy(), _sck=s_key.to_numpy())
    val = metric_values(work, metric, "final")
    work = work.assign(_v=val.to_numpy())
    norms = ordered_norms(work["normalizer"])[:MAX_NORMALIZER_PANELS]
    xs = work.drop_duplicates("_sc").sort_values("_sck")["_sc"].tolist()
    ys = work.drop_duplicates("_ax").sort_values("_axk")["_ax"].tolist()
    rotate = len(xs) > 6
    fig, axes = _new_fig(
        len(norms), ncols=3, w=4.8, h=3.4, bottom=1.0 if rotate else 0.5, wspace=0.7, left=1.35, right=0.7
    )
    cmap = "viridis" if direction == "max" else "viridis_r"
    drew = False
    for ax, norm in zip(axes, norms, strict=False):
        w = work[work["normalizer"].astype(str) == norm]
        piv = w.groupby(["_ax", "_sc"])["_v"].mean().unstack().reindex(index=ys, columns=xs)
        arr = piv.to_numpy(dtype=float)
        if not np.isfinite(arr).any():
            ax.set_axis_off()
            continue
        im = ax.imshow(np.ma.masked_invalid(arr), aspect="auto", cmap=cmap, origin="lower")
        drew = True
        ax.set_xticks(range(len(xs)), xs, rotation=50 if rotate else 0, fontsize=7, ha="right" if rotate else "center")
        ax.set_yticks(range(len(ys)), ys, fontsize=7)
        if arr.size <= 40 and arr.shape[1] <= 8:  # numbers only where they fit
            norm_ = im.norm
            for (i, j), v in np.ndenumerate(arr):
                if np.isfinite(v):  # dark text on the bright end of viridis, white on the dark end
                    light = norm_(v) > 0.55 if direction == "max" else norm_(v) < 0.45
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7, color="k" if light else "w")
        ax.set_title(norm, fontsize=10)
        ax.set_xlabel("scale c")
        ax.set_ylabel(ax_name)
        fig.colorbar(im, ax=ax, fraction=0.046)
    if not drew:
        return None
    fig.suptitle(f"{dataset}: mean {metric} (final; brighter = better) over scale × {ax_name}", fontsize=10)
    rel = _save(fig, out_dir, slug("heatmap", dataset, metric, axis))
    return rel, ax_name
