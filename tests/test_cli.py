"""CLI behaviour without starting Ray: user errors are one line, exit code 2, nothing written."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, sweeper_cmd
from typer.testing import CliRunner

from sweeper.cli import app

runner = CliRunner()


def invoke(*args: str, cwd: Path | None = None):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _assert_user_error(result, *needles: str) -> None:
    out = result.output
    assert result.exit_code == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("error: ") for ln in lines), out
    assert "Traceback" not in out
    for n in needles:
        assert n in out, out


def test_missing_sweep_file_is_one_line_and_starts_nothing(tmp_path: Path, sweeper_env):
    proc = subprocess.run(
        [*sweeper_cmd(), "--results-dir", str(tmp_path / "res"), "run", str(tmp_path / "nope.yaml")],
        cwd=tmp_path, env={**sweeper_env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no such sweep file" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not (tmp_path / "res").exists() and not (tmp_path / "mlflow.db").exists()
    assert not (Path(sweeper_env["HOME"]) / ".ray").exists()  # Ray never started


def test_unknown_preset_lists_the_valid_ones():
    _assert_user_error(invoke("run", "no-such-preset"), "unknown preset 'no-such-preset'", "demo")


def test_bad_yaml(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("name: x\nspace: {normalizer: [sn\n")
    _assert_user_error(invoke("run", str(f)), "invalid YAML", str(f))


def test_unknown_normalizer_names_the_field_and_valid_names(tmp_path: Path):
    f = tmp_path / "s.yaml"
    f.write_text("name: s\nspace:\n  normalizer: {choice: [sn, bssn]}\n")
    _assert_user_error(invoke("validate", str(f)), "space.normalizer", "unknown normalizer 'bssn'", "bsn")


def test_unwritable_results_dir(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("--results-dir", str(blocker / "results"), "run", "demo")
    _assert_user_error(result, "results dir", "not writable")
    assert not (tmp_path / "mlflow.db").exists()


def test_validate_json_summary():
    result = invoke("validate", "demo", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["name"] == "demo" and isinstance(data["trials"], int) and "normalizer" in data["parameters"]


def test_normalizers_lists_every_method():
    from trainers.normalizers import METHODS

    result = invoke("normalizers")
    assert result.exit_code == 0
    for name in METHODS:
        assert name in result.output


def test_report_on_missing_results_is_a_user_error(tmp_path: Path):
    _assert_user_error(invoke("--results-dir", str(tmp_path), "report", "nothing-here"), "nothing-here")


@pytest.mark.parametrize("cmd", [["--help"], ["run", "--help"], ["presets"], ["schema"]])
def test_informational_commands_succeed(cmd):
    result = invoke(*cmd)
    assert result.exit_code == 0, result.output
    assert result.output.strip()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "demo", "--results-dir", "x"], ["--results-dir", "x", "run", "demo"]),
        (["run", "demo", "--results-dir=x", "--debug"], ["--results-dir=x", "--debug", "run", "demo"]),
        (
            ["--debug", "validate", "demo", "--tracking-uri", "none"],
            ["--debug", "--tracking-uri", "none", "validate", "demo"],
        ),
        # submit defines its own --address/--results-dir: they stay the command's
        (
            ["submit", "demo", "--address", "http://h:8265", "--debug"],
            ["--debug", "submit", "demo", "--address", "http://h:8265"],
        ),
        (["submit", "demo", "--", "--results-dir", "x"], ["submit", "demo", "--", "--results-dir", "x"]),
        (["--help"], ["--help"]),
    ],
)
def test_global_options_before_or_after_the_command(argv: list[str], expected: list[str]):
    from sweeper.cli.app import hoist_global_options

    assert hoist_global_options(argv) == expected


def test_global_option_after_the_command_takes_effect(tmp_path: Path, sweeper_env):
    proc = subprocess.run(
        [*sweeper_cmd(), "status", "--results-dir", str(tmp_path / "nowhere")],
        cwd=tmp_path, env=sweeper_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and f"no sweeps under {tmp_path / 'nowhere'}" in proc.stdout, proc.stdout + proc.stderr


def test_version_names_the_code_and_its_dependencies(sweeper_env, tmp_path: Path):
    import importlib.metadata as md

    proc = subprocess.run([*sweeper_cmd(), "--version"], cwd=tmp_path, env=sweeper_env, capture_output=True, text=True)
    first, deps = proc.stdout.splitlines()[:2]
    assert proc.returncode == 0 and first.startswith(f"snsweep {md.version('snsweep')}")
    for pkg in ("torch", "ray", "optuna", "mlflow"):
        assert f"{pkg} {md.version(pkg)}" in deps
    if (REPO / ".git").exists():
        assert "(git " in first


@pytest.mark.parametrize(
    ("uri", "needle"),
    [
        ("garbage://x", "unsupported scheme 'garbage'"),
        ("mlflow.db", "for a local file write sqlite:///mlflow.db"),
        ("file:///tmp/mlruns", "MLflow 3 refuses file stores"),
        ("sqlite://relative.db", "three slashes"),
    ],
)
def test_unsupported_tracking_uri_is_a_user_error(tmp_path: Path, sweeper_env, uri: str, needle: str):
    proc = subprocess.run(
        [*sweeper_cmd(), "--results-dir", str(tmp_path / "res"), "run", "demo", "--tracking-uri", uri],
        cwd=tmp_path, env=sweeper_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr
    assert f"--tracking-uri {uri}" in proc.stderr or f"--tracking-uri '{uri}'" in proc.stderr
    assert not (tmp_path / "res").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("command", ["validate", "run"])
def test_resources_this_machine_cannot_give_are_refused_before_anything_starts(
    tmp_path: Path, sweeper_env, command: str
):
    f = tmp_path / "big.yaml"
    f.write_text("name: big\nresources: {cpus_per_trial: 1000, gpus_per_trial: 1}\n")
    env = {**sweeper_env, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, whatever machine runs the test
    proc = subprocess.run(
        [*sweeper_cmd(), "--results-dir", str(tmp_path / "res"), command, str(f)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 2, proc.stderr
    assert (
        lines[0].startswith("error: ")
        and "resources.gpus_per_trial: 1 GPU(s) per trial but this machine has 0" in lines[0]
    )
    assert "resources.cpus_per_trial: a trial needs 1000 CPUs but this machine has" in lines[1]
    assert not (tmp_path / "res").exists() and not (tmp_path / "mlflow.db").exists()
    assert not list(Path(env["TMPDIR"]).glob("ray*")), "Ray was started"


def test_capacity_rules():
    from sweeper.run.capacity import Capacity, capacity_problems
    from sweeper.spec import Resources

    local = Capacity(cpus=8, gpus=1, where="this machine")
    cluster = Capacity(cpus=64, gpus=1, where="the cluster", exact=False)
    assert capacity_problems(Resources(cpus_per_trial=8, gpus_per_trial=1), local) == []
    assert capacity_problems(Resources(cpus_per_trial=2, gpus_per_trial=0.5, workers=2), local) == []
    assert len(capacity_problems(Resources(gpus_per_trial=1, workers=2), local)) == 1  # DDP needs 2 GPUs at once
    assert capacity_problems(Resources(gpus_per_trial=1, workers=2), cluster) == []  # an autoscaler may add one
    assert len(capacity_problems(Resources(gpus_per_trial=1), Capacity(64, 0, "the cluster", exact=False))) == 1
    assert len(capacity_problems(Resources(cpus_per_trial=9), local)) == 1


def test_infinite_resources_are_a_spec_error(tmp_path: Path):
    f = tmp_path / "inf.yaml"
    f.write_text("name: inf\nresources: {cpus_per_trial: .inf}\n")
    _assert_user_error(invoke("validate", str(f)), "resources.cpus_per_trial: must be a finite number, got inf")


@pytest.mark.parametrize(
    ("address", "needle"),
    [
        ("127.0.0.1:1", "cannot connect (Connection refused)"),
        ("ray://127.0.0.1:10001", "Ray Client (ray://) is not supported"),
        ("http://127.0.0.1:8265", "is a dashboard URL: `sweeper submit SPEC --address http://127.0.0.1:8265`"),
        ("127.0.0.1:port", "expected HOST:PORT with a port number"),
    ],
)
def test_unreachable_address_fails_at_once_naming_it(tmp_path: Path, sweeper_env, address: str, needle: str):
    proc = subprocess.run(
        [*sweeper_cmd(), "--results-dir", str(tmp_path / "res"), "run", "demo", "--address", address],
        cwd=tmp_path, env=sweeper_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: --address {address}") and needle in proc.stderr, proc.stderr
    assert not (tmp_path / "res").exists() and not (tmp_path / "mlflow.db").exists()
