"""The report's sections: each chooses what to show from the pure statistics and never raises."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis.common import SELECTIONS, arrow, format_mean_sem, format_modes, format_scale
from sweeper.analysis.compare import compare_sn_bssn, seed_warnings
from sweeper.analysis.document import MAX_TABLE_ROWS, Doc
from sweeper.analysis.figures import (
    MAX_DATASET_FIGURES,
    MAX_NORMALIZER_PANELS,
    curve_panels,
    heatmap_figure,
    layer_panels,
    ordered_norms,
    overview_figure,
    scale_figure,
    slug,
)
from sweeper.analysis.headline import headline_lines
from sweeper.analysis.importance import IMPORTANCE_RULE, parameter_importance
from sweeper.analysis.search_figures import importance_figure, parallel_coordinates_figure
from sweeper.analysis.tables import failure_table, table1, table1_values

_SELECTION_TEXT = {
    "final": "final (value at the end of training)",
    "best": "best (best value during training, paper Fig. 8 protocol)",
}


def safe(section: str, doc: Doc, fn: Callable[[], None]) -> None:
    """Run one report section; a bug in one section must not cost the whole report."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - deliberately broad: report the failure in the report
        doc.text(f"*(section “{section}” could not be generated: {type(exc).__name__}: {exc})*")


def headline_section(doc: Doc, head: Mapping[str, Any]) -> None:
    """The answer first: best scale per normalizer and tuned BSN − SN, in words (headline.json)."""
    doc.heading("Headline", 2)
    lines = headline_lines(head)
    items: list[str] = []
    for line in lines:
        if line.startswith("  "):
            items.append(line.strip())
            continue
        if items:
            doc.bullets(items)
            items = []
        doc.text(f"**{line}**" if head.get("blocks") else line)
    doc.bullets(items)
    if head.get("blocks"):
        doc.text(
            "Best scale = the best mean among scales where at most half of the seeds were lost (survivorship "
            "rule); “the choice repeats in x%” = how often the same scale is chosen again when seeds are "
            "resampled (it is not the probability that the scale is truly best); good scales = not "
            "significantly worse than the best. The tuned BSN − SN difference uses held-out seeds: each "
            "seed's scales are chosen on the other seeds, so the estimate is free of the winner's curse of "
            "picking the best of many scales. Rules in full: Method notes; numbers: `headline.json`, "
            "`best_scales.parquet` (`in_headline`)."
        )


def _seeds_text(n: Any, n_run: Any, n_div: Any, n_fail: Any) -> str:
    """``"5"``, or ``"4 of 5 (1 diverged)"`` when seeds were lost at that scale."""
    n, n_run = int(n), int(n_run)
    if n_run <= n:
        return str(n)
    why = [f"{int(k)} {w}" for k, w in ((n_div, "diverged"), (n_fail, "failed")) if int(k)]
    return f"{n} of {n_run}" + (f" ({', '.join(why)})" if why else "")


def _best_table_rows(best: pd.DataFrame) -> pd.DataFrame:
    """Readable best-scale table: scale-sweep settings first (most scales), then by normalizer."""
    if best.empty:
        return pd.DataFrame()
    b = best.copy()
    b["_order"] = -b["n_scales"]
    rank = {n: i for i, n in enumerate(ordered_norms(b["normalizer"]))}
    b["_norm"] = b["normalizer"].astype(str).map(rank)
    b = b.sort_values(["dataset", "_order", "setting", "_norm"], kind="stable", na_position="last")
    out = pd.DataFrame(
        {
            "dataset": b["dataset"].astype(str),
            "setting": b["setting"],
            "normalizer": b["normalizer"].astype(str),
            "best c": [format_scale(x) for x in b["best_scale"]],
            "mean ± SE": [format_mean_sem(m, s) for m, s in zip(b["mean"], b["sem"], strict=True)],
            "seeds (lost)": [
                _seeds_text(*v) for v in zip(b["n_seeds"], b["n_run"], b["n_diverged"], b["n_failed"], strict=True)
            ],
            "good c": [
                f"{g}/{n}" if n else "—"
                for g, n in zip(b["n_good"].astype(int), b["n_scales"].astype(int), strict=True)
            ],
            "modes": [format_modes(m, max_modes=3) for m in b["modes"]],
            "choice repeats": [
                f"{p:.0%}" if isinstance(p, float) and math.isfinite(p) else "n/a" for p in b["repeat_rate"]
            ],
            "excluded c (most seeds lost)": [
                ", ".join(format_scale(c) for c in x) if len(x) else "—" for x in b["excluded_scales"]
            ],
        }
    )
    return out.reset_index(drop=True)


def primary_section(
    doc: Doc,
    df: pd.DataFrame,
    best: pd.DataFrame,
    primary: str,
    dirs: Mapping[str, str],
    out_dir: Path,
    datasets: list[Any],
) -> None:
    d = dirs[primary]
    doc.heading(f"Primary metric: {primary} ({arrow(d)})", 2)
    for sel in SELECTIONS:
        b = best[(best["metric"] == primary) & (best["selection"] == sel)]
        doc.table(
            _best_table_rows(b),
            f"Best scale per setting and normalizer: {primary}, selection: {_SELECTION_TEXT[sel]}. "
            "Seeds (lost): seeds counted at the best scale, and how many of those run there were lost; "
            "choice repeats: share of seed resamples choosing the same scale",
        )
    for ds in datasets[:MAX_DATASET_FIGURES]:
        sub = df[df["dataset"] == ds] if ds == ds else df[df["dataset"].isna()]
        sub.attrs.update(df.attrs)
        for sel in SELECTIONS:
            res = scale_figure(sub, primary, sel, d, best[best["dataset"].astype(str) == str(ds)], out_dir, ds)
            if res:
                rel, clipped = res
                doc.figure(
                    rel,
                    f"{ds}: {primary} vs scale (selection: {sel}); dots = seeds, line = mean, bars = ± SE, "
                    "star = best scale"
                    + (
                        "; y axis clipped to the bulk of the data (outliers, e.g. diverged runs, lie beyond it)"
                        if clipped
                        else ""
                    ),
                )


def table1_section(doc: Doc, df: pd.DataFrame, metrics: list[str], dirs: Mapping[str, str]) -> None:
    if not df["normalizer"].isin(["sn", "bsn"]).any():
        return
    doc.heading("Table 1 layout (SN, SSN, BSN, BSSN)", 2)
    doc.text(
        "SN/BSN = scale c = 1; SSN/BSSN = the best scale, chosen separately per metric on the same runs "
        "(paper §5), among scales that lost at most half of their seeds. Cells: mean ± SE over seeds "
        "(c = scale; “k of n seeds” where seeds were lost there); **bold** = best in column; n/a = not run."
    )
    for sel in SELECTIONS:
        vals = table1_values(df, metrics, sel, dirs)
        t = table1(values=vals)
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
                doc.table(t[cols], f"Table 1, {r.dataset}, selection: {_SELECTION_TEXT[sel]} — setting: {r.setting}")


def paired_section(
    doc: Doc,
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
        "the sign test is exact (two-sided). **Tuned, held-out seeds** is the selection-aware comparison: "
        "each seed's two scales are chosen on the other seeds (the scales shown are the ones chosen on all "
        "seeds). **Tuned, in-sample** picks both scales on the very seeds it compares, as the paper did: "
        "it is optimistic, and more so for the normalizer given more scales, so read it only next to the "
        "paper. In-sample rows where both best scales are 1 are omitted (they repeat the c = 1 row)."
    )
    rows = []
    for metric in metrics:
        for sel in SELECTIONS:
            r = compare_sn_bssn(df, metric, sel, dirs, best=best)
            if r.empty or "n_pairs" not in r:
                continue
            acc.append(r)
            # An in-sample tuned row where both best scales are 1 repeats the c = 1 row exactly.
            same = (r["comparison"] == "SSN vs BSSN (tuned c, in-sample)") & (r["a_scale"] == 1.0) & (
                r["b_scale"] == 1.0
            )
            r = r[~same]
            for x in r.itertuples():
                rows.append(
                    {
                        "dataset": x.dataset if "dataset" in r.columns else "",
                        "setting": x.setting,
                        "metric": metric,
                        "selection": sel,
                        "comparison": _comparison_label(x.comparison, x.a_scale, x.b_scale),
                        "seeds": int(x.n_pairs),
                        "SN": f"{x.a_mean:.4g}",
                        "BSN": f"{x.b_mean:.4g}",
                        "Δ": f"{x.mean_diff:+.3g}",
                        "95% CI": f"[{x.ci_low:+.2g}, {x.ci_high:+.2g}]" if math.isfinite(x.ci_low) else "n/a",
                        "p (t)": f"{x.p_value:.2g}" if math.isfinite(x.p_value) else "n/a",
                        "p (sign)": f"{x.sign_test_p:.3g}" if math.isfinite(x.sign_test_p) else "n/a",
                    }
                )
    if rows:
        t = pd.DataFrame(rows)
        t["_p"] = t["metric"].map({m: i for i, m in enumerate(metrics)})
        t["_s"] = t["selection"].map({"final": 0, "best": 1})
        t = t.sort_values(["_p", "_s", "dataset", "setting", "comparison"], kind="stable").drop(columns=["_p", "_s"])
        if t["dataset"].nunique() == 1:
            t = t.drop(columns="dataset")
        doc.table(
            t.reset_index(drop=True),
            "Paired SN vs BSN/BSSN differences (selection per row); Δ > 0 = BSN/BSSN better",
        )
    else:
        doc.text("No seeds were run under both SN and BSN in the same setting at matching scales.")


def _comparison_label(kind: str, a_scale: float, b_scale: float) -> str:
    if kind == "SN vs BSN (c=1)":
        return "SN vs BSN, c=1"
    how = "held-out seeds" if "held-out" in kind else "in-sample (optimistic)"
    return f"SSN c={format_scale(a_scale)} vs BSSN c={format_scale(b_scale)}, tuned, {how}"


def warnings_section(doc: Doc, best: pd.DataFrame, paired: list[pd.DataFrame]) -> None:
    p = pd.concat(paired, ignore_index=True) if paired else None
    w = seed_warnings(best, p)
    doc.heading("Seed warnings", 2)
    doc.bullets(w) if w else doc.text("No warnings: seed counts support the comparisons shown.")


def _best_configs(best: pd.DataFrame, df: pd.DataFrame, primary: str | None, dataset: Any) -> dict[str, list[str]]:
    """Trial ids of the best (setting, scale) per normalizer for ``primary`` (selection final)."""
    if primary is None or best.empty:
        return {}
    b = best[(best["metric"] == primary) & (best["selection"] == "final") & (best["n_seeds"] > 0)]
    b = b[b["dataset"].astype(str) == str(dataset)]
    out: dict[str, list[str]] = {}
    rank = {n: i for i, n in enumerate(ordered_norms(b["normalizer"]))}
    b = b.assign(_r=b["normalizer"].astype(str).map(rank)).sort_values("_r", kind="stable")
    for norm, sub in b.groupby(b["normalizer"].astype(str), sort=False):
        asc = sub["direction"].iloc[0] == "min"
        top = sub.sort_values("mean", ascending=asc, kind="stable").iloc[0]
        out[norm] = list(top["best_trial_ids"])
        if len(out) >= MAX_NORMALIZER_PANELS:
            break
    return out


def curves_section(
    doc: Doc,
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
        rel = curve_panels(c, groups, mets, f"{ds}: training curves of best configs", out_dir, slug("curves", ds))
        if rel:
            doc.figure(rel, f"{ds}: {', '.join(mets)} over training (best config per normalizer)")
        rel = layer_panels(
            c,
            groups,
            "grad_norm/",
            f"{ds}: gradient norms per layer (log y)",
            out_dir,
            slug("gradnorm", ds),
            logy=True,
        )
        if rel:
            doc.figure(rel, f"{ds}: discriminator gradient norms per layer (`grad_norm/*`), seed mean")
        rel = layer_panels(
            c, groups, "sigma", f"{ds}: per-layer spectral norms", out_dir, slug("sigma", ds), logy=False
        )
        if rel:
            doc.figure(rel, f"{ds}: per-layer spectral norm σ of the normalized weights (`sigma*`), seed mean")


def heatmap_section(
    doc: Doc, df: pd.DataFrame, primary: str, dirs: Mapping[str, str], out_dir: Path, datasets: list[Any]
) -> None:
    figs = []
    for ds in datasets[:MAX_DATASET_FIGURES]:
        sub = df[df["dataset"] == ds]
        sub.attrs.update(df.attrs)
        for axis in ("lr", "n_dis"):
            r = heatmap_figure(sub, primary, dirs[primary], axis, out_dir, ds)
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


def other_metrics_section(
    doc: Doc,
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
        rel = overview_figure(sub, metrics, dirs, out_dir, ds)
        if rel:
            doc.figure(rel, f"{ds}: every metric vs scale (selection final) for the scale-sweep setting")
    for m in others:
        doc.heading(f"{m} ({arrow(dirs[m])})", 3)
        for sel in SELECTIONS:
            b = best[(best["metric"] == m) & (best["selection"] == sel)]
            if b.empty or not (b["n_seeds"] > 0).any():
                doc.text(f"No values for `{m}` (selection {sel}).")
                continue
            doc.table(_best_table_rows(b), f"Best scale: {m}, selection: {_SELECTION_TEXT[sel]}", max_rows=20)


def importance_section(
    doc: Doc, df: pd.DataFrame, primary: str, selection: str, dirs: Mapping[str, str], out_dir: Path,
    datasets: list[Any],
) -> None:
    """Which searched parameters matter (Optuna's evaluators) and the parallel-coordinates view."""
    doc.heading("Parameter importance and parallel coordinates", 2)
    for ds in datasets[:MAX_DATASET_FIGURES]:
        sub = df[df["dataset"] == ds] if len(datasets) > 1 else df
        if len(datasets) > 1:
            doc.heading(str(ds), 3)
        imp = parameter_importance(sub, primary, selection, dirs[primary])
        if imp.note:
            doc.text(imp.note)
        if imp.table.empty:
            continue
        doc.table(
            imp.table.assign(**{c: imp.table[c].map(lambda v: "—" if v != v else f"{v:.3f}")
                                for c in ("fanova", "ped_anova")}),  # fmt: skip
            f"Importance for `{selection}_{primary}` over {len(imp.points)} configurations: {IMPORTANCE_RULE}",
        )
        order = imp.table["parameter"].tolist()
        for rel, caption in (
            (importance_figure(imp.table, primary, out_dir, slug("importance", ds)), "parameter importance"),
            (parallel_coordinates_figure(imp.points, order, primary, dirs[primary], out_dir, slug("parallel", ds)),
             f"parallel coordinates (axes by importance; colour: mean {selection} {primary} over seeds)"),
        ):  # fmt: skip
            if rel:
                doc.figure(rel, f"{ds}: {caption}")


def failure_section(doc: Doc, df: pd.DataFrame) -> None:
    doc.heading("Failures and divergence", 2)
    if df.empty:
        doc.text("No trials.")
        return
    doc.text(
        "Rates over latest attempts, per normalizer and scale, pooled over the other settings; "
        "failed trials are "
        "excluded from every mean above, diverged ones are included when their metric is finite."
    )
    ft = failure_table(df, ["dataset", "normalizer"], max_scales=15)
    bad = ft[(ft["failed"] + ft["diverged"] + ft["other"]) > 0]
    view = ft if len(ft) <= MAX_TABLE_ROWS else bad
    if view.empty:
        doc.text(f"No failed or diverged trials among {len(df)}.")
    else:
        t = view.assign(
            scale=view["scale"].map(lambda s: format_scale(s) if isinstance(s, float) else str(s)),
            failure_rate=view["failure_rate"].map(lambda x: f"{x:.0%}"),
            divergence_rate=view["divergence_rate"].map(lambda x: f"{x:.0%}"),
        )
        if not t["other"].any():
            t = t.drop(columns="other")
        cap = "Failure and divergence rates per scale" + ("" if view is ft else " (only rows with failures/divergence)")
        doc.table(t.reset_index(drop=True), cap)
    if "error" in df.columns:
        errs = df.loc[df["status"] == "failed", "error"].dropna().astype(str)
        if len(errs):
            top = (
                errs.map(lambda e: e.strip().splitlines()[-1][:160] if e.strip() else "(empty)").value_counts().head(5)
            )
            doc.bullets([f"{n}× `{e}`" for e, n in top.items()])
