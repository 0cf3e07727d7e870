"""A packed sweep end to end: `pack: 3` trains up to 3 configurations per Tune trial, recorded as normal trials.

The space mixes normalizers, which cannot share a pack (one module structure under vmap): the pack
searcher groups same-normalizer members, so packs may be smaller than 3 but every training runs once.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml
from conftest import TINY_TRAIN, run_sweeper

pytestmark = pytest.mark.slow

SPEC = {
    "name": "packed",
    "train": TINY_TRAIN,
    "space": {"normalizer": {"choice": ["none", "sn", "bsn"]}, "scale": {"loguniform": [0.5, 2.0]},
              "lr_d": {"loguniform": [1e-4, 1e-3]}},  # fmt: skip
    "seeds": [0, 1],
    "search": {"sampler": "tpe", "seed": 0, "trials": 3},
    "pack": 3,
}


def test_packed_sweep_records_k_normal_trials(tmp_path):
    (tmp_path / "packed.yaml").write_text(yaml.safe_dump(SPEC))
    proc = run_sweeper(["run", "packed.yaml", "--num-cpus", "2"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    df = pd.read_parquet(tmp_path / "results" / "packed" / "trials")
    assert len(df) == 6 and df["trial_id"].is_unique  # 3 configurations x 2 seeds
    assert (df["status"] == "completed").all()
    packs = df.groupby(df["trial_id"].str.rsplit("-m", n=1).str[0])
    assert (packs["normalizer"].nunique() == 1).all() and packs.size().max() <= 3
    assert df["final_mode_coverage"].notna().all()
    assert df.groupby(["normalizer", "scale", "lr_d"])["seed"].apply(sorted).map(lambda s: s == [0, 1]).all()
    # progress: one start and one finish line per pack, not one per training
    starts = [ln for ln in proc.stdout.splitlines() if ln.startswith("  > pack [")]
    ends = [ln for ln in proc.stdout.splitlines() if ln.startswith("  ok pack [")]
    assert len(starts) == len(ends) == packs.ngroups and "  > trial " not in proc.stdout
    assert sum(int(ln.split(": ", 1)[1].split(" of ")[0]) for ln in ends) == 6  # completed trainings
    assert all("trainings (trials " in ln and "normalizer=" in ln and "seed=" in ln for ln in starts)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("packed")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("snsweep.role") == "trial"]
    assert len(children) == 6 and all(r.info.status == "FINISHED" for r in runs)
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "mode_coverage")] == [3, 6]
    assert (tmp_path / "results" / "packed" / "report" / "report.md").read_text().strip()
