"""End to end: `sweeper run` on a tiny spec with real Ray, Optuna, MLflow (SQLite) and Parquet."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_TRAIN, run_sweeper

from sweeper import results

pytestmark = pytest.mark.slow

SPEC = {
    "name": "tiny",
    "description": "a tiny end-to-end sweep",
    "train": TINY_TRAIN,
    "objective": {"metric": "mode_coverage"},
    "space": {
        "normalizer": {"choice": ["none", "sn", "bsn"]},
        "scale": {"loguniform": [0.5, 2.0]},
        "lr_d": {"loguniform": [1e-4, 1e-3]},
        "n_dis": {"choice": [1, 2]},
    },
    "seeds": [0, 1],
    "search": {"sampler": "tpe", "seed": 0, "trials": 3},
}


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("e2e")
    (work / "tiny.yaml").write_text(yaml.safe_dump(SPEC))
    proc = run_sweeper(["run", "tiny.yaml", "--num-cpus", "2"], work)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, proc


def test_parquet_has_one_completed_v1_row_per_trial(tiny_sweep):
    work, _ = tiny_sweep
    df = pd.read_parquet(work / "results" / "tiny" / "trials")  # plain pandas, no snsweep code
    assert len(df) == 6  # 3 configurations x 2 seeds
    missing = [c for c in results.BASE_COLUMNS if c not in df.columns]
    assert not missing
    for m in ("mode_coverage", "hq_fraction"):
        assert {f"final_{m}", f"best_{m}", f"best_{m}_step"} <= set(df.columns)
    assert (df["status"] == "completed").all()
    assert df["trial_id"].is_unique
    assert df["scale"].dtype == "float64" and df["seed"].dtype == "int64"
    # each configuration ran once per seed
    per_config = df.groupby(["normalizer", "scale", "lr_d", "n_dis"])["seed"].apply(sorted)
    assert all(s == [0, 1] for s in per_config)
    assert df["final_mode_coverage"].between(0, 1).all()
    cfg = json.loads(df["config_json"].iloc[0])
    assert cfg["resolution"] == 8 and cfg["normalizer"] == df["normalizer"].iloc[0]
    assert not list((work / "results" / "tiny" / "trials").glob(".*"))  # no temp leftovers
    curves = results.load_curves(work / "results" / "tiny")
    assert set(curves["step"]) == {3, 6}


def test_mlflow_parent_run_with_one_finished_child_per_trial(tiny_sweep):
    work, _ = tiny_sweep
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("snsweep.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(parents) == 1 and len(children) == 6
    assert all(r.info.status == "FINISHED" for r in runs)  # no run left RUNNING
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    df = pd.read_parquet(work / "results" / "tiny" / "trials")
    by_run = df.set_index("mlflow_run_id")
    for child in children:
        row = by_run.loc[child.info.run_id]
        assert child.data.tags["trial_id"] == row["trial_id"]
        assert child.data.params["normalizer"] == row["normalizer"]
        assert float(child.data.params["scale"]) == pytest.approx(row["scale"])
        assert int(child.data.params["seed"]) == row["seed"]
        history = client.get_metric_history(child.info.run_id, "mode_coverage")
        assert sorted(m.step for m in history) == [3, 6]
    arts = [a.path for a in client.list_artifacts(parents[0].info.run_id, "report")]
    assert "report/report.md" in arts
    # the parent run is created in the background while Ray starts the trials: sweep.json
    # still names it, and the parent keeps a copy of sweep.json
    meta = json.loads((work / "results" / "tiny" / "sweep.json").read_text())
    assert meta["mlflow_parent_run_id"] == parents[0].info.run_id
    assert "sweep.json" in [a.path for a in client.list_artifacts(parents[0].info.run_id)]


def test_unopenable_mlflow_store_warns_and_records_parquet_only(tmp_path: Path):
    """A store that cannot be created (its directory is a file) must not cost the sweep."""
    spec = {**SPEC, "name": "nostore", "search": {**SPEC["search"], "trials": 1}, "seeds": [0]}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "afile").write_text("")
    uri = f"sqlite:///{tmp_path / 'afile' / 'mlflow.db'}"
    proc = run_sweeper(["--tracking-uri", uri, "run", "s.yaml", "--num-cpus", "2"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "warning: cannot open the MLflow store" in proc.stdout and "Parquet only" in proc.stdout
    df = pd.read_parquet(tmp_path / "results" / "nostore" / "trials")
    assert list(df["status"]) == ["completed"] and df["mlflow_run_id"].isna().all()
    assert "Traceback" not in proc.stdout + proc.stderr


def test_report_and_sweep_meta_written(tiny_sweep):
    work, proc = tiny_sweep
    sweep = work / "results" / "tiny"
    assert (sweep / "report" / "report.md").read_text().strip()
    meta = json.loads((sweep / "sweep.json").read_text())
    assert meta["trials"] == 6 and meta["versions"]["ray"] == "2.60.0"
    assert meta["spec"]["name"] == "tiny"


def test_progress_output_names_trials_metric_and_what_is_left(tiny_sweep):
    _, proc = tiny_sweep
    out = proc.stdout
    assert out.count("started") >= 6
    assert "left" in out and "done 6/6" in out
    assert "mode_coverage=" in out
    assert "best configuration:" in out and "report:" in out and "sweeper ui" in out
    assert "sweep tiny finished in " in out and "(Ray start " in out  # where the time went


def test_mlflow_runs_read_as_what_they_are(tiny_sweep):
    """Issue 20: names, standard tags, a sample-grid image series, a loadable generator per completed trial."""
    work, _ = tiny_sweep
    import mlflow
    from mlflow.tracking import MlflowClient
    from PIL import Image

    from sweeper.run import mlflow_layout as layout

    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("tiny")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert exp.tags["mlflow.note.content"].startswith("a tiny end-to-end sweep")
    assert exp.tags["snsweep.preset"] == "custom" and len(exp.tags["snsweep.spec_hash"]) == 12
    assert json.loads(exp.tags[layout.VIEW_TAG])["selectedColumns"][:5] == [
        "params.`normalizer`", "params.`scale`", "params.`lr_d`", "params.`n_dis`", "params.`seed`"
    ]  # fmt: skip
    meta = json.loads((work / "results" / "tiny" / "sweep.json").read_text())
    df = pd.read_parquet(work / "results" / "tiny" / "trials").set_index("mlflow_run_id")
    runs = client.search_runs([exp.experiment_id])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    (parent,) = [r for r in runs if r.data.tags.get("snsweep.role") == "sweep"]
    varied = list(SPEC["space"])
    for run in [parent, *children]:
        tags = run.data.tags
        assert tags["mlflow.user"] and tags["mlflow.source.name"].startswith("sweeper run tiny.yaml")
        assert tags.get("mlflow.source.git.commit") == meta["git_commit"] or meta["git_commit"] is None
    for child in children:
        row = df.loc[child.info.run_id]
        assert child.info.run_name == layout.trial_run_name(row.to_dict(), varied)  # e.g. "bsn c=1.06 ... s0"
        assert child.data.tags["trial_id"] == row["trial_id"]
        images = [a.path for a in client.list_artifacts(child.info.run_id, "images")]
        steps = sorted(int(p.split("+step+")[1].split("+")[0]) for p in images if p.endswith(".png"))
        assert steps == [3, 6], images  # one grid per evaluation, keyed by the training step
        png = next(p for p in images if p.endswith(".png") and "+step+6+" in p)
        grid = Image.open(client.download_artifacts(child.info.run_id, png, str(work / "dl")))
        assert min(grid.size) >= 256
        (output,) = child.outputs.model_outputs  # completed: its final generator
        model = client.get_logged_model(output.model_id)
        assert model.name == "generator" and str(model.status) == "READY" and output.step == 6
    # the parent's objective: the best trial's so far, one point per trial done
    history = client.get_metric_history(parent.info.run_id, "mode_coverage")
    assert sorted(m.step for m in history) == list(range(1, 7))
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert values == sorted(values) and values[-1] == pytest.approx(df["final_mode_coverage"].max())

    # the generator loads with mlflow.pytorch and is the trial's final one, from its last checkpoint
    import torch

    from sweeper.run.generator_model import snapshot
    from trainers.config import TrainConfig
    from trainers.models import build

    child = children[0]
    tid = child.data.tags["trial_id"]
    (ckpt,) = sorted((work / "results" / "tiny" / "tune").glob(f"*{tid}*/checkpoint_*"))[-1:]
    snap = snapshot(ckpt, None)
    assert snap is not None and snap.step == 6
    g, _ = build(TrainConfig.from_dict(snap.config))
    g.load_state_dict(snap.state)
    g.eval()
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pytorch.load_model(f"runs:/{child.info.run_id}/generator")
    finally:
        mlflow.set_tracking_uri(None)
    z = torch.randn(4, SPEC["train"]["latent_dim"])
    with torch.no_grad():
        out = loaded(z)
        assert out.shape == (4, 3, 8, 8) and torch.allclose(out, g(z), atol=1e-6)
    print(f"closing note: {child.info.run_name!r}: images {steps} ({grid.size[0]} px); "
          f"load_model(runs:/{child.info.run_id}/generator) -> {tuple(out.shape)}")  # fmt: skip


def test_mlflow_ui_opens_on_the_runs_table_in_a_real_browser(tiny_sweep, tmp_path: Path):
    """Issue 16: `sweeper ui`'s link, in headless Chromium, is the runs table with the parent and its
    nested trials; a trial's page lists its params and shows its curves and sample grids; a grid and
    the parent's report.html load from the UI server."""
    import io
    import os

    import ui_pages
    from browser import chromium, find_chromium
    from mlflow.tracking import MlflowClient
    from PIL import Image
    from ray_fixtures import free_ports, non_loopback

    binary = find_chromium()
    if binary is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium; .ci/run installs it)")
    work, _ = tiny_sweep
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("snsweep.role") == "sweep"]
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId")}
    shots = Path(os.environ.get("SNSWEEP_SCREENSHOTS") or tmp_path)
    (cdp,) = free_ports(1)
    with ui_pages.sweeper_ui(work) as ui, chromium(binary, cdp) as page:
        assert not non_loopback(ui.pids), "the MLflow UI listens beyond 127.0.0.1"
        assert f"sweep tiny, its trials: {ui.base}#/experiments/{exp.experiment_id}/runs?" in ui.stdout

        landing = ui_pages.open_landing(page, ui)
        assert f"/experiments/{exp.experiment_id}/runs?" in landing["href"]  # not the GenAI overview
        assert "workflowType=machine_learning" in landing["href"]
        assert "Detect Issues" not in landing["text"] and "Token usage" not in landing["text"]
        assert landing["count"] == "7"  # the parent and 6 trials, the trials nested (collapsed)
        assert [(r["name"], r["expander"]) for r in landing["rows"]] == [("tiny", True)]
        for column in ("params.`normalizer`", "params.`scale`", "params.`lr_d`", "params.`n_dis`", "params.`seed`",
                       "metrics.`mode_coverage`", "tags.`status`"):  # fmt: skip
            assert column in landing["columns"], (column, landing["columns"])

        rows = ui_pages.expand_parent(page, "tiny", len(children))
        page.screenshot(shots / "runs-table.png")
        assert rows[0]["name"] == "tiny" and {r["name"] for r in rows[1:]} == set(children)
        assert all(r["indent"] > rows[0]["indent"] for r in rows[1:])  # nested under the parent

        name, trial = sorted(children.items())[0]
        href = next(r["href"] for r in rows if r["name"] == name)
        ui_pages.open_run(page, ui, href)
        shown = ui_pages.run_params(page)
        for key in ("normalizer", "scale", "lr_d", "n_dis", "seed"):
            assert shown.get(key) == trial.data.params[key], (key, shown)

        ui_pages.open_run(page, ui, href, "model-metrics")
        curves = ui_pages.show_curves(page, "mode_coverage")
        page.screenshot(shots / "trial-curves.png")
        assert f"{name} (mode_coverage)" in curves["text"]  # the curve's legend
        assert curves["images"] and min(curves["images"][0]) >= 256  # the last sample grid, decoded

        grid = next(a.path for a in client.list_artifacts(trial.info.run_id, "images") if a.path.endswith(".png"))
        assert min(ui_pages.artifact_image(page, ui, href, grid)) >= 256
        status, body = ui_pages.fetch(ui, trial.info.run_id, grid)
        assert status == 200 and min(Image.open(io.BytesIO(body)).size) >= 256

        parent_href = rows[0]["href"]
        assert "Sweep tiny" in ui_pages.artifact_html(page, ui, parent_href, "report/report.html")
        status, body = ui_pages.fetch(ui, parent.info.run_id, "report/report.html")
        assert status == 200 and b"<html" in body[:2000].lower()
