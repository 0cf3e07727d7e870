"""Parameter importance and parallel coordinates in the report, from Parquet-shaped rows with a planted answer."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sweeper.analysis.importance import configuration_points, parameter_importance, searched_parameters
from sweeper.analysis.report import write_report


def _rows(n_configs: int = 24, *, seed: int = 0, grid: bool = False) -> pd.DataFrame:
    """Configurations x 2 seeds. The objective depends on the normalizer (strongly) and on lr_d
    (per decade); scale and n_dis are searched too but do nothing."""
    rng = np.random.default_rng(seed)
    rows = []
    configs = (
        [(n, c, 1e-4, 1) for n in ("sn", "bsn", "none") for c in (0.5, 1.0, 2.0)]
        if grid
        else [
            (str(rng.choice(["sn", "bsn", "none"])), float(np.exp(rng.uniform(-0.7, 1.1))),
             float(10 ** rng.uniform(-4, -2)), int(rng.choice([1, 2, 5])))  # fmt: skip
            for _ in range(n_configs)
        ]
    )
    for i, (norm, scale, lr_d, n_dis) in enumerate(configs):
        for s in (0, 1):
            v = {"sn": 0.5, "bsn": 0.9, "none": 0.1}[norm] + 0.15 * math.log10(lr_d / 1e-4) + 0.01 * rng.normal()
            rows.append({
                "sweep": "planted", "trial_id": f"t{i}s{s}", "attempt": 1, "status": "completed",
                "dataset": "blobs", "model": "sngan_cnn", "normalizer": norm, "scale": scale, "lr_g": 2e-4,
                "lr_d": lr_d, "beta1": 0.5, "beta2": 0.999, "n_dis": n_dis, "batch_size": 8, "iterations": 6,
                "seed": s, "final_mode_coverage": v, "best_mode_coverage": v,
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_the_planted_parameters_come_first():
    imp = parameter_importance(_rows(), "mode_coverage", "final", "max")
    assert not imp.note
    assert set(imp.parameters) == {"normalizer", "scale", "lr_d", "n_dis"}
    t = imp.table.set_index("parameter")
    for col in ("fanova", "ped_anova"):
        assert t[col].sum() == pytest.approx(1.0)
    assert list(imp.table["parameter"][:2]) == ["normalizer", "lr_d"]  # by fANOVA
    assert min(t.loc[["normalizer", "lr_d"], "fanova"]) > 5 * max(t.loc[["scale", "n_dis"], "fanova"])
    assert len(imp.points) == 24 and (imp.points["n_seeds"] == 2).all()


def test_points_are_means_over_seeds_of_counted_values():
    df = _rows(6)
    df.loc[0, "status"] = "failed"  # a failed seed does not count; its configuration keeps the other
    pts = configuration_points(df, "mode_coverage", "final", ["normalizer", "scale", "lr_d", "n_dis"])
    assert len(pts) == 6
    first = pts[(pts["scale"] == df.loc[0, "scale"]) & (pts["lr_d"] == df.loc[0, "lr_d"])].iloc[0]
    assert first["n_seeds"] == 1 and first["value"] == pytest.approx(df.loc[1, "final_mode_coverage"])
    other = df.iloc[2:4]
    row = pts[(pts["scale"] == other["scale"].iloc[0]) & (pts["lr_d"] == other["lr_d"].iloc[0])].iloc[0]
    assert row["value"] == pytest.approx(other["final_mode_coverage"].mean())


def test_a_grid_sweep_gets_importance_too():
    imp = parameter_importance(_rows(grid=True), "mode_coverage", "final", "max")
    assert imp.parameters == ["normalizer", "scale"] and not imp.note
    assert imp.table.iloc[0]["parameter"] == "normalizer"


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda df: df.assign(normalizer="sn", lr_d=1e-4, n_dis=1), "skipped, only `scale` varies"),
        (lambda df: df.head(6), "skipped, 3 configuration(s) with a value of `final_mode_coverage`"),
        (lambda df: df.assign(final_mode_coverage=0.25), "scored 0.25 on `final_mode_coverage`; no parameter"),
    ],
)
def test_when_there_is_nothing_to_rank_the_report_says_so_in_one_line(tmp_path, edit, needle):
    df = edit(_rows())
    imp = parameter_importance(df, "mode_coverage", "final", "max")
    assert needle in imp.note and imp.table.empty
    md = write_report(df, None, tmp_path / "r", primary_metric="mode_coverage").read_text()
    section = md.split("## Parameter importance and parallel coordinates", 1)[1].split("\n## ", 1)[0]
    assert [ln for ln in section.splitlines() if ln.strip()] == [imp.note]
    assert not list((tmp_path / "r" / "figures").glob("parallel_*.png"))


def test_the_report_shows_importance_and_parallel_coordinates(tmp_path):
    out = tmp_path / "report"
    md = write_report(_rows(), None, out, primary_metric="mode_coverage").read_text()
    section = md.split("## Parameter importance and parallel coordinates", 1)[1].split("\n## ", 1)[0]
    assert "| parameter | fanova | ped_anova |" in section
    assert section.index("| normalizer |") < section.index("| scale |")
    for fig in ("figures/importance_blobs.png", "figures/parallel_blobs.png"):
        assert fig in section and (out / fig).stat().st_size > 5000
    html = (out / "report.html").read_text()
    assert "Parameter importance and parallel coordinates" in html and "data:image/png;base64" in html


def test_searched_parameters_ignore_the_replicate_and_constants():
    df = _rows(8)
    assert "seed" not in searched_parameters(df) and "lr_g" not in searched_parameters(df)
