"""How a sweep reads in MLflow (issues 16 and 20): names, tags, the runs-table view, images, models.

The pure layout is table-tested; the tracker's new calls (experiment tags, ``log_image``,
``log_model``) run against a real SQLite store and are read back through ``MlflowClient``; the
generator logged from a trainer checkpoint is loaded back with ``mlflow.pytorch.load_model``.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import mlflow
import pytest
import torch
from conftest import TINY_TRAIN

from sweeper.run import mlflow_layout as layout
from sweeper.run.generator_model import readable_grid, save_generator, snapshot, snapshots
from sweeper.run.tracking import Tracker, sweep_experiments

MLFLOW_UI = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"


@pytest.mark.parametrize(
    ("params", "varied", "attempt", "name"),
    [
        ({"normalizer": "bsn", "scale": 2.0, "seed": 1}, ["normalizer", "scale"], 1, "bsn c=2 s1"),
        ({"normalizer": "sn", "scale": 1.23456, "seed": 0}, ["scale"], 1, "sn c=1.23 s0"),
        ({"normalizer": "none", "scale": 1.7, "seed": 2}, ["normalizer", "scale"], 1, "none s2"),  # c ignored
        ({"normalizer": "bsn", "scale": 0.8, "seed": 1, "lr_d": 2e-4, "n_dis": 5},
         ["normalizer", "scale", "lr_d", "n_dis"], 1, "bsn c=0.8 lr_d=0.0002 n_dis=5 s1"),
        ({"normalizer": "sn", "scale": 1.0, "seed": 3}, ["scale"], 2, "sn c=1 s3 a2"),
        # the varied parameters join while the name stays short; the rest are columns
        ({"normalizer": "bsn", "scale": 1.5, "seed": 0, "lr_g": 1e-3, "lr_d": 3e-4, "beta1": 0.5, "beta2": 0.99,
          "n_dis": 2}, ["normalizer", "scale", "lr_g", "lr_d", "beta1", "beta2", "n_dis"], 1,
         "bsn c=1.5 lr_g=0.001 lr_d=0.0003 beta1=0.5 s0"),
    ],  # fmt: skip
)
def test_trial_run_names_say_what_the_trial_is(params, varied, attempt, name):
    got = layout.trial_run_name(params, varied, attempt)
    assert got == name
    assert len(got) <= layout.RUN_NAME_LIMIT


def test_runs_view_puts_the_swept_knobs_seed_objective_and_status_in_columns():
    view = layout.runs_view(["n_dis", "scale", "normalizer", "lr_d"], "mode_coverage")
    assert view == {
        "selectedColumns": [
            "params.`normalizer`", "params.`scale`", "params.`lr_d`", "params.`n_dis`", "params.`seed`",
            "metrics.`mode_coverage`", "tags.`status`", "attributes.`Models`",
        ]
    }  # fmt: skip
    # no sort key: MLflow nests trials under the parent only while runs are sorted by time
    assert "orderByKey" not in view


def test_the_objective_column_is_the_metric_itself_unless_the_best_value_counts():
    assert layout.objective_column("mode_coverage", "final") == "mode_coverage"
    assert layout.objective_column("fid_small", "best") == "best_fid_small"


def test_experiment_tags_mark_a_model_training_experiment_with_its_view():
    view = layout.runs_view(["normalizer"], "best_fid")
    tags = layout.experiment_tags(
        description="d", preset="demo", spec_digest="abc", version="0.1.0", objective="best_fid", mode="min",
        view=view,
    )  # fmt: skip
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"] == "d"
    assert json.loads(tags[f"mlflow.sharedViewState.{layout.VIEW_KEY}"]) == view
    assert {tags["snsweep.preset"], tags["snsweep.spec_hash"], tags["snsweep.version"]} == {"demo", "abc", "0.1.0"}


def test_the_names_the_layout_relies_on_are_the_installed_mlflow_uis():
    """An MLflow upgrade that renames the kind tag, the shared-view tag or the workflow switch fails here."""
    bundle = "".join(p.read_text(errors="replace") for p in MLFLOW_UI.glob("*.js"))
    for needle in (
        '"mlflow.experimentKind"', 'CUSTOM_MODEL_DEVELOPMENT="custom_model_development"',
        '"mlflow.sharedViewState."', '"viewStateShareKey"', 'get("workflowType")',
        'MACHINE_LEARNING="machine_learning"',
        '"selectedColumns"', 'e+".`"+t+"`"', '"mlflow.note.content"',
    ):  # fmt: skip
        assert needle in bundle, needle


def test_ui_url_opens_the_runs_table_in_the_model_training_workflow():
    url = layout.ui_url("http://127.0.0.1:5000/", "7")
    assert url == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
        f"&viewStateShareKey={layout.VIEW_KEY}"
    )


@pytest.mark.parametrize(
    ("argv", "source"),
    [
        (["/x/.venv/bin/sweeper", "run", "demo"], "sweeper run demo"),
        (["/repo/sweeper/cli/__main__.py", "run", "s.yaml"], "sweeper run s.yaml"),
        (["bench.py", "--quick"], "bench.py --quick"),
    ],
)
def test_source_name_is_the_command_that_ran(argv, source):
    assert layout.source_name(argv) == source


def test_standard_tags_name_user_source_and_commit():
    tags = layout.standard_tags("abc123")
    assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.git.commit"] == "abc123" and tags["mlflow.source.name"]
    assert "mlflow.source.git.commit" not in layout.standard_tags(None)


def test_sample_grids_are_enlarged_to_a_readable_size_without_blurring():
    from PIL import Image

    small = Image.new("RGB", (82, 82), (10, 20, 30))
    small.putpixel((0, 0), (255, 0, 0))
    buf = io.BytesIO()
    small.save(buf, "PNG")
    big = readable_grid(buf.getvalue())
    assert big.size == (328, 328)  # x4: the smallest whole factor reaching 256
    assert big.getpixel((3, 3)) == (255, 0, 0) and big.getpixel((4, 4)) == (10, 20, 30)  # nearest neighbour
    buf = io.BytesIO()
    Image.new("RGB", (300, 280)).save(buf, "PNG")
    assert readable_grid(buf.getvalue()).size == (300, 280)


# --- the tracker's new calls against a real store ------------------------------------------------------
def _trainer_checkpoint(tmp: Path) -> Path:
    from trainers.config import TrainConfig
    from trainers.loop import Trainer

    cfg = TrainConfig.from_dict({**TINY_TRAIN, "iterations": 2, "eval_every": 2, "diagnostics": False})
    trainer = Trainer(cfg)
    trainer.run()
    trainer.save(tmp / "ckpt")
    return tmp / "ckpt"


@pytest.mark.slow  # ~20 s: a fresh store, torch.export's first use, a load
def test_generator_logged_from_a_checkpoint_loads_back_with_mlflow_pytorch(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "layout", tmp_path / "artifacts")
    tracker.describe_experiment({"mlflow.experimentKind": "custom_model_development", "k": "v"})
    run = tracker.start_run("bsn c=2 s1", {"trial_id": "t1"}, {"normalizer": "bsn"})
    ckpt = _trainer_checkpoint(tmp_path)
    snap = snapshot(ckpt, None)
    assert snap is not None and snap.step == 2 and "config" not in snap.state

    from PIL import Image

    tracker.log_image(run, Image.new("RGB", (256, 256), (0, 128, 255)), layout.SAMPLES_KEY, step=2)
    saved = save_generator(snap, tmp_path / "generator")
    tracker.log_model(run, "generator", saved, step=2, params={"normalizer": "bsn", "scale": 2.0})
    tracker.end_run(run)
    assert tracker.drain(timeout_s=60) and tracker.failures == 0, tracker.last_error
    assert not saved.exists()  # the local copy is removed once the model is READY

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("layout")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development" and exp.tags["k"] == "v"
    images = [a.path for a in client.list_artifacts(run.run_id, "images")]
    assert any(re.match(r"images/samples\+step\+2\+.*\.png$", p) for p in images), images
    (model,) = client.search_logged_models([exp.experiment_id])
    assert model.name == "generator" and str(model.status) == "READY" and model.source_run_id == run.run_id
    assert model.params == {"normalizer": "bsn", "scale": "2.0"}
    assert [o.model_id for o in client.get_run(run.run_id).outputs.model_outputs] == [model.model_id]

    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pytorch.load_model(f"runs:/{run.run_id}/generator")
    finally:
        mlflow.set_tracking_uri(None)
    from trainers.config import TrainConfig
    from trainers.models import build

    g, _ = build(TrainConfig.from_dict(snap.config))
    g.load_state_dict(snap.state)
    g.eval()
    z = torch.randn(5, snap.config["latent_dim"])
    with torch.no_grad():
        assert torch.allclose(loaded(z), g(z), atol=1e-6)  # any batch size, the trained weights


def test_a_generator_that_cannot_be_built_is_one_line_and_the_others_still_log(tmp_path: Path):
    """Through the recorder's MLflow side: a broken checkpoint costs its own model, nothing else."""
    from mlflow.tracking import MlflowClient

    from sweeper.run.trial_runs import TrialRuns

    ckpt = _trainer_checkpoint(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    state = torch.load(ckpt / "checkpoint.pt", weights_only=True)
    state["G"].pop(next(iter(state["G"])))  # a generator weight is missing
    torch.save(state, broken / "checkpoint.pt")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "broken", tmp_path / "artifacts")
    said: list[str] = []
    trials = TrialRuns(tmp_path / "sweep", "mode_coverage", "final", "max", said.append)
    runs = [tracker.start_run(name, {}, {}) for name in ("bad", "good")]
    last = {"step": 2, "trial_status": "completed"}
    trials.log_checkpoint(tracker, [(runs[0], "bad", None, last)], broken)
    trials.log_checkpoint(tracker, [(runs[1], "good", None, last)], ckpt)
    trials.finish(tracker)
    for run in runs:
        tracker.end_run(run)
    assert tracker.drain(timeout_s=60) and tracker.outages == 0
    assert len(said) == 1 and said[0].startswith("    (could not log the generator of bad: RuntimeError: "), said
    client = MlflowClient(uri)
    models = client.search_logged_models([client.get_experiment_by_name("broken").experiment_id])
    assert [m.source_run_id for m in models] == [runs[1].run_id] and str(models[0].status) == "READY"
    grids = [a.path for a in client.list_artifacts(runs[1].run_id, "images")]
    assert not grids  # no samples.png in a bare trainer checkpoint: nothing to log, nothing fails


def test_model_worker_runs_jobs_in_order_and_survives_a_failing_one():
    from sweeper.run.generator_model import ModelWorker

    done: list[int] = []
    errors: list[str] = []
    worker = ModelWorker(errors.append)

    def fail() -> None:
        raise ValueError("no")

    for job in (lambda: done.append(1), fail, lambda: done.append(2)):
        worker.submit(job)
    assert worker.join(timeout_s=10)
    assert done == [1, 2] and errors == ["ValueError: no"]
    assert worker.join(timeout_s=1)  # nothing queued: returns at once


def test_sweep_experiments_lists_sweeps_newest_first_and_never_creates_a_store(tmp_path: Path):
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert sweep_experiments(missing) == [] and not (tmp_path / "none.db").exists()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for name in ("first", "second"):
        tracker = Tracker(uri, name, tmp_path / "artifacts")
        tracker.describe_experiment({"snsweep.version": "0.1.0"})
        assert tracker.drain(timeout_s=30)
    assert [name for name, _ in sweep_experiments(uri)] == ["second", "first"]


def test_snapshot_takes_one_members_generator_from_a_packed_checkpoint(tmp_path: Path):
    from trainers.config import TrainConfig
    from trainers.loop import CHECKPOINT_FILE
    from trainers.packed import PackedTrainer

    base = {**TINY_TRAIN, "iterations": 2, "eval_every": 2, "diagnostics": False}
    cfgs = [TrainConfig.from_dict({**base, "seed": s, "scale": c}) for s, c in ((0, 1.0), (1, 1.5))]  # one normalizer
    trainer = PackedTrainer(cfgs)
    trainer.run()
    (tmp_path / "ckpt").mkdir()
    torch.save(trainer.state_dict(), tmp_path / "ckpt" / CHECKPOINT_FILE)  # what run_pack_trial writes
    snap = snapshot(tmp_path / "ckpt", 1)
    assert snap is not None and snap.config["seed"] == 1 and snap.config["scale"] == 1.5
    expected = trainer.member_state_dict(1)["G"]
    assert snap.state.keys() == expected.keys()
    assert all(torch.equal(snap.state[k], expected[k]) for k in expected)
    assert snapshot(tmp_path / "ckpt", 5) is None and snapshot(tmp_path / "nothing", None) is None
    both = snapshots(tmp_path / "ckpt", [0, 1, 5])  # one read for every member the recorder asks for
    assert sorted(both) == [0, 1] and [both[k].config["seed"] for k in (0, 1)] == [0, 1]


def test_ui_refuses_an_unknown_sweep_in_one_line_before_starting_anything(tmp_path: Path):
    from typer.testing import CliRunner

    from sweeper.cli import app

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "known", tmp_path / "artifacts")
    tracker.describe_experiment({"snsweep.version": "0.1.0"})
    assert tracker.drain(timeout_s=30)
    out = CliRunner().invoke(app, ["--tracking-uri", uri, "ui", "nope"])
    assert out.exit_code == 2
    assert out.output.strip().splitlines() == [
        f"error: no sweep 'nope' in the MLflow store {uri} (sweeps there: known)"
    ]


def test_images_and_models_the_store_refuses_are_dropped_not_retried_forever(tmp_path: Path):
    """A refusal (here: the run was deleted) must not hold the queue: later calls still arrive."""
    from mlflow.tracking import MlflowClient
    from PIL import Image

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "refused", tmp_path / "artifacts")
    gone, kept = tracker.start_run("gone", {}, {}), tracker.start_run("kept", {}, {})
    client = MlflowClient(uri)
    client.delete_run(gone.run_id)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    tracker.log_image(gone, Image.new("RGB", (256, 256)), layout.SAMPLES_KEY, step=1)
    tracker.log_model(gone, "generator", model_dir, step=1)
    tracker.log_metrics(kept, {"after": 1.0}, step=1)
    tracker.end_run(kept)
    assert tracker.drain(timeout_s=30) and tracker.pending == 0 and tracker.outages == 0
    assert len(tracker.refused) == 2, tracker.refused  # the image, and the model's first call (the rest follow it)
    assert tracker.refused[0].startswith("image samples of gone at step 1: MlflowException")
    assert not model_dir.exists()
    assert client.get_run(kept.run_id).data.metrics["after"] == 1.0
    assert client.get_run(kept.run_id).info.status == "FINISHED"
