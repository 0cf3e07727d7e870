"""The report's first screen as data: which scale is best per normalizer, and does tuned BSSN beat tuned SN?

:func:`headline` is pure (trial rows in, a JSON-ready dict out); :func:`headline_lines` turns it
into the sentences that open ``report.md``/``report.html`` and that ``sweeper run`` prints at the
end; the report writes the dict to ``report/headline.json`` and marks the best-scale rows it used
in ``best_scales.parquet`` (``in_headline``), so the three never disagree.

Per dataset the headline reads the scale-sweep setting (the optimizer setting with the most
replicated scales). In it, every normalizer that ran at two or more scales gets a best scale
(:func:`sweeper.analysis.scales.best_scales`: survivorship rule, mean ± s.e., how often the choice
repeats under seed resampling, the good-scale set, lost seeds); a normalizer that ran at one scale
(``none``, or SN at c = 1 only) is a *reference* row, not a "best scale". Then BSN − SN at their
tuned scales, estimated on held-out seeds (:data:`sweeper.analysis.compare.HELDOUT_RULE`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis.common import (
    SELECTIONS,
    arrow,
    format_mean_sem,
    format_modes,
    format_scale,
    metric_column,
    metric_names,
    resolve_directions,
)
from sweeper.analysis.compare import HELDOUT_RULE, heldout_difference
from sweeper.analysis.scales import REPEAT_RULE, SURVIVOR_RULE, best_scales, scale_table
from sweeper.analysis.settings import latest_attempts, setting_columns, setting_labels
from sweeper.analysis.tables import scale_sweep_settings

HEADLINE_VERSION = 1
_PRIMARY_PREFERENCE = ("fid", "is", "mode_coverage", "kid", "hq_fraction", "modes_captured", "mode_kl", "fid_small")
_ORDER = ("sn", "bsn")


def pick_primary_metric(trials: pd.DataFrame, primary_metric: str | None = None) -> str | None:
    """The metric reported first: the caller's choice, else the first of a preference list with data.

    Why a preference list: FID/IS are what the paper's tables lead with; toy sweeps lead with mode
    coverage. A metric with no finite value anywhere is skipped so the report does not open empty.
    """
    names = metric_names(trials)
    if primary_metric:
        return primary_metric

    def has_data(m: str) -> bool:
        for sel in SELECTIONS:
            c = metric_column(m, sel)
            if c in trials.columns and np.isfinite(pd.to_numeric(trials[c], errors="coerce")).any():
                return True
        return False

    for m in [*_PRIMARY_PREFERENCE, *names]:
        if m in names and has_data(m):
            return m
    return names[0] if names else None


def _plain(v: Any) -> Any:
    """JSON-ready: numpy scalars to Python, NaN/inf to None, lists recursively."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple | np.ndarray):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _norm_order(names: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


def headline(
    trials: pd.DataFrame,
    metric: str | None = None,
    selection: str = "final",
    directions: Mapping[str, str] | None = None,
    *,
    best: pd.DataFrame | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The headline of a sweep as a JSON-ready dict (see the module docstring).

    ``best`` may pass a precomputed :func:`best_scales` table (the report's, so both agree);
    each best row then carries ``best_index``, its index label there. Keys: ``metric``,
    ``direction``, ``selection``, ``rules`` (the survivorship, repeat and held-out rules, verbatim)
    and ``blocks``: one per dataset with ``dataset``, ``setting``, ``rows`` (``kind`` "best" or
    "reference") and ``comparison`` (BSN − SN on held-out seeds, or None).
    """
    df = latest_attempts(trials)
    metric = metric or pick_primary_metric(df)
    out: dict[str, Any] = {
        "version": HEADLINE_VERSION, "metric": metric, "selection": selection, "direction": None, "blocks": [],
        "rules": {"survivorship": SURVIVOR_RULE, "repeat_rate": REPEAT_RULE, "heldout": HELDOUT_RULE},
    }  # fmt: skip
    if df.empty or metric is None:
        return out
    dirs = resolve_directions([metric], directions)
    out["direction"] = dirs[metric]
    if best is None:
        best = best_scales(df, [metric], [selection], dirs, n_boot=n_boot, seed=seed)
    best = best[(best["metric"] == metric) & (best["selection"] == selection)]
    keys = setting_columns(df)
    pair_keys = [k for k in keys if k != "normalizer"]
    chosen = scale_sweep_settings(df, pair_keys, normalizers=None)
    st = scale_table(df, metric, selection, dirs)
    labels = setting_labels(chosen, pair_keys) if len(chosen) else pd.Series(dtype=object)
    for (_, ch), label in zip(chosen.iterrows(), labels, strict=True):
        sel = np.ones(len(df), dtype=bool)
        for k in pair_keys:
            sel &= _equal(df[k], ch[k])
        sub = df[sel]
        sub.attrs.update(df.attrs)
        block: dict[str, Any] = {"dataset": ch.get("dataset"), "setting": label, "rows": [], "comparison": None}
        for norm in _norm_order(sorted({str(x) for x in sub["normalizer"]})):
            block["rows"].append(_row(norm, sub, st, best, pair_keys, ch))
        if {"sn", "bsn"} <= {r["normalizer"] for r in block["rows"]}:
            held = heldout_difference(sub, metric, selection, "sn", "bsn", dirs)
            if len(held):
                block["comparison"] = _plain(
                    held.iloc[0][["a_scale", "b_scale", "n_seeds", "n_pairs", "n_missing", "a_mean", "b_mean",
                                  "mean_diff", "sem_diff", "ci_low", "ci_high", "raw_diff", "raw_ci_low",
                                  "raw_ci_high", "p_value", "a_scales", "b_scales"]].to_dict()
                )  # fmt: skip
        out["blocks"].append(_plain(block))
    return out


def _equal(col: pd.Series, value: Any) -> np.ndarray:
    if isinstance(value, float) and math.isnan(value):
        return col.isna().to_numpy()
    return (col == value).fillna(False).to_numpy(dtype=bool)


def _row(norm: str, sub: pd.DataFrame, st: pd.DataFrame, best: pd.DataFrame, pair_keys: list[str], ch: Any):
    """One normalizer's line: its best scale, or a reference value where it ran at one scale only."""
    mine = st[st["normalizer"].astype(str) == norm]
    for k in pair_keys:
        mine = mine[_equal(mine[k], ch[k])]
    scales = sorted(float(c) for c in mine["scale"].dropna().unique())
    if len(scales) >= 2 and norm != "none":
        b = best[best["normalizer"].astype(str) == norm]
        for k in pair_keys:
            b = b[_equal(b[k], ch[k])]
        if len(b):
            r = b.iloc[0]
            return {
                "kind": "best", "normalizer": norm, "best_index": b.index[0], "scale": r["best_scale"],
                "mean": r["mean"], "sem": r["sem"], "n_seeds": r["n_seeds"], "n_run": r["n_run"],
                "n_lost": r["n_lost"], "n_diverged": r["n_diverged"], "n_failed": r["n_failed"],
                "repeat_rate": r["repeat_rate"], "good_scales": list(r["good_scales"]), "modes": list(r["modes"]),
                "excluded_scales": list(r["excluded_scales"]), "n_scales": r["n_scales"],
            }  # fmt: skip
    one = mine[mine["n"] > 0].sort_values("n", ascending=False, kind="stable")
    r = one.iloc[0] if len(one) else (mine.iloc[0] if len(mine) else None)
    return {
        "kind": "reference", "normalizer": norm, "scale": None if r is None else r["scale"],
        "scales": scales, "mean": np.nan if r is None else r["mean"], "sem": np.nan if r is None else r["sem"],
        "n_seeds": 0 if r is None else r["n"], "n_run": 0 if r is None else r["n_run"],
        "n_lost": 0 if r is None else r["n_lost"],
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Words
# --------------------------------------------------------------------------------------------------
def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


def _lost_text(r: Mapping[str, Any]) -> str:
    lost = int(r.get("n_lost") or 0)
    if not lost:
        return ""
    parts = [f"{int(r[k])} {w}" for k, w in (("n_diverged", "diverged"), ("n_failed", "failed")) if r.get(k)]
    why = f" ({', '.join(parts)})" if parts else ""
    return f"; {lost} of {int(r['n_run'])} seeds lost there{why}, mean over the rest"


def _diff_text(x: float, lo: float, hi: float, sem: float) -> str:
    digits = 3 if not math.isfinite(sem) or sem <= 0 else int(min(8, max(0, 1 - math.floor(math.log10(sem)))))
    if not math.isfinite(lo):
        return f"{x:+.{digits}f} (no interval: fewer than 2 held-out seeds)"
    return f"{x:+.{digits}f}, 95% CI [{lo:+.{digits}f}, {hi:+.{digits}f}]"


def headline_lines(h: Mapping[str, Any]) -> list[str]:
    """The headline in words: one title line per dataset and one line per normalizer and comparison."""
    metric, sel = h.get("metric"), h.get("selection", "final")
    if not h.get("blocks") or metric is None:
        return [f"no headline: no trial has a value of {metric or 'any metric'} yet"]
    lines: list[str] = []
    for block in h["blocks"]:
        lines.append(f"{block['dataset']}, {metric} ({arrow(h['direction'])}, selection {sel}), "
                     f"setting {block['setting']}:")  # fmt: skip
        for r in block["rows"]:
            value = format_mean_sem(_num(r["mean"]), _num(r["sem"]))
            if r["kind"] == "best":
                if r["scale"] is None:
                    lines.append(f"  best scale for {r['normalizer']}: none (every scale lost more than half of "
                                 "its seeds)")  # fmt: skip
                    continue
                rate = _num(r["repeat_rate"])
                rep = f"; the choice repeats in {rate:.0%} of seed resamples" if math.isfinite(rate) else ""
                good = format_modes(r["modes"], max_modes=3)
                excl = r.get("excluded_scales") or []
                ex = f"; excluded (most seeds lost): c = {', '.join(format_scale(c) for c in excl)}" if excl else ""
                lines.append(
                    f"  best scale for {r['normalizer']}: c = {format_scale(r['scale'])} ({metric} {value}, "
                    f"{int(r['n_seeds'])} seeds{_lost_text(r)}{rep}; good scales {good}{ex})"
                )
            else:
                shown = r.get("scale") is not None and r["normalizer"] != "none"
                at = f" at c = {format_scale(r['scale'])}" if shown else ""
                lines.append(f"  {r['normalizer']} (reference, scale not tuned){at}: {metric} {value} "
                             f"({int(r['n_seeds'])} seeds{_lost_text(r)})")  # fmt: skip
        c = block.get("comparison")
        if c is not None:
            lines.append("  " + _comparison_text(c, metric, h["direction"]))
    return lines


def _comparison_text(c: Mapping[str, Any], metric: str, direction: str) -> str:
    lo, hi = _num(c["ci_low"]), _num(c["ci_high"])
    if math.isfinite(lo) and lo > 0:
        verdict = "BSSN better"
    elif math.isfinite(hi) and hi < 0:
        verdict = "SN better"
    else:
        verdict = "no clear difference at these seeds (the interval contains 0)"
    diff = _diff_text(_num(c["raw_diff"]), _num(c["raw_ci_low"]), _num(c["raw_ci_high"]), _num(c["sem_diff"]))
    better = "lower" if direction == "min" else "higher"
    missing = f", {int(c['n_missing'])} without a value at a chosen scale" if c.get("n_missing") else ""
    return (
        f"bsn - sn at their best scales (bsn c = {format_scale(c['b_scale'])}, sn c = {format_scale(c['a_scale'])}): "
        f"{diff} {metric} ({better} is better): {verdict}; held-out seeds: each seed's pair of scales chosen "
        f"on the other seeds ({int(c['n_pairs'])} of {int(c['n_seeds'])} seeds{missing})"
    )


def write_headline(h: Mapping[str, Any], path: Path) -> Path:
    """``headline.json`` (atomically: a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(_plain(dict(h)), indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path


def read_headline(path: Path) -> dict[str, Any]:
    """The headline a report wrote (a report dir or its ``headline.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / "headline.json"
    return json.loads(path.read_text(encoding="utf-8"))


def report_headline_lines(report_dir: Path) -> list[str]:
    """What ``sweeper run`` prints at the end: the headline lines of the report in ``report_dir``.

    Never raises: a report without a readable ``headline.json`` (an older report, a failed write)
    gives no lines, because a missing summary must not turn a finished sweep into an error.
    """
    try:
        return headline_lines(read_headline(report_dir))
    except (OSError, ValueError, KeyError, TypeError):
        return []
