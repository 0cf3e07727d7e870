"""sweeper.cli.cluster: Ray Jobs submission.

Fast tests check the entrypoint, the token lookup, staging and the error lines
without any service. The end-to-end test starts its own token-protected Ray
head on 127.0.0.1 (free ports, private HOME/TMPDIR), checks with ``ss`` that
every socket of that head's process tree listens on loopback only (also while
the job's driver and trials run), submits a tiny sweep, waits for SUCCEEDED,
reads the Parquet rows, and stops the head by PID.
"""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from ray_fixtures import free_ports, listeners, non_loopback, ray_head

from sweeper.cli import cluster
from sweeper.errors import SweepError

TINY = """\
name: tiny-submit
train:
  dataset: blobs
  model: sngan_cnn
  resolution: 8
  width: 0.0625
  latent_dim: 8
  batch_size: 8
  iterations: 4
  eval_every: 2
  eval_samples: 64
space:
  normalizer: {choice: [sn, bsn]}
seeds: [0]
search:
  sampler: tpe
  seed: 0
  trials: 2
resources:
  cpus_per_trial: 1
"""


@pytest.fixture
def no_ray_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No token and no address from the developer's environment leak into a test."""
    for var in (
        "RAY_AUTH_TOKEN",
        "RAY_AUTH_TOKEN_PATH",
        "RAY_ADDRESS",
        "RAY_API_SERVER_ADDRESS",
        "RAY_AUTH_MODE",
    ):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "client-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


# --- fast: no services -----------------------------------------------------------------------------
def _expand(command: str, env: dict[str, str]) -> list[str]:
    """The argv the head's shell would run (python replaced by printf)."""
    assert command.startswith("python ")
    probe = "printf '%s\\n' " + command[len("python ") :]
    out = subprocess.run(["bash", "-c", probe], env=env, capture_output=True, text=True, check=True).stdout
    return out.splitlines()


def test_entrypoint_connects_to_the_job_cluster_and_resumes() -> None:
    cmd = cluster.entrypoint(
        "_snsweep_spec/x y.yaml", results_dir="/mnt/s/res", tracking_uri=None, extra_args=["--debug x"]
    )
    argv = _expand(cmd, {"PATH": "/usr/bin:/bin"})
    assert argv == [
        "-m", "sweeper.cli", "--address", "auto", "--results-dir", "/mnt/s/res",
        "--tracking-uri", "sqlite:////mnt/s/res/mlflow.db", "run", "_snsweep_spec/x y.yaml",
        "--resume-if-exists", "--debug x",
    ]  # fmt: skip
    # the head's MLflow server wins when the cluster exports it
    argv = _expand(cmd, {"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert argv[argv.index("--tracking-uri") + 1] == "http://127.0.0.1:5000"
    assert "--resume-if-exists" not in cluster.entrypoint(
        "demo", results_dir="/r", tracking_uri="none", extra_args=["--overwrite"]
    )
    plain = cluster.entrypoint("demo", results_dir="/r", tracking_uri="none", resume_if_exists=False)
    assert shlex.split(plain)[-2:] == ["run", "demo"] and "--tracking-uri none" in plain


def test_token_lookup_follows_rays_order(tmp_path: Path) -> None:
    home = tmp_path / "h"
    (home / ".ray").mkdir(parents=True)
    (home / ".ray" / "auth_token").write_text("from-home\n")
    (tmp_path / "tok").write_text("from-path")
    assert cluster.read_token({"HOME": str(home)}) == ("from-home", str(home / ".ray" / "auth_token"))
    env = {"HOME": str(home), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "tok")}
    assert cluster.read_token(env)[0] == "from-path"
    assert cluster.read_token({**env, "RAY_AUTH_TOKEN": "from-env"}) == ("from-env", "RAY_AUTH_TOKEN")
    assert cluster.read_token({"HOME": str(tmp_path / "nobody")}) == (None, None)
    assert cluster.auth_headers({"RAY_AUTH_TOKEN": "t"}) == {"Authorization": "Bearer t"}


def test_unreachable_dashboard_is_one_clear_line(no_ray_env: Path) -> None:
    (port,) = free_ports(1)
    with pytest.raises(SweepError) as e:
        cluster.job_status(f"127.0.0.1:{port}", "raysubmit_x")
    assert str(e.value) == (
        f"cannot reach the Ray dashboard at http://127.0.0.1:{port} (connection refused); check --address"
    )
    with pytest.raises(SweepError, match="Ray Client address"):
        cluster.client("ray://127.0.0.1:10001")


@pytest.mark.parametrize(
    ("results_dir", "message"),
    [("results", "absolute path on the cluster's head node"), ("s3://b/r", "filesystem path")],
)
def test_results_dir_must_be_an_absolute_path(tmp_path: Path, results_dir: str, message: str) -> None:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    with pytest.raises(SweepError, match=message):
        cluster.submit(
            str(spec), "http://127.0.0.1:1", results_dir=results_dir, tracking_uri=None, extra_args=[]
        )


def test_stage_ships_the_code_and_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "my sweep.yaml"
    spec.write_text(TINY)
    dest = tmp_path / "stage"
    dest.mkdir()
    arg = cluster.stage(str(spec), dest)
    assert arg == "_snsweep_spec/tiny-submit.yaml" and (dest / arg).read_text() == TINY
    for pkg in cluster.PACKAGES:
        assert (dest / pkg / "__init__.py").exists()
    assert (dest / "sweeper" / "cli" / "app.py").exists() and (dest / "search_spaces" / "demo.yaml").exists()
    assert not list(dest.rglob("__pycache__"))
    assert cluster.stage("demo", tmp_path / "stage2") == "demo"


# --- end to end: a token-protected head on loopback --------------------------------------------------
@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_submit_runs_a_sweep_on_a_loopback_head(
    tmp_path: Path, no_ray_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sweeper import results

    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    results_dir = tmp_path / "results"
    token = uuid.uuid4().hex
    with ray_head(tmp_path, num_cpus=2, token=token) as head:
        pids = head.tree.refresh()
        socks = listeners(pids)
        names = {s.name for s in socks}
        assert {"gcs_server", "raylet"} <= names, socks
        assert int(head.dashboard_url.rsplit(":", 1)[1]) in {s.port for s in socks}, socks
        assert non_loopback(pids) == [], head.log_tail()

        # token auth is on: without the token the dashboard answers 401, as one clear line
        with pytest.raises(SweepError, match=r"requires token auth \(401: no token found\)"):
            cluster.job_status(head.dashboard_url, "raysubmit_none")
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(Path(head.env["HOME"]) / ".ray" / "auth_token"))
        with pytest.raises(SweepError, match="no job 'raysubmit_none' on the Ray cluster"):
            cluster.job_status(head.dashboard_url, "raysubmit_none")

        job_id = cluster.submit(
            str(spec), head.dashboard_url, results_dir=str(results_dir), tracking_uri="none", extra_args=[]
        )
        assert job_id.startswith("snsweep-tiny-submit-")
        assert cluster.follow_hint(head.dashboard_url, job_id) == (
            f"RAY_AUTH_MODE=token ray job logs --address {head.dashboard_url} --follow {job_id}"
        )

        # while the driver and the trials run, every new socket of the tree stays on loopback
        deadline, status, exposed, seen = time.monotonic() + 180, "PENDING", [], 0
        while time.monotonic() < deadline:
            status = cluster.job_status(head.dashboard_url, job_id)
            pids = head.tree.refresh()
            seen = max(seen, len(pids))
            exposed += non_loopback(pids)
            if status in cluster.TERMINAL:
                break
            time.sleep(1.0)
        logs = cluster.job_logs(head.dashboard_url, job_id)
        assert status == "SUCCEEDED", f"job {job_id} ended {status}:\n{logs[-4000:]}"
        assert exposed == [], exposed
        assert seen > len(names)  # the driver and trial workers were in the tree we checked

    df = results.load(results_dir / "tiny-submit")
    assert len(df) == 2, logs[-2000:]
    assert set(df["status"]) == {"completed"} and set(df["normalizer"]) == {"sn", "bsn"}
    assert (results_dir / "tiny-submit" / "sweep.json").exists()
