"""Sweep report: Markdown + self-contained HTML + figures + ``best_scales.parquet``.

Why one module that renders both formats from one list of blocks: the Markdown is what lands in
git/MLflow and diffs well, the HTML is what a researcher opens; they must never disagree. All
statistics come from :mod:`sweeper.analysis` (pure); this module only chooses what to show, caps
table sizes so 10k-trial sweeps stay readable, and draws figures with matplotlib's Agg backend
(imported lazily so ``import sweeper.analysis.report`` stays cheap and works headless).

Robustness rule: a report is most needed when a sweep went wrong, so every section is built
defensively — missing metrics, NaN, a single trial, no curves — produce a short note, not a crash.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from sweeper.analysis.common import SELECTIONS, STATUSES, metric_names, resolve_directions
from sweeper.analysis.compare import HELDOUT_RULE
from sweeper.analysis.document import Doc
from sweeper.analysis.headline import headline, pick_primary_metric, write_headline
from sweeper.analysis.scales import GOOD_SCALE_RULE, REPEAT_RULE, SURVIVOR_RULE, best_scales
from sweeper.analysis.sections import (
    curves_section,
    failure_section,
    headline_section,
    heatmap_section,
    importance_section,
    other_metrics_section,
    paired_section,
    primary_section,
    safe,
    table1_section,
    warnings_section,
)
from sweeper.analysis.settings import SETTING_RULE, latest_attempts

__all__ = ["pick_primary_metric", "write_report"]

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
        "n_run": pa.int64(),
        "n_lost": pa.int64(),
        "n_diverged": pa.int64(),
        "n_failed": pa.int64(),
        "excluded_scales": list_f,
        "good_scales": list_f,
        "n_good": pa.int64(),
        "good_rule": pa.string(),
        "modes": pa.list_(list_f),
        "n_modes": pa.int64(),
        "repeat_rate": pa.float64(),
        "scales": list_f,
        "pick_rates": list_f,
        "n_scales": pa.int64(),
        "best_trial_ids": pa.list_(pa.string()),
        "in_headline": pa.bool_(),
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
            elif pa.types.is_integer(typ) or pa.types.is_boolean(typ):
                cast = bool if pa.types.is_boolean(typ) else int
                vals = [
                    cast(v) if v is not None and not (isinstance(v, float) and math.isnan(v)) else None
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
    selection: str = "final",
) -> Path:
    """Write ``report.md``, ``report.html``, ``headline.json``, ``best_scales.parquet`` and ``figures/*.png``.

    Returns the path of report.md. ``trials``: trial-summary rows (any schema version, any number
    of attempts); ``curves``: long (trial_id, step, metric, value) or None. ``directions``
    overrides metric directions; ``primary_metric`` is reported first (default: see
    :func:`pick_primary_metric`) and ``selection`` is the one the headline answers with (the
    sweep's objective selection). The headline (:mod:`sweeper.analysis.headline`) opens the
    report; ``headline.json`` holds its numbers and ``best_scales.parquet`` marks the rows it used
    (``in_headline``), so the three agree by construction.
    """
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for old in fig_dir.glob("*.png"):  # a re-run must not embed stale figures
        old.unlink()
    n_attempts = len(trials)
    df = latest_attempts(trials)
    metrics = metric_names(df)
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
    dirs = resolve_directions(metrics, directions)
    best = (
        best_scales(df, metrics, SELECTIONS, dirs)
        if len(df) and metrics
        else best_scales(df, [], ())
    )
    head = headline(df, primary if primary_has else None, selection, dirs, best=best)
    best["in_headline"] = False
    used = [r["best_index"] for b in head["blocks"] for r in b["rows"] if r["kind"] == "best" and "best_index" in r]
    best.loc[best.index.isin(used), "in_headline"] = True
    _best_parquet(best, out_dir / "best_scales.parquet")
    write_headline(head, out_dir / "headline.json")

    doc = Doc()
    title = title or (
        f"Sweep report: {df['sweep'].dropna().iloc[0]}"
        if "sweep" in df and df["sweep"].notna().any()
        else "Sweep report"
    )
    doc.heading(title, 1)
    safe("headline", doc, lambda: headline_section(doc, head))
    _header(doc, df, n_attempts, metrics, dirs, primary if primary_has else None, metrics_note)
    if df.empty or not metrics:
        doc.text("No trials with metrics yet: nothing to analyse.")
    else:
        datasets = list(dict.fromkeys(df["dataset"].tolist()))
        if primary_has:
            safe(
                "primary metric",
                doc,
                lambda: primary_section(doc, df, best, primary, dirs, out_dir, datasets),
            )
        safe("Table 1", doc, lambda: table1_section(doc, df, metrics, dirs))
        paired_all: list[pd.DataFrame] = []
        safe("SN vs BSSN", doc, lambda: paired_section(doc, df, metrics, dirs, best, paired_all))
        safe("seed warnings", doc, lambda: warnings_section(doc, best, paired_all))
        safe(
            "training curves",
            doc,
            lambda: curves_section(doc, df, curves, best, primary, dirs, out_dir, datasets),
        )
        if primary_has:
            safe("heatmaps", doc, lambda: heatmap_section(doc, df, primary, dirs, out_dir, datasets))
            safe("importance", doc, lambda: importance_section(doc, df, primary, selection, dirs, out_dir, datasets))
        safe(
            "other metrics",
            doc,
            lambda: other_metrics_section(doc, df, best, metrics, primary, dirs, out_dir, datasets),
        )
    safe("failures", doc, lambda: failure_section(doc, df))
    doc.heading("Method notes", 2)
    doc.bullets(
        [
            "Statistics use the latest attempt of each trial; values count for completed, diverged and "
            "stopped-early trials when finite; failed trials only enter the failure table.",
            "Settings: " + SETTING_RULE + ".",
            "Mean ± SE over seeds: SE = sd(ddof=1)/√n (numpy's mean and std); no ± when n = 1.",
            "Survivorship: " + SURVIVOR_RULE + ". Lost seeds are shown next to each best-scale mean.",
            "Good scales: " + GOOD_SCALE_RULE + ".",
            "Choice repeats (formerly “P(best)”): " + REPEAT_RULE + ".",
            "Best scales are selected on the same data they are reported on (as in the paper), so "
            "best-scale means are optimistic. The tuned SN vs BSSN comparison uses " + HELDOUT_RULE + ".",
        ]
    )
    md_path = out_dir / "report.md"
    md_path.write_text(doc.markdown(), encoding="utf-8")
    (out_dir / "report.html").write_text(doc.html(title, out_dir), encoding="utf-8")
    return md_path


def _header(
    doc: Doc,
    df: pd.DataFrame,
    n_attempts: int,
    metrics: list[str],
    dirs: Mapping[str, str],
    primary: str | None,
    note: str,
) -> None:
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    counts = df["status"].value_counts()
    status_row = {s: int(counts.get(s, 0)) for s in STATUSES}
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
