"""The sweep lifecycle on the command line, without starting Ray: bad options, finished sweeps,
`status`, `ui` without a store, and the last line of defence for unexpected errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import sweeper_cmd
from sweep_files import GRID, finished_sweep, new_sweep, record, start
from typer.testing import CliRunner

from sweeper.cli import app
from sweeper.cli.browse import find_store
from sweeper.cli.context import Globals

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def one_error_line(result, code: int, *needles: str) -> str:
    out = result.output
    assert result.exit_code == code, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in out, out
    for n in needles:
        assert n in out, out
    return lines[0]


@pytest.mark.parametrize("args", [["run", "demo", "--num-cpus", "-1"], ["run", "demo", "--num-cpus", "0"],
                                  ["run", "demo", "--num-cpus", "two"], ["run", "demo", "--num-cpus", "1.5"],
                                  ["resume", "demo", "--num-cpus", "-1"]])  # fmt: skip
def test_a_bad_num_cpus_is_one_line_and_starts_nothing(tmp_path: Path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    one_error_line(invoke("--results-dir", "res", *args), 2, "--num-cpus must be a whole number of at least 1",
                   repr(args[-1]))  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # no results dir, no MLflow store


def test_resume_refuses_a_name_that_is_not_a_sweep_name(tmp_path: Path):
    one_error_line(invoke("--results-dir", str(tmp_path), "resume", "../etc"), 2, "no sweep named '../etc'")


def test_resume_of_a_finished_sweep_says_so_without_starting_ray(tmp_path: Path, sweeper_env):
    finished_sweep(tmp_path / "results")
    proc = subprocess.run(
        [*sweeper_cmd(), "resume", "grid"], cwd=tmp_path, env=sweeper_env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sweep grid is already finished (8/8 trials recorded: 8 completed" in proc.stdout
    assert "`sweeper report grid`" in proc.stdout and not proc.stderr.strip()
    assert not list(Path(sweeper_env["TMPDIR"]).glob("ray*"))  # Ray never started
    assert not (Path(sweeper_env["HOME"]) / ".ray").exists()


def test_run_of_a_finished_sweep_names_overwrite_and_report(tmp_path: Path):
    finished_sweep(tmp_path / "results")
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID))
    res = str(tmp_path / "results")
    one_error_line(invoke("--results-dir", res, "run", str(tmp_path / "grid.yaml")), 2,
                   "already finished", "`sweeper report grid`", "`--overwrite`")  # fmt: skip
    result = invoke("--results-dir", res, "run", str(tmp_path / "grid.yaml"), "--resume-if-exists")
    assert result.exit_code == 0 and "already finished" in result.output, result.output


def test_run_of_an_unfinished_sweep_names_resume(tmp_path: Path):
    new_sweep(tmp_path / "results", GRID)
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID))
    one_error_line(invoke("--results-dir", str(tmp_path / "results"), "run", str(tmp_path / "grid.yaml")), 2,
                   "`sweeper resume grid` continues it", "`--overwrite`")  # fmt: skip


def test_status_tells_finished_from_incomplete_and_names_resume(tmp_path: Path):
    root = tmp_path / "results"
    finished_sweep(root)
    spec, path = new_sweep(root, {**GRID, "name": "half"})
    start(path, "a", {"normalizer": "sn", "scale": 0.5}, 0)
    record(path, spec, "a", {"normalizer": "sn", "scale": 0.5}, 0)
    result = invoke("--results-dir", str(root), "status")
    assert result.exit_code == 0, result.output
    grid, half = result.output.strip().splitlines()
    assert grid.startswith("grid: finished, 8/8 trials finished (8 completed)")
    assert half.startswith("half: incomplete (its driver died), 1/8 trials finished (1 completed), 7 missing")
    assert "`sweeper resume half` continues it" in half
    one_error_line(invoke("--results-dir", str(root), "status", "nope"), 2, "no sweep 'nope'")


def test_ui_without_a_store_says_where_it_looked_and_how_to_point_elsewhere(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    line = one_error_line(invoke("--results-dir", "res", "ui"), 2, "no MLflow store found",
                          str(tmp_path / "mlflow.db"), str(tmp_path / "res"), "--tracking-uri sqlite:///")  # fmt: skip
    assert "$MLFLOW_TRACKING_URI (unset)" in line
    one_error_line(invoke("--tracking-uri", f"sqlite:///{tmp_path}/gone.db", "ui"), 2, "no MLflow store at")
    assert list(tmp_path.iterdir()) == []  # `mlflow ui` would have created an empty store


def test_ui_finds_the_store_the_sweeps_recorded(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    db = tmp_path / "elsewhere" / "mlflow.db"
    db.parent.mkdir()
    db.write_bytes(b"")
    new_sweep(tmp_path / "res", GRID, tracking_uri=f"sqlite:///{db}")
    uri, _ = find_store(Globals(tmp_path / "res", None, None, False))
    assert uri == f"sqlite:///{db}"


def test_an_unexpected_error_is_one_line_with_a_log_of_its_traceback(tmp_path: Path, monkeypatch):
    import sweeper.cli.inspect as inspect

    def boom(root, name):
        raise RuntimeError("the disk is on fire\nsecond line")

    finished_sweep(tmp_path / "results")
    monkeypatch.setattr(inspect, "sweep_status", boom)
    line = one_error_line(invoke("--results-dir", str(tmp_path / "results"), "status"), 1,
                          "unexpected RuntimeError: the disk is on fire", "--debug")  # fmt: skip
    log = Path(line.split("the full traceback is in ")[1].split(" (--debug")[0])
    assert log.parent == (tmp_path / "results" / "logs").resolve()
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "def boom" not in text and "in boom" in text
    with pytest.raises(RuntimeError, match="on fire"):
        invoke("--debug", "--results-dir", str(tmp_path / "results"), "status")


def test_a_complete_sweep_from_before_sweep_json_had_a_state_shows_finished(tmp_path: Path):
    import json

    _, path = finished_sweep(tmp_path / "results")
    meta = json.loads((path / "sweep.json").read_text())
    del meta["state"]
    (path / "sweep.json").write_text(json.dumps(meta))
    result = invoke("--results-dir", str(tmp_path / "results"), "status", "grid")
    assert result.output.startswith("grid: finished, 8/8 trials finished"), result.output


def test_resume_retry_failed_of_a_finished_sweep_with_failures_is_not_a_no_op(tmp_path: Path):
    from sweeper.cli.sweeps import _already_finished
    from sweeper.spec.points import grid_points

    spec, path = new_sweep(tmp_path / "results", GRID)
    for n, pt in enumerate(grid_points(spec)):
        for i in range(2):
            start(path, f"t{n}{i}", pt, i)
            record(path, spec, f"t{n}{i}", pt, i, status="failed" if (n, i) == (0, 0) else "completed")
    from sweeper.run import ledger
    from sweeper.run.meta import end_session

    end_session(path, ledger.read(spec, path))
    g = Globals(tmp_path / "results", None, None, False)
    assert _already_finished(g, spec) and not _already_finished(g, spec, retry_failed=True)
