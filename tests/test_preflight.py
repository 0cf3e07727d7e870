"""The preflight: every input a sweep can give a trial is checked before Ray starts or anything is written.

Each case of ``tests/bad_inputs.py`` (missing roots, empty folders, wrong layouts, missing splits,
wrong weights, unreadable files, a folder where a file is expected, a resolution or dataset that
only some configurations cannot take) must end ``sweeper validate`` and ``sweeper run`` in one
``error:`` line naming the field, exit code 2, with nothing written and no Ray started. The
acceptance example of issue 15 runs as a real subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from bad_inputs import BY_NAME, CASES, Case, good_folder, png, spec
from conftest import REPO, short_tmp, sweeper_cmd
from typer.testing import CliRunner

from sweeper import spec as specmod
from sweeper.cli import app
from sweeper.spec import preflight
from trainers.config import ConfigError, TrainConfig

runner = CliRunner()


def _write(tmp: Path, case: Case) -> Path:
    train, space = case.build(tmp)
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec(tmp, train, space)))
    return path


def _invoke(tmp: Path, *args: str):
    return runner.invoke(
        app, ["--results-dir", str(tmp / "results"), "--tracking-uri", f"sqlite:///{tmp / 'mlflow.db'}", *args]
    )


def _nothing_started(tmp: Path) -> None:
    assert not (tmp / "results").exists() and not (tmp / "mlflow.db").exists() and not (tmp / "mlartifacts").exists()
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_bad_input_is_one_line_exit_2_and_nothing_started(case: Case, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, case)
    for command in (["validate", str(path)], ["run", str(path)]):
        result = _invoke(tmp_path, *command)
        lines = result.output.splitlines()
        assert result.exit_code == 2, (command, result.output, result.exception)
        assert len(lines) == 1, result.output
        assert lines[0].startswith(f"error: {path}: {case.path}: "), lines[0]
        assert case.says in lines[0], lines[0]
        assert "Traceback" not in result.output
        _nothing_started(tmp_path)
    relaxed = _invoke(tmp_path, "validate", str(path), "--no-data")
    if case.files:  # a spec edited on a laptop without the data passes --no-data
        assert relaxed.exit_code == 0, relaxed.output
        assert "file checks skipped (--no-data)" in relaxed.output
    else:  # rules without files still run
        assert relaxed.exit_code == 2 and relaxed.output.splitlines() == lines


def _as_nobody(fn):  # noqa: ANN001, ANN202
    """Run ``fn()`` in a forked child without root's right to read anything; returns its result."""
    import json

    if os.geteuid() != 0:
        return fn()
    fn()  # import everything it needs first: nobody may not read this Python's installation
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, answer through the pipe, never return into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            answer = {"ok": fn()}
        except BaseException as e:  # noqa: BLE001 - reported to the parent, which fails the test
            answer = {"error": repr(e)}
        os.write(write, json.dumps(answer).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        out = json.loads(f.read() or '{"error": "the child died"}')
    os.waitpid(pid, 0)
    if "error" in out:
        if "PermissionError" in out["error"] and "setuid" in out["error"].lower():
            pytest.skip(f"cannot drop root here: {out['error']}")
        raise AssertionError(out["error"])
    return out["ok"]


def test_permission_denied_files() -> None:
    """chmod 000 files (as a user that is not root: a forked child drops to nobody when tests run as root)."""
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="sns-perm-", dir="/tmp"))
    try:
        tmp.chmod(0o755)
        folder = good_folder(tmp / "imgs")
        for d in (folder, *folder.iterdir()):
            d.chmod(0o755)
        sorted(folder.rglob("*.png"))[0].chmod(0)
        weights = tmp / "w.pth"
        weights.write_bytes(b"x")
        weights.chmod(0)
        data = spec(tmp, {"data_root": str(folder), "metrics": ["fid_small", "fid"], "inception_weights": str(weights)})
        (tmp / "base").chmod(0o755)
        for d in (tmp / "base").rglob("*"):
            d.chmod(0o755 if d.is_dir() else 0o644)
        lines = _as_nobody(lambda: preflight.problems(specmod.from_data(data, "t"), "t")[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert [line.split(": ")[1] for line in lines] == ["train.data_root", "train.inception_weights"], lines
    assert all("Permission denied" in line for line in lines), lines


def test_the_issue_example_fails_in_seconds_in_a_real_process(tmp_path: Path) -> None:
    """Issue 15: was 8 trials run to failure in 66 s, a results dir, a report and 8 MLflow runs."""
    (tmp_path / "bad.yaml").write_text(
        "name: bad\ntrain: {dataset: folder, data_root: /nonexistent, metrics: [fid_small]}\n"
        "objective: {metric: fid_small}\nspace: {scale: {loguniform: [0.5, 2.0]}}\n"
    )
    ray_tmp, home = short_tmp(), tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "TMPDIR": str(ray_tmp), "PYTHONPATH": str(REPO)}
    try:
        start = time.perf_counter()
        proc = subprocess.run(
            [*sweeper_cmd(), "run", "bad.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        took = time.perf_counter() - start
        from proc_utils import processes_mentioning

        survivors = processes_mentioning(str(ray_tmp))
    finally:
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        "error: bad.yaml: train.data_root: dataset 'folder': data_root /nonexistent does not exist; "
        "set `data_root` to a folder of images"
    ]
    assert not (tmp_path / "results").exists() and not (tmp_path / "mlflow.db").exists()
    assert not survivors, survivors  # no raylet, no gcs_server: Ray never started
    assert not (home / ".ray").exists()
    print(f"sweeper run on the issue's example: exit 2 in {took:.2f} s")  # timings go to BENCHMARKS.md


def test_submit_checks_the_rules_without_files_before_any_network_call(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    address = "http://127.0.0.1:9"  # nothing listens there: reaching the network would be a different error
    (tmp_path / "a").mkdir()
    shape = _write(tmp_path / "a", BY_NAME["resolution_some_searched_values"])
    result = _invoke(tmp_path, "submit", str(shape), "--address", address, "--results-dir", "/mnt/r")
    assert result.exit_code == 2 and "space.resolution" in result.output and "dashboard" not in result.output
    # data roots are paths on the cluster: the client does not look at them, the job's `sweeper run` does
    (tmp_path / "b").mkdir()
    data = _write(tmp_path / "b", BY_NAME["missing_root"])
    result = _invoke(tmp_path, "submit", str(data), "--address", address, "--results-dir", "/mnt/r")
    assert result.exit_code == 2 and "cannot reach the Ray dashboard" in result.output, result.output


# --- the preflight as a function --------------------------------------------------------------
@pytest.mark.parametrize("name", specmod.preset_names())
def test_every_preset_passes_the_rules_without_files(name: str) -> None:
    lines, summary = preflight.problems(specmod.load(name), name, files=False)
    assert lines == [] and summary.combinations >= 1


def test_a_searched_dataset_and_root_must_be_paired_in_blocks(tmp_path: Path) -> None:
    folder = good_folder(tmp_path / "f")
    mnist_raw = tmp_path / "m" / "MNIST" / "raw"
    mnist_raw.mkdir(parents=True)
    for f in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (mnist_raw / f).write_bytes(b"\0")
    train = {k: v for k, v in spec(tmp_path, {})["train"].items() if k not in ("dataset", "data_root")}
    train["channels"] = 1
    sampled = {"name": "t", "train": train, "objective": {"metric": "fid_small"}, "space": {
        "dataset": {"choice": ["folder", "mnist"]}, "data_root": {"choice": [str(folder), str(tmp_path / "m")]},
        "scale": {"loguniform": [0.5, 2]}}}  # fmt: skip
    lines, _ = preflight.problems(specmod.from_data(sampled, "t"), "t")
    assert len(lines) == 2 and all("pair them in a union of blocks" in line for line in lines), lines
    blocks = {"name": "t", "train": train, "objective": {"metric": "fid_small"}, "search": {"sampler": "grid"},
              "space": [{"dataset": "folder", "data_root": str(folder)},
                        {"dataset": "mnist", "data_root": str(tmp_path / "m")}]}  # fmt: skip
    lines, summary = preflight.problems(specmod.from_data(blocks, "t"), "t")
    assert lines == [] and len(summary.data_roots) == 2


def test_a_default_the_spec_never_set_is_checked_too(tmp_path: Path) -> None:
    """A sampled sweep on a real dataset without data_root: the spec's grid checks skip it, this does not."""
    train = {k: v for k, v in spec(tmp_path, {})["train"].items() if k != "data_root"}
    s = specmod.from_data({"name": "t", "train": train, "space": {"scale": {"loguniform": [0.5, 2]}},
                           "objective": {"metric": "fid_small"}}, "t")  # fmt: skip
    assert preflight.problems(s, "t", files=False)[0] == [
        "t: train.data_root: dataset 'folder' needs `data_root`: download it and set `data_root`"
    ]


def test_file_answers_are_cached_per_root(tmp_path: Path) -> None:
    folder = good_folder(tmp_path / "f")
    s = specmod.from_data(spec(tmp_path, {"data_root": str(folder)}, {"resolution": {"int": [8, 64]},
                               "normalizer": {"choice": ["sn", "bsn", "none"]}}), "t")  # fmt: skip
    lines, summary = preflight.problems(s, "t")
    tail = "got 9 (and 48 more values of int: [8, 64]; valid there: 8, 16, 24, 32, 40, 48, 56, 64; use `choice`)"
    assert len(lines) == 1 and lines[0].endswith(tail), lines
    assert summary.data_roots == {("folder", str(folder))} and summary.combinations == 57


def test_every_problem_in_one_pass(tmp_path: Path) -> None:
    data = BY_NAME["missing_root"].build(tmp_path)[0]
    weights = BY_NAME["weights_wrong_hash"].build(tmp_path)[0]
    cache = BY_NAME["cache_dir_is_a_file"].build(tmp_path)[0]
    s = specmod.from_data(spec(tmp_path, {**data, **weights, **cache}, {"resolution": {"choice": [8, 12]}}), "t")
    lines, _ = preflight.problems(s, "t")
    assert [line.split(": ")[1] for line in lines] == [
        "space.resolution", "train.data_root", "train.inception_weights", "train.stats_cache_dir"
    ], lines


@pytest.mark.parametrize("name", [c.name for c in CASES if c.slot == "data" and c.name not in
                                  ("too_few_images_for_fid", "one_searched_root_missing")])  # fmt: skip
def test_the_loader_refuses_with_the_same_message(name: str, tmp_path: Path) -> None:
    """One place per rule: what a trial's loader says is what the preflight said."""
    from trainers.data import make_source

    s = spec(tmp_path, BY_NAME[name].build(tmp_path)[0])
    (line,), _ = preflight.problems(specmod.from_data(s, "t"), "t")
    with pytest.raises(ConfigError) as e:
        make_source(TrainConfig(**s["train"]))
    assert line.endswith(str(e.value)), (line, str(e.value))


def test_too_few_real_images_fail_when_the_evaluator_is_built(tmp_path: Path) -> None:
    from trainers.data import make_source
    from trainers.metrics import make_evaluator

    cfg = TrainConfig(**{**spec(tmp_path, {})["train"], "data_root": str(png(tmp_path / "one" / "a.png").parent)})
    with pytest.raises(ConfigError, match="fid_small need at least 2 real images, dataset 'folder' has 1"):
        make_evaluator(cfg, make_source(cfg))


def test_the_rules_and_catalogues_import_without_torch() -> None:
    code = (
        "import sweeper.spec.preflight, trainers.data, trainers.models, trainers.metrics, trainers.data.layout,"
        " trainers.models.shapes, trainers.metrics.inputs, sys; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_resume_checks_the_inputs_again(tmp_path: Path, monkeypatch) -> None:
    """The data may have moved since the sweep started: resume refuses before Ray starts."""
    import json

    monkeypatch.chdir(tmp_path)
    data = spec(tmp_path, BY_NAME["missing_root"].build(tmp_path)[0], name="moved")
    sweep = tmp_path / "results" / "moved"
    sweep.mkdir(parents=True)
    (sweep / "sweep.json").write_text(json.dumps({"spec": specmod.from_data(data, "t").model_dump(mode="json")}))
    result = _invoke(tmp_path, "resume", "moved")
    assert result.exit_code == 2, result.output
    assert result.output.splitlines() == [
        f"error: moved/sweep.json: train.data_root: dataset 'folder': data_root {tmp_path / 'nonexistent'} does not "
        "exist; set `data_root` to a folder of images"
    ]
    assert sorted(p.name for p in sweep.iterdir()) == ["sweep.json"]  # nothing else written


def test_models_refuse_the_wrong_kind_of_data_when_built() -> None:
    """Was a shape RuntimeError deep in the first step (retried, never explained); now a ConfigError."""
    from trainers.models import build

    with pytest.raises(ConfigError, match="model 'sngan_cnn' trains on images, not on the 2D points of dataset 'ring'"):
        build(TrainConfig(dataset="ring", model="sngan_cnn", metrics=["mode_coverage"]))
    with pytest.raises(ConfigError, match="model 'mlp' trains on 2D points"):
        build(TrainConfig(dataset="blobs", model="mlp"))


@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_job_checks_the_files_on_the_cluster_first(tmp_path: Path, monkeypatch) -> None:
    """`submit` leaves the file checks to the job: its `sweeper run` fails with the one line, before any trial."""
    from ray_fixtures import ray_head

    from sweeper.cli import cluster

    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "RAY_AUTH_MODE"):
        monkeypatch.delenv(var, raising=False)
    path = _write(tmp_path, BY_NAME["cifar_missing_split"])
    results_dir = tmp_path / "results"
    with ray_head(tmp_path, num_cpus=2) as head:
        job = cluster.submit(str(path), head.dashboard_url, results_dir=str(results_dir), tracking_uri="none",
                             extra_args=[])  # fmt: skip
        status = cluster.wait(head.dashboard_url, job, timeout_s=180, poll_s=1.0)
        logs = cluster.job_logs(head.dashboard_url, job)
    assert status == "FAILED", logs[-3000:]
    errors = [line for line in logs.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "train.data_root" in errors[0] and "lacks data_batch_3" in errors[0], logs[-3000:]
    assert "trial" not in logs and not results_dir.exists()
