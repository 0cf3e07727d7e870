"""sweeper.analysis.report: files, contract columns, Table-1 rows, embedded figures, and robustness on odd inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import trial_row

from sweeper import analysis
from sweeper.analysis import report

REQUIRED = [
    "dataset",
    "setting",
    "normalizer",
    "metric",
    "selection",
    "best_scale",
    "mean",
    "sem",
    "n_seeds",
    "good_scales",
    "repeat_rate",
    "n_lost",
    "in_headline",
    "modes",
]
SCALES = [0.7, 1.0, 1.4, 2.0]


def _row(tid: str, norm: str, c: float, seed: int, q: float, **over) -> dict:
    base = {"sweep": "demo", "dataset": "ring", "model": "mlp", "iterations": 500, "wall_seconds": 1.0,
            "started_at": "t0", "finished_at": "t1", "mlflow_run_id": ""}  # fmt: skip
    metrics = {
        "final_mode_coverage": q, "best_mode_coverage": q + 0.02, "best_mode_coverage_step": 400,
        "final_fid": 50 - 40 * q, "best_fid": 49 - 40 * q, "best_fid_step": 300,
    }  # fmt: skip
    return trial_row(tid, norm, c, seed, **{**base, **metrics, **over})


def make_sweep(seeds: int = 5, with_lr_sweep: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """SN and BSN over 4 scales (BSN planted better, best at 1.4), an lr/n_dis sweep at c = 1, and curves."""
    rng = np.random.default_rng(0)
    rows = []
    for norm, bonus in (("sn", 0.0), ("bsn", 0.05)):
        for c in SCALES:
            for s in range(seeds):
                q = 0.8 - 0.3 * np.log(c / 1.4) ** 2 + bonus + rng.normal(0, 0.01)
                rows.append(_row(f"{norm}-{c}-{s}", norm, c, s, q))
        if with_lr_sweep:
            for lr, nd, b2 in ((2e-4, 1, 0.999), (1e-4, 5, 0.9)):
                for s in range(seeds):
                    rows.append(
                        _row(
                            f"{norm}-lr{lr}-{nd}-{s}",
                            norm,
                            1.0,
                            s,
                            0.6 + rng.normal(0, 0.01),
                            lr_d=lr,
                            n_dis=nd,
                            beta2=b2,
                        )
                    )
    rows.append(
        _row("crash", "sn", 2.0, 99, np.nan, status="failed", error="Traceback...\nRuntimeError: NaN loss")
    )
    trials = pd.DataFrame(rows)
    curves = []
    for tid in trials["trial_id"]:
        steps = np.arange(0, 500, 50)
        for m, v in (
            ("mode_coverage", 1 - np.exp(-steps / 200)),
            ("loss_d", 1 + np.exp(-steps / 100)),
            ("loss_g", 0.5 + 0 * steps),
            ("grad_norm/layer0", 1 + steps / 500),
            ("grad_norm/layer1", 0.1 + steps / 1000),
            ("sigma_w/layer0", 1.0 + 0 * steps),
        ):
            curves.append(pd.DataFrame({"trial_id": tid, "step": steps, "metric": m, "value": v}))
    return trials, pd.concat(curves, ignore_index=True)


def _assert_clean(md: str) -> None:
    assert "could not be generated" not in md, md


def test_full_report(tmp_path: Path) -> None:
    trials, curves = make_sweep()
    md_path = report.write_report(
        trials, curves, tmp_path, title="Demo sweep", primary_metric="mode_coverage"
    )
    assert md_path == tmp_path / "report.md"
    md = md_path.read_text()
    html = (tmp_path / "report.html").read_text()
    _assert_clean(md)
    # header with counts, primary metric first, selection stated
    assert md.startswith("# Demo sweep")
    assert md.index("Primary metric: mode_coverage") < md.index("## All metrics")
    assert "selection: final" in md and "selection: best" in md
    # Table 1 rows and the paired comparison
    for row in ("| SN |", "| SSN |", "| BSN |", "| BSSN |"):
        assert row in md
    assert "positive = BSSN better" in md
    assert "0.0625 > 0.05" in md  # seed warning with 5 paired seeds
    assert "RuntimeError: NaN loss" in md  # failure reasons
    # figures exist and are embedded
    figs = sorted(p.name for p in (tmp_path / "figures").glob("*.png"))
    assert any(f.startswith("scale_") for f in figs)
    assert any(f.startswith("curves_") for f in figs) and any(f.startswith("gradnorm_") for f in figs)
    assert any(f.startswith("sigma_") for f in figs) and any(f.startswith("heatmap_") for f in figs)
    assert html.count("data:image/png;base64,") == len(figs)
    assert "figures/" not in html.split("<body>")[1].replace("data:image", "")  # no external references
    # parquet contract
    t = pq.read_table(tmp_path / "best_scales.parquet")
    assert set(REQUIRED) <= set(t.column_names)
    typ = t.schema.field("good_scales").type
    assert pa.types.is_list(typ) and pa.types.is_float64(typ.value_type)
    best = t.to_pandas()
    r = best[
        (best.normalizer == "bsn")
        & (best.metric == "mode_coverage")
        & (best.selection == "final")
        & (best.setting == "lr 1e-4/1e-4, β (0.5, 0.999), n_dis 1")
    ]
    assert len(r) == 1 and r["best_scale"].iloc[0] == 1.4


def test_tiny_input_without_curves(tmp_path: Path) -> None:
    trials = pd.DataFrame([_row(f"t{i}", "sn", c, 0, 0.5 + 0.1 * i) for i, c in enumerate(SCALES)])
    md = report.write_report(trials, None, tmp_path).read_text()
    _assert_clean(md)
    assert "No training curves" in md and "| SSN |" in md
    assert (tmp_path / "best_scales.parquet").exists()
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()


def test_continuous_scales_one_seed_each(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = []
    for i, c in enumerate(np.exp(rng.uniform(np.log(0.3), np.log(5), 80))):
        norm = "sn" if i % 2 else "bsn"
        rows.append(
            _row(
                f"c{i}",
                norm,
                c,
                i,
                0.8 - 0.2 * np.log(c) ** 2 + rng.normal(0, 0.02),
                lr_d=float(np.exp(rng.uniform(np.log(5e-5), np.log(5e-4)))),
            )
        )
    trials = pd.DataFrame(rows)
    curves = pd.DataFrame(
        {
            "trial_id": np.repeat(trials["trial_id"], 3),
            "step": np.tile([0, 1, 2], len(trials)),
            "metric": "mode_coverage",
            "value": rng.random(3 * len(trials)),
        }
    )
    md = report.write_report(trials, curves, tmp_path).read_text()
    _assert_clean(md)
    assert "single seed" in md
    assert len(pq.read_table(tmp_path / "best_scales.parquet")) > 0


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "all_failed",
        "nan_metrics",
        "single_row",
        "no_metric_columns",
        "missing_columns",
        "unknown_primary",
    ],
)
def test_robust_to_odd_inputs(tmp_path: Path, case: str) -> None:
    trials, _ = make_sweep(seeds=2, with_lr_sweep=False)
    primary = None
    if case == "empty":
        trials = trials.iloc[0:0]
    elif case == "all_failed":
        trials = trials.assign(status="failed")
    elif case == "nan_metrics":
        trials = trials.assign(final_fid=np.nan, best_mode_coverage=np.inf)
    elif case == "single_row":
        trials = trials.iloc[[0]]
    elif case == "no_metric_columns":
        trials = trials[[c for c in trials.columns if not c.startswith(("final_", "best_"))]]
    elif case == "missing_columns":
        trials = trials[["trial_id", "normalizer", "scale", "final_fid"]]
    elif case == "unknown_primary":
        primary = "is"
    md = report.write_report(
        trials,
        pd.DataFrame(columns=["trial_id", "step", "metric", "value"]),
        tmp_path,
        primary_metric=primary,
    ).read_text()
    _assert_clean(md)
    assert (tmp_path / "report.html").exists()
    t = pq.read_table(tmp_path / "best_scales.parquet")
    assert set(REQUIRED) <= set(t.column_names)
    if case == "unknown_primary":
        assert "primary metric `is`" in md


def test_rerun_replaces_stale_figures(tmp_path: Path) -> None:
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "old.png").write_bytes(b"x")
    trials, _ = make_sweep(seeds=2, with_lr_sweep=False)
    report.write_report(trials, None, tmp_path)
    assert not (tmp_path / "figures" / "old.png").exists()


def _with_reference(trials: pd.DataFrame) -> pd.DataFrame:
    """Add `none` (no normalization: one scale, a reference row) at the scale-sweep setting."""
    rng = np.random.default_rng(7)
    rows = [_row(f"none-{s}", "none", 1.0, s, 0.5 + rng.normal(0, 0.01)) for s in range(5)]
    return pd.concat([trials, pd.DataFrame(rows)], ignore_index=True)


def test_headline_opens_the_report_and_matches_best_scales(tmp_path: Path) -> None:
    trials, curves = make_sweep()
    trials = _with_reference(trials)
    md = report.write_report(trials, curves, tmp_path, primary_metric="mode_coverage").read_text()
    _assert_clean(md)
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Headline"  # the first screen answers the question
    head = json.loads((tmp_path / "headline.json").read_text())
    assert head == analysis.read_headline(tmp_path)
    (block,) = head["blocks"]
    assert block["setting"] == "lr 1e-4/1e-4, β (0.5, 0.999), n_dis 1"  # the scale sweep, not the lr sweep
    kinds = {r["normalizer"]: r["kind"] for r in block["rows"]}
    assert kinds == {"sn": "best", "bsn": "best", "none": "reference"}
    best = pq.read_table(tmp_path / "best_scales.parquet").to_pandas()
    used = best[best["in_headline"]]
    assert len(used) == 2 and set(used["selection"]) == {"final"} and set(used["metric"]) == {"mode_coverage"}
    for r in block["rows"]:
        if r["kind"] != "best":
            continue
        b = used[used["normalizer"] == r["normalizer"]].iloc[0]  # the same numbers, not recomputed ones
        assert (b["best_scale"], b["mean"], b["sem"], b["n_seeds"]) == (r["scale"], r["mean"], r["sem"], r["n_seeds"])
        assert b["repeat_rate"] == r["repeat_rate"] and b["setting"] == block["setting"]
    c = block["comparison"]
    assert (c["b_scale"], c["a_scale"]) == (1.4, 1.4) and c["ci_low"] > 0  # BSN planted better by 0.05
    text = md.split("## Headline", 1)[1].split("\n## ", 1)[0]
    assert "best scale for sn: c = 1.4" in text and "best scale for bsn: c = 1.4" in text
    assert "none (reference, scale not tuned): mode_coverage" in text and "best scale for none" not in text
    assert "bsn - sn at their best scales" in text and "BSSN better" in text and "held-out seeds" in text
    assert "choice repeats" in text and "not the probability" in text
    html = (tmp_path / "report.html").read_text()
    assert html.index(">Headline<") < html.index(">Primary metric")


def test_headline_says_when_no_scale_can_be_best(tmp_path: Path) -> None:
    trials, _ = make_sweep(seeds=2, with_lr_sweep=False)
    report.write_report(trials.assign(status="failed"), None, tmp_path)
    lines = analysis.headline_lines(analysis.read_headline(tmp_path))
    assert "  best scale for sn: none (every scale lost more than half of its seeds)" in lines
    assert not any("c = " in line or "bsn - sn" in line for line in lines)
    report.write_report(trials.iloc[0:0], None, tmp_path / "empty")
    assert analysis.report_headline_lines(tmp_path / "empty")[0].startswith("no headline")
    assert analysis.report_headline_lines(tmp_path / "nowhere") == []  # never raises at the end of a sweep
