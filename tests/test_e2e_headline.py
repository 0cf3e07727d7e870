"""End to end: the cifar10-scale preset's settings at large c, through `sweeper run`, to the headline.

A real sweep (Ray, Optuna's grid, MLflow on SQLite, Parquet) of the preset with only what a CPU
test must change (a few steps, procedural 32 px images instead of CIFAR-10, the small extractor):
SN at c = 1, 5, 7, 10 and BSN at c = 1, 2, two seeds. The large-c runs must complete with
evaluations (the preset trains to the end unless the loss is NaN/Inf), and the report must open
with a headline whose numbers are the ones in best_scales.parquet and headline.json.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import run_sweeper

from sweeper import analysis, results
from sweeper.spec import preset_text

pytestmark = pytest.mark.slow


def _spec() -> dict:
    spec = yaml.safe_load(preset_text("cifar10-scale"))
    train = spec["train"]
    for key in ("data_root", "inception_weights", "stats_cache_dir"):
        train.pop(key)
    train.update(dataset="blobs", device="cpu", iterations=2, eval_every=2, eval_samples=64, eval_real_samples=64,
                 is_samples=128, metrics=["fid_small", "is_small"], diagnostics=False)  # fmt: skip
    spec.update(
        name="c10large", seeds=[0, 1], objective={"metric": "fid_small", "selection": "final"},
        space=[{"normalizer": "sn", "scale": {"grid": [1.0, 5.0, 7.0, 10.0]}},
               {"normalizer": "bsn", "scale": {"grid": [1.0, 2.0]}}],
        resources={"cpus_per_trial": 1, "gpus_per_trial": 0},
    )  # fmt: skip
    return spec


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("e2e-headline")
    spec = _spec()
    assert spec["scheduler"]["stop_on_divergence"] is False  # the preset's own choice, kept
    assert (spec["train"]["width"], spec["train"]["batch_size"], spec["train"]["resolution"]) == (1.0, 64, 32)
    (work / "s.yaml").write_text(yaml.safe_dump(spec))
    proc = run_sweeper(["run", "s.yaml", "--num-cpus", "2"], work, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (work / "stdout.txt").write_text(proc.stdout)
    return work / "results" / "c10large"


def test_large_scales_record_completed_rows_with_evaluations(sweep: Path) -> None:
    df = results.load(sweep)
    assert len(df) == 12 and (df["status"] == "completed").all()
    big = df[(df["normalizer"] == "sn") & (df["scale"] >= 5)]
    assert len(big) == 6 and (big["steps_done"] == 2).all() and big["error"].isna().all()
    assert big["final_fid_small"].map(math.isfinite).all() and big["final_is_small"].map(math.isfinite).all()
    assert (df["is_samples"] == 128).all() and (df["is_splits"] == 10).all()
    assert (df["feature_extractor"] == "seeded-small-v1").all()
    curves = results.load_curves(sweep)
    assert set(curves["sweep"]) == {"c10large"} and set(curves["attempt"]) == {1}


def test_report_opens_with_a_headline_consistent_with_best_scales(sweep: Path) -> None:
    md = (sweep / "report" / "report.md").read_text()
    assert [ln for ln in md.splitlines() if ln.startswith("## ")][0] == "## Headline"
    head = json.loads((sweep / "report" / "headline.json").read_text())
    assert head["metric"] == "fid_small" and head["selection"] == "final"
    (block,) = head["blocks"]
    best = pd.read_parquet(sweep / "report" / "best_scales.parquet")
    used = best[best["in_headline"]]
    rows = {r["normalizer"]: r for r in block["rows"]}
    assert set(rows) == {"sn", "bsn"} and len(used) == 2
    for norm, r in rows.items():
        b = used[used["normalizer"] == norm].iloc[0]
        assert (b["best_scale"], b["mean"], b["n_seeds"]) == (r["scale"], r["mean"], r["n_seeds"])
        assert f"best scale for {norm}: c = {analysis.format_scale(r['scale'])} (fid_small " in md
    assert block["comparison"]["n_seeds"] == 2 and "bsn - sn at their best scales" in md
    assert analysis.headline_lines(head) == analysis.headline_lines(analysis.read_headline(sweep / "report"))


def test_the_command_ends_with_the_headline(sweep: Path) -> None:
    """`sweeper run` prints the answer, the report's headline lines, after the summary line."""
    out = (sweep.parent.parent / "stdout.txt").read_text().splitlines()
    lines = analysis.headline_lines(analysis.read_headline(sweep / "report"))
    finished = next(i for i, ln in enumerate(out) if ln.startswith("sweep c10large finished"))
    start = out.index(lines[0].rstrip(), finished)
    assert [ln.rstrip() for ln in out[start : start + len(lines)]] == [ln.rstrip() for ln in lines]
