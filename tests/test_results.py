"""sweeper.results: schema v2 (null errors, evaluation facts, curves with sweep and attempt); v1 files next to v2."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweeper import analysis, results
from sweeper.results import schema
from sweeper.run.rows import summary_row

METRICS = ["fid_small", "is_small"]


def _v2_row(norm: str, c: float, seed: int, fid: float, **kw) -> dict:
    from trainers.config import TrainConfig

    cfg = TrainConfig(dataset="cifar10", resolution=32, normalizer=norm, scale=c, seed=seed, iterations=100,
                      eval_samples=256, metrics=METRICS)  # fmt: skip
    t = datetime(2026, 1, 1, tzinfo=UTC)
    return summary_row(
        sweep="s", trial_id=f"v2-{norm}-{c}-{seed}", attempt=1, status=kw.pop("status", "completed"),
        error=kw.pop("error", ""), params={**cfg.to_dict(), "loss": cfg.resolved_loss},
        history=[{"step": 100, "fid_small": fid, "is_small": 2.0}], last={"step": 100}, metrics=METRICS,
        directions={"fid_small": "min", "is_small": "max"}, started=t, finished=t,
    )  # fmt: skip


def _write_v1(sweep_dir: Path, row: dict) -> None:
    """A trial file and a curves file exactly as the v1 writer made them: error "" when there was none,
    no evaluation-fact columns, curves without sweep/attempt, and a config without is_samples/is_splits."""
    v1_fields = [f for f in schema.BASE_FIELDS if f.name in schema.V1_COLUMNS]
    fields = v1_fields + [pa.field(f"{k}_{m}", pa.int64() if k == "best_step" else pa.float64())
                          for m in METRICS for k in ("final", "best")]  # fmt: skip
    fields += [pa.field(f"best_{m}_step", pa.int64()) for m in METRICS]
    config = json.loads(row["config_json"])
    config.pop("is_samples"), config.pop("is_splits")
    old = {**row, "error": row["error"] or "", "config_json": json.dumps(config, sort_keys=True)}
    sch = pa.schema(fields, metadata={"snsweep_schema": "1"})
    name = f"{row['trial_id']}-a{row['attempt']}.parquet"
    (sweep_dir / "trials").mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist([{f.name: old.get(f.name) for f in sch}], schema=sch)
    pq.write_table(table, sweep_dir / "trials" / name)
    curves = pa.Table.from_pylist(
        [{"trial_id": row["trial_id"], "step": 100, "metric": "fid_small", "value": row["final_fid_small"]}],
        schema=pa.schema([("trial_id", pa.string()), ("step", pa.int64()), ("metric", pa.string()),
                          ("value", pa.float64())]),
    )  # fmt: skip
    (sweep_dir / "curves").mkdir(exist_ok=True)
    pq.write_table(curves, sweep_dir / "curves" / name)


def test_v2_files_state_the_evaluation_and_null_errors(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    row = _v2_row("sn", 1.0, 0, 30.0)
    results.write_trial(sweep, row, METRICS)
    results.write_curves(sweep, row["trial_id"], 1, [{"step": 100.0, "fid_small": 30.0}])
    t = pq.read_table(next((sweep / "trials").glob("*.parquet")))
    assert schema.file_version(t.schema) == results.SCHEMA_VERSION == 2
    got = t.to_pylist()[0]
    assert got["error"] is None
    assert (got["eval_samples"], got["eval_real_samples"], got["is_samples"], got["is_splits"]) == (256, 256, 256, 10)
    assert got["feature_extractor"] == "seeded-small-v1"
    c = pq.read_table(next((sweep / "curves").glob("*.parquet"))).to_pylist()[0]
    assert (c["sweep"], c["attempt"], c["trial_id"]) == ("s", 1, row["trial_id"])


def test_v1_files_load_and_analyse_next_to_v2_files(tmp_path: Path) -> None:
    sweep = tmp_path / "s"
    rng = np.random.default_rng(0)
    for norm, c, seed in [(n, c, s) for n in ("sn", "bsn") for c in (1.0, 1.4) for s in range(4)]:
        fid = 30.0 - 3 * (c == 1.4) - 2 * (norm == "bsn") + rng.normal(0, 0.1)
        row = _v2_row(norm, c, seed, fid)
        if seed < 2:  # half the seeds come from an older sweep, written the v1 way
            _write_v1(sweep, {**row, "trial_id": row["trial_id"].replace("v2", "v1")})
        else:
            results.write_trial(sweep, row, METRICS)
            results.write_curves(sweep, row["trial_id"], 1, [{"step": 100.0, "fid_small": fid}])
    results.write_trial(sweep, _v2_row("sn", 2.0, 0, np.nan, status="failed", error="boom"), METRICS)
    df = results.load(sweep)
    v1 = df[df["trial_id"].str.startswith("v1")]
    assert len(v1) == 8 and v1["error"].isna().all()  # "" became null
    assert (v1["is_splits"] == 10).all() and (v1["is_samples"] == 256).all() and (v1["eval_real_samples"] == 256).all()
    assert (v1["feature_extractor"] == "seeded-small-v1").all()
    assert df.loc[df["status"] == "failed", "error"].tolist() == ["boom"]
    for col in schema.EVAL_FACT_COLUMNS:  # same facts whichever version wrote the row
        assert df.loc[df["status"] != "failed", col].nunique() == 1, col
    curves = results.load_curves(sweep)
    assert list(curves.columns[:3]) == ["sweep", "trial_id", "attempt"]
    assert (curves["sweep"] == "s").all() and (curves["attempt"] == 1).all() and len(curves) == 16
    best = analysis.best_scales(df, ["fid_small"], ["final"], n_boot=0)
    assert len(best) == 2  # v1 and v2 rows are one setting per normalizer
    assert set(best["best_scale"]) == {1.4} and (best["n_seeds"] == 4).all()
    assert list(best.sort_values("normalizer")["n_scales"]) == [2, 2]


def test_v1_eval_facts_follow_the_v1_trainer() -> None:
    facts = schema.v1_eval_facts({"eval_samples": 10_000, "eval_real_samples": 5_000, "metrics": ["is", "fid"]})
    assert facts == {"eval_samples": 10_000, "eval_real_samples": 5_000, "is_samples": 10_000, "is_splits": 10,
                     "feature_extractor": schema.INCEPTION_EXTRACTOR}  # fmt: skip
    assert schema.v1_eval_facts({"eval_samples": 64, "metrics": ["mode_coverage"]})["feature_extractor"] is None
    assert schema.v1_eval_facts({})["eval_samples"] is None


@pytest.mark.parametrize(
    ("metrics", "extractor"),
    [(["fid"], "inception-v3-tf-2015-12-05@6726825d"), (["is_small", "kid_small"], "seeded-small-v1"),
     (["fid", "fid_small"], "inception-v3-tf-2015-12-05@6726825d+seeded-small-v1"), (["mode_coverage"], None)],
)  # fmt: skip
def test_trainer_and_results_name_extractors_alike(metrics: list[str], extractor: str | None) -> None:
    """The trainer states its protocol (trainers.metrics.evaluation_facts); the results stage reads v1
    files with its own copy of the naming rule: the two must agree."""
    from trainers.config import TrainConfig
    from trainers.metrics import evaluation_facts

    facts = evaluation_facts(TrainConfig(metrics=metrics, eval_samples=100, is_samples=300, is_splits=3))
    assert facts["feature_extractor"] == extractor == schema.extractor_identity(metrics)
    has_is = any(m.startswith("is") for m in metrics)
    assert (facts["is_samples"], facts["is_splits"]) == ((300, 3) if has_is else (None, None))
