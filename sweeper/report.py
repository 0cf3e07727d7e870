"""Sweep report: Markdown + self-contained HTML + figures + ``best_scales.parquet``.

Why one module that renders both formats from one list of blocks: the Markdown is what lands in
git/MLflow and diffs well, the HTML is what a researcher opens; they must never disagree. All
statistics come from :mod:`sweeper.analysis` (pure); this module only chooses what to show, caps
table sizes so 10k-trial sweeps stay readable, and draws figures with matplotlib's Agg backend
(imported lazily so ``import sweeper.report`` stays cheap and works headless).

Robustness rule: a report is most needed when a sweep went wrong, so every section is built
defensively — missing metrics, NaN, a single trial, no curves — produce a short note, not a crash.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweeper import analysis as an

__all__ = ["write_report", "pick_primary_metric"]

MAX_TABLE_ROWS = 40  # rows per table in the report; the full data is in best_scales.parquet
MAX_SETTINGS_PER_PANEL = 4
MAX_NORMALIZER_PANELS = 9
MAX_DATASET_FIGURES = 6
MAX_OVERVIEW_METRICS = 8
MAX_LAYERS = 12
_PRIMARY_PREFERENCE = (
    "fid",
    "is",
    "mode_coverage",
    "kid",
    "hq_fraction",
    "modes_captured",
    "mode_kl",
    "fid_small",
)
_SELECTION_TEXT = {
    "final": "final (value at the end of training)",
    "best": "best (best value during training, paper Fig. 8 protocol)",
}
_DPI = 90


# --------------------------------------------------------------------------------------------------
# A tiny document model rendered to Markdown and HTML
# --------------------------------------------------------------------------------------------------
@dataclass
class _Block:
    kind: str  # heading | text | table | figure | bullets
    text: str = ""
    level: int = 2
    table: pd.DataFrame | None = None
    note: str = ""
    items: list[str] = field(default_factory=list)
    path: str = ""


class _Doc:
    """Blocks in reading order; ``**bold**`` and ``code`` spans are the only inline markup."""

    def __init__(self) -> None:
        self.blocks: list[_Block] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(_Block("heading", text=text, level=level))

    def text(self, text: str) -> None:
        self.blocks.append(_Block("text", text=text))

    def bullets(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(_Block("bullets", items=list(items)))

    def table(self, df: pd.DataFrame, caption: str = "", max_rows: int = MAX_TABLE_ROWS) -> None:
        note = ""
        if len(df) > max_rows:
            note = f"… {len(df) - max_rows} more rows not shown (see best_scales.parquet / the trial files)."
            df = df.head(max_rows)
        self.blocks.append(_Block("table", text=caption, table=df, note=note))

    def figure(self, rel_path: str, caption: str) -> None:
        self.blocks.append(_Block("figure", text=caption, path=rel_path))

    # ---- Markdown
    def markdown(self) -> str:
        out: list[str] = []
        for b in self.blocks:
            if b.kind == "heading":
                out.append(f"{'#' * b.level} {b.text}\n")
            elif b.kind == "text":
                out.append(b.text + "\n")
            elif b.kind == "bullets":
                out.append("\n".join(f"- {i}" for i in b.items) + "\n")
            elif b.kind == "table" and b.table is not None:
                if b.text:
                    out.append(f"*{b.text}*\n")
                out.append(_md_table(b.table))
                if b.note:
                    out.append(b.note + "\n")
            elif b.kind == "figure":
                out.append(f"![{b.text}]({b.path})\n\n*{b.text}*\n")
        return "\n".join(out)

    # ---- HTML
    def html(self, title: str, out_dir: Path) -> str:
        body: list[str] = []
        toc: list[str] = []
        for i, b in enumerate(self.blocks):
            if b.kind == "heading":
                anchor = f"s{i}"
                if b.level == 2:
                    toc.append(f'<a href="#{anchor}">{html.escape(b.text)}</a>')
                body.append(f'<h{b.level} id="{anchor}">{_inline(b.text)}</h{b.level}>')
            elif b.kind == "text":
                body.append(f"<p>{_inline(b.text)}</p>")
            elif b.kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
            elif b.kind == "table" and b.table is not None:
                if b.text:  # a paragraph, not <caption>: captions wrap to the table's (narrow) width
                    body.append(f'<p class="cap">{_inline(b.text)}</p>')
                body.append(f'<div class="tw"><table>{_html_table(b.table)}</table></div>')
                if b.note:
                    body.append(f'<p class="note">{_inline(b.note)}</p>')
            elif b.kind == "figure":
                p = out_dir / b.path
                if p.exists():
                    data = base64.b64encode(p.read_bytes()).decode("ascii")
                    body.append(
                        f'<figure><img alt="{html.escape(b.text)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_inline(b.text)}</figcaption></figure>"
                    )
        nav = f"<nav>{' · '.join(toc)}</nav>" if toc else ""
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><main>{nav}{''.join(body)}</main></body></html>\n"
        )


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1d2329;background:#fff;
  margin:0;line-height:1.45}
main{max-width:1300px;margin:0 auto;padding:1.2rem 1rem 4rem}
h1{font-size:1.7rem;margin:.4rem 0 .8rem;border-bottom:2px solid #2b6cb0;padding-bottom:.3rem}
h2{font-size:1.3rem;margin-top:2.2rem;border-bottom:1px solid #d5dbe1;padding-bottom:.2rem;color:#1a4971}
h3{font-size:1.08rem;margin-top:1.4rem;color:#26303a}
nav{font-size:.85rem;background:#f3f6f9;border:1px solid #dde3ea;border-radius:6px;padding:.5rem .8rem;
  margin-bottom:1rem}
nav a{color:#2b6cb0;text-decoration:none;white-space:nowrap}
.tw{overflow-x:auto;margin:.4rem 0 1rem}
table{border-collapse:collapse;font-size:.82rem;min-width:40%}
.cap{font-style:italic;color:#4a5561;margin:.8rem 0 .3rem;font-size:.9rem}
th,td{border:1px solid #d5dbe1;padding:.26rem .48rem;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#eaf0f6;font-weight:600;position:sticky;top:0}
tbody tr:nth-child(even){background:#f8fafc}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{background:#f1f3f5;padding:0 .25rem;border-radius:3px;font-size:.92em}
figure{margin:1rem 0 1.6rem}
figure img{max-width:100%;height:auto;border:1px solid #e2e6ea;border-radius:4px}
figcaption{font-size:.85rem;color:#4a5561;margin-top:.25rem}
.note{font-size:.82rem;color:#6b7682;margin-top:-.6rem}
ul{padding-left:1.3rem}
li{margin:.2rem 0}
"""


def _inline(text: str) -> str:
    s = html.escape(str(text))
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<i>\1</i>", s)
    return s


def _cell_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        x = float(v)
        return "n/a" if not math.isfinite(x) else f"{x:.4g}"
    if isinstance(v, list | tuple | np.ndarray):
        return ", ".join(_cell_text(x) for x in v)
    return str(v)


def _md_table(df: pd.DataFrame) -> str:
    if df.empty and len(df.columns) == 0:
        return "(empty)\n"
    idx = df.index.name is not None
    headers = ([str(df.index.name)] if idx else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in headers) + " |", "|" + "---|" * len(headers)]
    for i, row in zip(df.index, df.itertuples(index=False), strict=True):
        cells = ([_cell_text(i)] if idx else []) + [_cell_text(v) for v in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _html_table(df: pd.DataFrame) -> str:
    idx = df.index.name is not None
    headers = ([str(df.index.name)] if idx else []) + [str(c) for c in df.columns]
    head = "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead>"
    rows = []
    for i, row in zip(df.index, df.itertuples(index=False), strict=True):
        vals = ([i] if idx else []) + list(row)
        tds = []
        for v in vals:
            cls = (
                ' class="num"'
                if isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
                else ""
            )
            tds.append(f"<td{cls}>{_inline(_cell_text(v))}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    return head + "<tbody>" + "".join(rows) + "</tbody>"


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------
def pick_primary_metric(trials: pd.DataFrame, primary_metric: str | None = None) -> str | None:
    """The metric reported first: the caller's choice, else the first of a preference list with data.

    Why a preference list: FID/IS are what the paper's tables lead with; toy sweeps lead with mode
    coverage. A metric with no finite value anywhere is skipped so the report does not open empty.
    """
    names = an.metric_names(trials)
    if primary_metric:
        return primary_metric

    def has_data(m: str) -> bool:
        for sel in an.SELECTIONS:
            c = an.metric_column(m, sel)
            if c in trials.columns and np.isfinite(pd.to_numeric(trials[c], errors="coerce")).any():
                return True
        return False

    for m in [*_PRIMARY_PREFERENCE, *names]:
        if m in names and has_data(m):
            return m
    return names[0] if names else None


def _slug(*parts: Any) -> str:
    s = "_".join(str(p) for p in parts)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-")[:120] or "fig"


def _arrow(direction: str) -> str:
    return "↑ higher is better" if direction == "max" else "↓ lower is better"


def _natural_key(s: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _safe(section: str, doc: _Doc, fn: Callable[[], None]) -> None:
    """Run one report section; a bug in one section must not cost the whole report."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - deliberately broad: report the failure in the report
        doc.text(f"*(section “{section}” could not be generated: {type(exc).__name__}: {exc})*")


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


def _ordered_norms(values: Any) -> list[str]:
    uniq = list(dict.fromkeys(str(v) for v in values))
    return sorted(uniq, key=lambda n: (_NORM_ORDER.index(n) if n in _NORM_ORDER else len(_NORM_ORDER), n))


def _norm_color(norm: str) -> Any:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    i = _NORM_ORDER.index(norm) if norm in _NORM_ORDER else zlib.crc32(norm.encode()) % 10
    return cmap(i % 10)


def _best_table_rows(best: pd.DataFrame) -> pd.DataFrame:
    """Readable best-scale table: scale-sweep settings first (most scales), then by normalizer."""
    if best.empty:
        return pd.DataFrame()
    b = best.copy()
    b["_order"] = -b["n_scales"]
    rank = {n: i for i, n in enumerate(_ordered_norms(b["normalizer"]))}
    b["_norm"] = b["normalizer"].astype(str).map(rank)
    b = b.sort_values(["dataset", "_order", "setting", "_norm"], kind="stable", na_position="last")
    out = pd.DataFrame(
        {
            "dataset": b["dataset"].astype(str),
            "setting": b["setting"],
            "normalizer": b["normalizer"].astype(str),
            "best c": [an.format_scale(x) for x in b["best_scale"]],
            "mean ± SE": [an.format_mean_sem(m, s) for m, s in zip(b["mean"], b["sem"], strict=True)],
            "seeds": b["n_seeds"].astype(int),
            "good c": [
                f"{g}/{n}" if n else "—"
                for g, n in zip(b["n_good"].astype(int), b["n_scales"].astype(int), strict=True)
            ],
            "modes": [an.format_modes(m, max_modes=3) for m in b["modes"]],
            "P(best)": [
                f"{p:.2f}" if isinstance(p, float) and math.isfinite(p) else "n/a" for p in b["p_best"]
            ],
        }
    )
    return out.reset_index(drop=True)


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


def _scale_figure(
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

    st = an.scale_table(df, metric, selection, {metric: direction})
    st = st[(st["n"] > 0) & np.isfinite(st["scale"].to_numpy(dtype=float))]
    if st.empty:
        return None
    keys = an.setting_columns(df)
    pair_keys = [k for k in keys if k != "normalizer"]
    st = st.assign(_label=an.setting_labels(st, pair_keys).to_numpy())
    rank = st.groupby("_label").agg(k=("scale", "nunique"), r=("n", "sum"))
    rank = rank.sort_values(["k", "r"], ascending=False)
    # Random search over lr etc. makes every trial its own setting: per-setting lines would be
    # single points, so pool all settings per normalizer and draw a binned mean instead.
    pooled = len(rank) > MAX_SETTINGS_PER_PANEL and int(rank["k"].iloc[0]) < 3
    labels = [] if pooled else list(rank.index[:MAX_SETTINGS_PER_PANEL])
    hidden = len(rank) - len(labels)
    colors = dict(zip(labels, _colors(len(labels)), strict=False))
    norms = _ordered_norms(st["normalizer"])[:MAX_NORMALIZER_PANELS]
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
            lab_, key_ = an.bin_scales(pd.Series(xs), 12)
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
    fig.suptitle(f"{dataset}: {metric} ({_arrow(direction)}) vs scale, selection: {selection}", fontsize=11)
    return _save(fig, out_dir, _slug("scale", dataset, metric, selection)), clipped


def _overview_figure(
    df: pd.DataFrame, metrics: Sequence[str], dirs: Mapping[str, str], out_dir: Path, dataset: Any
) -> str | None:
    """All metrics vs scale (selection final) for the scale-sweep setting, one line per normalizer."""
    metrics = list(metrics)[:MAX_OVERVIEW_METRICS]
    if not metrics:
        return None
    keys = an.setting_columns(df)
    pair_keys = [k for k in keys if k != "normalizer"]
    # The setting with the most distinct scales (the scale sweep).
    gid = an._group_ids(df, pair_keys)
    top = df["scale"].groupby(gid.to_numpy()).nunique().idxmax()
    sub_df = df[gid.to_numpy() == top]
    sub_df.attrs.update(df.attrs)
    label = an.setting_labels(sub_df, pair_keys).iloc[0] if len(sub_df) else ""
    fig, axes = _new_fig(len(metrics), ncols=4, w=3.6, h=2.8, bottom=0.35, legend=0.35)
    drew = False
    norms = _ordered_norms(sub_df["normalizer"])
    for ax, metric in zip(axes, metrics, strict=False):
        st = an.scale_table(sub_df, metric, "final", dirs)
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
    rel = f"figures/{_slug('overview', dataset)}.png"
    fig.savefig(out_dir / rel, dpi=_DPI)
    return rel


def _curve_panels(
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


def _layer_panels(
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


def _heatmap_figure(
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
            lab = {
                k: "/".join(an._fmt_lr(v) for v in k) for k in pairs.drop_duplicates().itertuples(index=False)
            }
            ax_lab = pd.Series([lab[k] for k in pairs.itertuples(index=False)], index=pairs.index)
            ax_key = pairs[cols[-1]] + pairs[cols[0]] * 1e-6
            ax_name = "lr " + "/".join(c.removeprefix("lr_").upper() for c in cols)
        else:
            ax_lab, ax_key = an.bin_scales(pairs[cols[-1]], 10)
            ax_name = cols[-1]
        held = [c for c in an.setting_columns(df) if c not in ("dataset", "normalizer", "lr_g", "lr_d")]
    else:
        if "n_dis" not in df.columns:
            return None
        ax_lab = df["n_dis"].map(an._fmt_value)
        ax_key = pd.to_numeric(df["n_dis"], errors="coerce")
        ax_name = "n_dis"
        held = [c for c in an.setting_columns(df) if c not in ("dataset", "normalizer", "n_dis")]
    work = df.assign(_ax=ax_lab.to_numpy(), _axk=ax_key.to_numpy())
    # Hold the other knobs at the most common combination *per axis value*: the paper's n_dis 5 comes
    # with β2 0.9, so one global combination would leave a single row.
    if held:
        combo = an._group_ids(work, held).to_numpy()
        modal = pd.Series(combo).groupby(work["_ax"].to_numpy()).agg(lambda s: s.value_counts().index[0])
        work = work[combo == work["_ax"].map(modal).to_numpy()]
    if work["_ax"].nunique() < 2 or work["scale"].nunique() < 2:
        return None
    s_lab, s_key = an.bin_scales(work["scale"], 12)
    work = work.assign(_sc=s_lab.to_numpy(), _sck=s_key.to_numpy())
    val = an._values(work, metric, "final")
    work = work.assign(_v=val.to_numpy())
    norms = _ordered_norms(work["normalizer"])[:MAX_NORMALIZER_PANELS]
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
        ax.set_xticks(
            range(len(xs)), xs, rotation=50 if rotate else 0, fontsize=7, ha="right" if rotate else "center"
        )
        ax.set_yticks(range(len(ys)), ys, fontsize=7)
        if arr.size <= 40 and arr.shape[1] <= 8:  # numbers only where they fit
            norm_ = im.norm
            for (i, j), v in np.ndenumerate(arr):
                if np.isfinite(v):  # dark text on the bright end of viridis, white on the dark end
                    light = norm_(v) > 0.55 if direction == "max" else norm_(v) < 0.45
                    ax.text(
                        j, i, f"{v:.3g}", ha="center", va="center", fontsize=7, color="k" if light else "w"
                    )
        ax.set_title(norm, fontsize=10)
        ax.set_xlabel("scale c")
        ax.set_ylabel(ax_name)
        fig.colorbar(im, ax=ax, fraction=0.046)
    if not drew:
        return None
    fig.suptitle(f"{dataset}: mean {metric} (final; brighter = better) over scale × {ax_name}", fontsize=10)
    rel = _save(fig, out_dir, _slug("heatmap", dataset, metric, axis))
    return rel, ax_name


# --------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------
def _best_parquet(best: pd.DataFrame, path: Path) -> None:
    """Write best_scales.parquet with explicit list types so empty tables keep their schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    list_f = pa.list_(pa.float64())
    fixed: dict[str, pa.DataType] = {
        "dataset": pa.string(),
        "setting": pa.string(),
        "normalizer": pa.string(),
        "metric": pa.string(),
        "selection": pa.string(),
        "direction": pa.string(),
        "best_scale": pa.float64(),
        "mean": pa.float64(),
        "sem": pa.float64(),
        "std": pa.float64(),
        "n_seeds": pa.int64(),
        "good_scales": list_f,
        "n_good": pa.int64(),
        "good_rule": pa.string(),
        "modes": pa.list_(list_f),
        "n_modes": pa.int64(),
        "p_best": pa.float64(),
        "scales": list_f,
        "p_best_by_scale": list_f,
        "n_scales": pa.int64(),
        "best_trial_ids": pa.list_(pa.string()),
    }
    arrays, names = [], []
    for c in best.columns:
        col = best[c]
        if c in fixed:
            typ = fixed[c]
            if pa.types.is_string(typ):
                vals = [
                    None if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v) for v in col
                ]
            elif pa.types.is_integer(typ):
                vals = [
                    int(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else None
                    for v in col
                ]
            else:
                vals = col.tolist()
            arrays.append(pa.array(vals, type=typ))
        else:
            try:
                arrays.append(pa.array(col.tolist(), from_pandas=True))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                arrays.append(pa.array(col.astype(str).tolist(), type=pa.string()))
        names.append(str(c))
    pq.write_table(pa.Table.from_arrays(arrays, names=names), path)


def write_report(
    trials: pd.DataFrame,
    curves: pd.DataFrame | None,
    out_dir: Path,
    *,
    directions: dict[str, str] | None = None,
    title: str = "",
    primary_metric: str | None = None,
) -> Path:
    """Write ``report.md``, ``report.html``, ``best_scales.parquet`` and ``figures/*.png``; return report.md.

    ``trials``: trial-summary rows (v1 columns, any number of attempts); ``curves``: long
    (trial_id, step, metric, value) or None. ``directions`` overrides metric directions;
    ``primary_metric`` is reported first (default: see :func:`pick_primary_metric`).
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # a re-run must not embed stale figures
        old.unlink()
    n_attempts = len(trials)
    df = an.latest_attempts(trials)
    metrics = an.metric_names(df)
    primary = pick_primary_metric(df, primary_metric)
    if primary and primary not in metrics:
        metrics_note = (
            f"primary metric `{primary}` has no `final_{primary}`/`best_{primary}` column in the trials."
        )
        primary_has = False
    else:
        metrics_note = ""
        primary_has = primary is not None
    if primary_has:
        metrics = [primary, *[m for m in metrics if m != primary]]
    dirs = an.resolve_directions(metrics, directions)
    best = (
        an.best_scales(df, metrics, an.SELECTIONS, dirs)
        if len(df) and metrics
        else an.best_scales(df, [], ())
    )
    _best_parquet(best, out_dir / "best_scales.parquet")

    doc = _Doc()
    title = title or (
        f"Sweep report: {df['sweep'].dropna().iloc[0]}"
        if "sweep" in df and df["sweep"].notna().any()
        else "Sweep report"
    )
    doc.heading(title, 1)
    _header(doc, df, n_attempts, metrics, dirs, primary if primary_has else None, metrics_note)
    if df.empty or not metrics:
        doc.text("No trials with metrics yet: nothing to analyse.")
    else:
        datasets = list(dict.fromkeys(df["dataset"].tolist()))
        if primary_has:
            _safe(
                "primary metric",
                doc,
                lambda: _primary_section(doc, df, best, primary, dirs, out_dir, datasets),
            )
        _safe("Table 1", doc, lambda: _table1_section(doc, df, metrics, dirs))
        paired_all: list[pd.DataFrame] = []
        _safe("SN vs BSSN", doc, lambda: _paired_section(doc, df, metrics, dirs, best, paired_all))
        _safe("seed warnings", doc, lambda: _warnings_section(doc, best, paired_all))
        _safe(
            "training curves",
            doc,
            lambda: _curves_section(doc, df, curves, best, primary, dirs, out_dir, datasets),
        )
        if primary_has:
            _safe("heatmaps", doc, lambda: _heatmap_section(doc, df, primary, dirs, out_dir, datasets))
        _safe(
            "other metrics",
            doc,
            lambda: _other_metrics_section(doc, df, best, metrics, primary, dirs, out_dir, datasets),
        )
    _safe("failures", doc, lambda: _failure_section(doc, df))
    doc.heading("Method notes", 2)
    doc.bullets(
        [
            "Statistics use the latest attempt of each trial; values count for completed, diverged and "
            "stopped-early trials when finite; failed trials only enter the failure table.",
            "Mean ± SE over seeds: SE = sd(ddof=1)/√n; no ± when n = 1.",
            "Good scales: " + an.GOOD_SCALE_RULE + ".",
            "P(best): selection-aware bootstrap — seeds resampled with replacement within every scale, "
            "the best "
            "scale re-selected each time (B = 1000, seeded); the share of wins per scale.",
            "Best scales are selected on the same data they are reported on (as in the paper), so "
            "best-scale means "
            "are optimistic.",
        ]
    )
    md_path = out_dir / "report.md"
    md_path.write_text(doc.markdown(), encoding="utf-8")
    (out_dir / "report.html").write_text(doc.html(title, out_dir), encoding="utf-8")
    return md_path


def _header(
    doc: _Doc,
    df: pd.DataFrame,
    n_attempts: int,
    metrics: list[str],
    dirs: Mapping[str, str],
    primary: str | None,
    note: str,
) -> None:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    counts = df["status"].value_counts()
    status_row = {s: int(counts.get(s, 0)) for s in an.STATUSES}
    for s, c in counts.items():
        if s not in status_row:
            status_row[str(s)] = int(c)
    status_row["total"] = int(len(df))
    doc.text(
        f"Generated {now}. {len(df)} trials ({n_attempts} attempts incl. retries); "
        f"{df['dataset'].nunique(dropna=False)} dataset(s), "
        f"{df['normalizer'].nunique(dropna=False)} normalizer(s), "
        f"{df['scale'].nunique()} distinct scale(s), {df['seed'].nunique()} seed(s)."
    )
    doc.table(pd.DataFrame([status_row]), "Trials by status (latest attempt per trial)")
    if metrics:
        doc.text(
            "Metrics: "
            + ", ".join(f"`{m}` ({'↑' if dirs[m] == 'max' else '↓'})" for m in metrics)
            + (f". Primary metric: **{primary}**." if primary else ".")
        )
    if note:
        doc.text(f"Note: {note}")
    if "fid_small" in metrics:
        doc.text(
            "`fid_small` is an FID from a small seeded feature extractor: not comparable to published FIDs."
        )


def _primary_section(
    doc: _Doc,
    df: pd.DataFrame,
    best: pd.DataFrame,
    primary: str,
    dirs: Mapping[str, str],
    out_dir: Path,
    datasets: list[Any],
) -> None:
    d = dirs[primary]
    doc.heading(f"Primary metric: {primary} ({_arrow(d)})", 2)
    for sel in an.SELECTIONS:
        b = best[(best["metric"] == primary) & (best["selection"] == sel)]
        doc.table(
            _best_table_rows(b),
            f"Best scale per setting and normalizer: {primary}, selection: {_SELECTION_TEXT[sel]}",
        )
    for ds in datasets[:MAX_DATASET_FIGURES]:
        sub = df[df["dataset"] == ds] if ds == ds else df[df["dataset"].isna()]
        sub.attrs.update(df.attrs)
        for sel in an.SELECTIONS:
            res = _scale_figure(
                sub, primary, sel, d, best[best["dataset"].astype(str) == str(ds)], out_dir, ds
            )
            if res:
                rel, clipped = res
                doc.figure(
                    rel,
                    f"{ds}: {primary} vs scale (selection: {sel}); dots = seeds, line = mean, bars = ± SE, "
                    "star = best scale"
                    + (
                        "; y axis clipped to the bulk of the data (outliers, e.g. diverged runs, "
                        "lie beyond it)"
                        if clipped
                        else ""
                    ),
                )


def _table1_section(doc: _Doc, df: pd.DataFrame, metrics: list[str], dirs: Mapping[str, str]) -> None:
    if not df["normalizer"].isin(["sn", "bsn"]).any():
        return
    doc.heading("Table 1 layout (SN, SSN, BSN, BSSN)", 2)
    doc.text(
        "SN/BSN = scale c = 1; SSN/BSSN = the best scale, chosen separately per metric on the same runs "
        "(paper §5). Cells: mean ± SE over seeds (c = scale); **bold** = best in column; n/a = not run."
    )
    for sel in an.SELECTIONS:
        vals = an.table1_values(df, metrics, sel, dirs)
        t = an.table1(values=vals)
        if t.shape[1] == 0:
            doc.text(f"(selection {sel}: no SN/BSN values)")
            continue
        settings = vals.drop_duplicates("dataset")[["dataset", "setting"]]
        if t.shape[1] <= 8:
            where = "; ".join(f"{r.dataset}: {r.setting}" for r in settings.itertuples())
            doc.table(t, f"Table 1, selection: {_SELECTION_TEXT[sel]} — setting per dataset: {where}")
            continue
        for r in settings.itertuples():  # too wide for one table: one per dataset
            cols = [c for c in t.columns if c.startswith(f"{r.dataset} ")]
            if cols:
                doc.table(
                    t[cols], f"Table 1, {r.dataset}, selection: {_SELECTION_TEXT[sel]} — setting: {r.setting}"
                )


def _paired_section(
    doc: _Doc,
    df: pd.DataFrame,
    metrics: list[str],
    dirs: Mapping[str, str],
    best: pd.DataFrame,
    acc: list[pd.DataFrame],
) -> None:
    norms = set(df["normalizer"].astype(str))
    if not {"sn", "bsn"} <= norms:
        return
    doc.heading("Paired difference: SN vs BSSN (positive = BSSN better)", 2)
    doc.text(
        "Differences are paired by seed within a setting: (BSN − SN) for ↑ metrics and (SN − BSN) for ↓ "
        "metrics, so **positive always means BSN/BSSN is better**. 95% t interval over the paired seeds; "
        "the sign test is exact (two-sided). Tuned rows where both best scales are 1 are omitted "
        "(they repeat the c = 1 row)."
    )
    rows = []
    for metric in metrics:
        for sel in an.SELECTIONS:
            r = an.compare_sn_bssn(df, metric, sel, dirs, best=best)
            if r.empty or "n_pairs" not in r:
                continue
            acc.append(r)
            # A tuned row where both best scales are 1 repeats the c = 1 row exactly.
            same = (r["comparison"] != "SN vs BSN (c=1)") & (r["a_scale"] == 1.0) & (r["b_scale"] == 1.0)
            r = r[~same]
            for x in r.itertuples():
                rows.append(
                    {
                        "dataset": x.dataset if "dataset" in r.columns else "",
                        "setting": x.setting,
                        "metric": metric,
                        "selection": sel,
                        "comparison": (
                            "SN vs BSN, c=1"
                            if x.comparison == "SN vs BSN (c=1)"
                            else f"SSN c={an.format_scale(x.a_scale)} vs BSSN c={an.format_scale(x.b_scale)}"
                        ),
                        "seeds": int(x.n_pairs),
                        "SN": f"{x.a_mean:.4g}",
                        "BSN": f"{x.b_mean:.4g}",
                        "Δ": f"{x.mean_diff:+.3g}",
                        "95% CI": f"[{x.ci_low:+.2g}, {x.ci_high:+.2g}]"
                        if math.isfinite(x.ci_low)
                        else "n/a",
                        "p (t)": f"{x.p_value:.2g}" if math.isfinite(x.p_value) else "n/a",
                        "p (sign)": f"{x.sign_test_p:.3g}" if math.isfinite(x.sign_test_p) else "n/a",
                    }
                )
    if rows:
        t = pd.DataFrame(rows)
        t["_p"] = t["metric"].map({m: i for i, m in enumerate(metrics)})
        t["_s"] = t["selection"].map({"final": 0, "best": 1})
        t = t.sort_values(["_p", "_s", "dataset", "setting", "comparison"], kind="stable").drop(
            columns=["_p", "_s"]
        )
        if t["dataset"].nunique() == 1:
            t = t.drop(columns="dataset")
        doc.table(
            t.reset_index(drop=True),
            "Paired SN vs BSN/BSSN differences (selection per row); Δ > 0 = BSN/BSSN better",
        )
    else:
        doc.text("No seeds were run under both SN and BSN in the same setting at matching scales.")


def _warnings_section(doc: _Doc, best: pd.DataFrame, paired: list[pd.DataFrame]) -> None:
    p = pd.concat(paired, ignore_index=True) if paired else None
    w = an.seed_warnings(best, p)
    doc.heading("Seed warnings", 2)
    doc.bullets(w) if w else doc.text("No warnings: seed counts support the comparisons shown.")


def _best_configs(
    best: pd.DataFrame, df: pd.DataFrame, primary: str | None, dataset: Any
) -> dict[str, list[str]]:
    """Trial ids of the best (setting, scale) per normalizer for ``primary`` (selection final)."""
    if primary is None or best.empty:
        return {}
    b = best[(best["metric"] == primary) & (best["selection"] == "final") & (best["n_seeds"] > 0)]
    b = b[b["dataset"].astype(str) == str(dataset)]
    out: dict[str, list[str]] = {}
    rank = {n: i for i, n in enumerate(_ordered_norms(b["normalizer"]))}
    b = b.assign(_r=b["normalizer"].astype(str).map(rank)).sort_values("_r", kind="stable")
    for norm, sub in b.groupby(b["normalizer"].astype(str), sort=False):
        asc = sub["direction"].iloc[0] == "min"
        top = sub.sort_values("mean", ascending=asc, kind="stable").iloc[0]
        out[norm] = list(top["best_trial_ids"])
        if len(out) >= MAX_NORMALIZER_PANELS:
            break
    return out


def _curves_section(
    doc: _Doc,
    df: pd.DataFrame,
    curves: pd.DataFrame | None,
    best: pd.DataFrame,
    primary: str | None,
    dirs: Mapping[str, str],
    out_dir: Path,
    datasets: list[Any],
) -> None:
    doc.heading("Training curves of the best configuration per normalizer", 2)
    if curves is None or curves.empty or not {"trial_id", "step", "metric", "value"} <= set(curves.columns):
        doc.text("No training curves were given.")
        return
    groups_by_ds = {ds: _best_configs(best, df, primary, ds) for ds in datasets[:MAX_DATASET_FIGURES]}
    all_ids = {i for g in groups_by_ds.values() for ids in g.values() for i in ids}
    if not all_ids:
        doc.text("No best configuration with curves.")
        return
    tid = curves["trial_id"]
    # Filter 5M-row curve tables on the few best trials first; everything after works on that slice.
    cv = curves[tid.isin(all_ids) if pd.api.types.is_string_dtype(tid) else tid.astype(str).isin(all_ids)]
    cv = cv.assign(
        trial_id=cv["trial_id"].astype(str),
        metric=cv["metric"].astype(str),
        value=pd.to_numeric(cv["value"], errors="coerce"),
    )
    cv = cv[np.isfinite(cv["value"].to_numpy(dtype=float))]
    if cv.empty:
        doc.text("The curves hold no rows for the best configurations.")
        return
    doc.text(
        f"Best configuration = the (setting, scale) with the best mean final {primary} per normalizer; "
        "thin lines = "
        "seeds, thick = seed mean."
    )
    for ds, groups in groups_by_ds.items():
        if not groups:
            continue
        ids = {i for v in groups.values() for i in v}
        c = cv[cv["trial_id"].isin(ids)]
        present = set(c["metric"].unique())
        mets = [m for m in [primary, "loss_d", "loss_g"] if m in present]
        mets += [m for m in ("mode_coverage", "fid", "is") if m not in mets and m in present][:1]
        rel = _curve_panels(
            c, groups, mets, f"{ds}: training curves of best configs", out_dir, _slug("curves", ds)
        )
        if rel:
            doc.figure(rel, f"{ds}: {', '.join(mets)} over training (best config per normalizer)")
        rel = _layer_panels(
            c,
            groups,
            "grad_norm/",
            f"{ds}: gradient norms per layer (log y)",
            out_dir,
            _slug("gradnorm", ds),
            logy=True,
        )
        if rel:
            doc.figure(rel, f"{ds}: discriminator gradient norms per layer (`grad_norm/*`), seed mean")
        rel = _layer_panels(
            c, groups, "sigma", f"{ds}: per-layer spectral norms", out_dir, _slug("sigma", ds), logy=False
        )
        if rel:
            doc.figure(
                rel, f"{ds}: per-layer spectral norm σ of the normalized weights (`sigma*`), seed mean"
            )


def _heatmap_section(
    doc: _Doc, df: pd.DataFrame, primary: str, dirs: Mapping[str, str], out_dir: Path, datasets: list[Any]
) -> None:
    figs = []
    for ds in datasets[:MAX_DATASET_FIGURES]:
        sub = df[df["dataset"] == ds]
        sub.attrs.update(df.attrs)
        for axis in ("lr", "n_dis"):
            r = _heatmap_figure(sub, primary, dirs[primary], axis, out_dir, ds)
            if r:
                figs.append((ds, axis, r))
    if not figs:
        return
    doc.heading("Scale × optimizer heatmaps", 2)
    doc.text(
        "Only drawn where both the scale and the optimizer knob took more than one value. "
        "Other config columns are "
        "held at their most common combination per row; empty cells were not run. Colour: brighter = better."
    )
    for ds, _axis, (rel, name) in figs:
        doc.figure(rel, f"{ds}: mean final {primary} over scale × {name}")


def _other_metrics_section(
    doc: _Doc,
    df: pd.DataFrame,
    best: pd.DataFrame,
    metrics: list[str],
    primary: str | None,
    dirs: Mapping[str, str],
    out_dir: Path,
    datasets: list[Any],
) -> None:
    others = [m for m in metrics if m != primary]
    if not others and len(metrics) < 2:
        return
    doc.heading("All metrics", 2)
    for ds in datasets[:MAX_DATASET_FIGURES]:
        sub = df[df["dataset"] == ds]
        sub.attrs.update(df.attrs)
        if sub.empty:
            continue
        rel = _overview_figure(sub, metrics, dirs, out_dir, ds)
        if rel:
            doc.figure(rel, f"{ds}: every metric vs scale (selection final) for the scale-sweep setting")
    for m in others:
        doc.heading(f"{m} ({_arrow(dirs[m])})", 3)
        for sel in an.SELECTIONS:
            b = best[(best["metric"] == m) & (best["selection"] == sel)]
            if b.empty or not (b["n_seeds"] > 0).any():
                doc.text(f"No values for `{m}` (selection {sel}).")
                continue
            doc.table(_best_table_rows(b), f"Best scale: {m}, selection: {_SELECTION_TEXT[sel]}", max_rows=20)


def _failure_section(doc: _Doc, df: pd.DataFrame) -> None:
    doc.heading("Failures and divergence", 2)
    if df.empty:
        doc.text("No trials.")
        return
    doc.text(
        "Rates over latest attempts, per normalizer and scale, pooled over the other settings; "
        "failed trials are "
        "excluded from every mean above, diverged ones are included when their metric is finite."
    )
    ft = an.failure_table(df, ["dataset", "normalizer"], max_scales=15)
    bad = ft[(ft["failed"] + ft["diverged"] + ft["other"]) > 0]
    view = ft if len(ft) <= MAX_TABLE_ROWS else bad
    if view.empty:
        doc.text(f"No failed or diverged trials among {len(df)}.")
    else:
        t = view.assign(
            scale=view["scale"].map(lambda s: an.format_scale(s) if isinstance(s, float) else str(s)),
            failure_rate=view["failure_rate"].map(lambda x: f"{x:.0%}"),
            divergence_rate=view["divergence_rate"].map(lambda x: f"{x:.0%}"),
        )
        if not t["other"].any():
            t = t.drop(columns="other")
        cap = "Failure and divergence rates per scale" + (
            "" if view is ft else " (only rows with failures/divergence)"
        )
        doc.table(t.reset_index(drop=True), cap)
    if "error" in df.columns:
        errs = df.loc[df["status"] == "failed", "error"].dropna().astype(str)
        if len(errs):
            top = (
                errs.map(lambda e: e.strip().splitlines()[-1][:160] if e.strip() else "(empty)")
                .value_counts()
                .head(5)
            )
            doc.bullets([f"{n}× `{e}`" for e, n in top.items()])
