"""Node failure on a two-node Ray cluster (issue 7): a trial survives its node's death.

A head and one worker node (1 CPU each) run on this machine, on 127.0.0.1 only
(checked with ``ss`` over the cluster's process tree and the driver's). ``sweeper
run --address`` starts 4 one-CPU trials, 2 at a time, so one of them must run on
the worker node. As soon as a trial on the worker node has reported a checkpoint,
the worker node's raylet and everything below it (its agents and the trial's
worker process) get SIGKILL. Tune retries the trial (``max_failures: 2``) from
its last checkpoint on the head; the sweep must end with exit code 0, a completed
row for every trial, attempt 2 for the killed one with the full history, and no
MLflow run left RUNNING.

Both nodes share this machine's filesystem, so the local Tune storage path
(``<results>/<sweep>/tune``) is reachable from both: trials on the worker node
write their checkpoints there and the retry on the head reads them. On a real
cluster the results dir must be shared storage (see docs/CLUSTER.md).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import REPO, TINY_TRAIN
from ray_fixtures import (
    FAST_HEALTH_CHECKS,
    ProcessTree,
    descendants,
    listeners,
    non_loopback,
    ray_cluster,
)

from sweeper import results

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ITERATIONS, EVAL_EVERY = 60, 10
SPEC = {
    "name": "multi",
    "train": {**TINY_TRAIN, "iterations": ITERATIONS, "eval_every": EVAL_EVERY},
    "space": {"normalizer": {"choice": ["sn", "bsn"]}, "scale": {"loguniform": [0.5, 2.0]}},
    "seeds": [0],
    "search": {"sampler": "tpe", "seed": 0, "trials": 4},
    "resources": {"cpus_per_trial": 1, "max_concurrent": 2, "max_failures": 2},
}
STEPS = list(range(EVAL_EVERY, ITERATIONS + 1, EVAL_EVERY))


def _last_result(trial_dir: Path) -> dict | None:
    try:
        lines = (trial_dir / "result.json").read_text().strip().splitlines()
        return json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None


def _checkpointed_trial_on(tune_dir: Path, pids: set[int]) -> dict | None:
    """A running trial whose process is one of ``pids`` and that has a checkpoint, well before its end."""
    for trial_dir in tune_dir.glob("*/"):
        last = _last_result(trial_dir)
        if (
            last
            and last.get("pid") in pids
            and not last.get("done")
            and last.get("step", ITERATIONS) <= ITERATIONS - 2 * EVAL_EVERY
            and any(trial_dir.glob("checkpoint_*"))
        ):
            return last
    return None


def _sigkill_tree(pid: int) -> set[int]:
    """SIGKILL ``pid`` and everything below it at once (children first would let them be re-parented)."""
    pids = descendants(pid)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def test_worker_node_killed_mid_trial_sweep_recovers(tmp_path: Path) -> None:
    t0 = time.monotonic()
    (tmp_path / "multi.yaml").write_text(yaml.safe_dump(SPEC))
    sweep_path = tmp_path / "results" / "multi"
    tune_dir = sweep_path / "tune"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"

    with ray_cluster(
        tmp_path, head_cpus=1, workers=[{"num_cpus": 1, "resources": {"worker_node": 1}}],
        system_config=FAST_HEALTH_CHECKS,
    ) as cluster:  # fmt: skip
        cluster_pids = cluster.tree.refresh()
        socks = listeners(cluster_pids)
        assert sum(s.name == "raylet" for s in socks) >= 2 and any(s.name == "gcs_server" for s in socks)
        assert not non_loopback(cluster_pids), non_loopback(cluster_pids)
        print(f"\ncluster up in {time.monotonic() - t0:.1f} s at {cluster.gcs_address}: {len(socks)} listening "
              f"sockets in {len(cluster_pids)} processes, all on 127.0.0.1")  # fmt: skip

        worker_raylet = cluster.raylet_pid("worker")
        env = {**cluster.env, "PYTHONPATH": str(REPO)}
        log_path = tmp_path / "driver.log"
        with open(log_path, "w") as log:
            driver = subprocess.Popen(
                [sys.executable, "-m", "sweeper.cli", "--address", cluster.gcs_address,
                 "--results-dir", str(tmp_path / "results"), "--tracking-uri", tracking, "run", "multi.yaml"],
                cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        driver_tree = ProcessTree(driver.pid)
        killed: dict | None = None
        checked_running = False
        try:
            deadline = time.monotonic() + 150
            while driver.poll() is None and time.monotonic() < deadline:
                driver_tree.refresh()
                cluster.tree.refresh()  # know every Ray process, also those a dead raylet leaves orphaned
                if killed is None and (hit := _checkpointed_trial_on(tune_dir, descendants(worker_raylet))):
                    all_pids = cluster.tree.refresh() | driver_tree.refresh()
                    assert not non_loopback(all_pids), non_loopback(all_pids)  # with trials and the driver up
                    checked_running = True
                    gone = _sigkill_tree(worker_raylet)
                    killed = {**hit, "processes": len(gone), "at": time.monotonic() - t0}
                    print(
                        f"killed the worker node at {killed['at']:.1f} s: raylet {worker_raylet} and {len(gone) - 1} "
                        f"processes below it, mid-trial {hit['trial_id']} at step {hit['step']}"
                    )
                time.sleep(0.2)
            if driver.poll() is None:
                pytest.fail(f"the sweep did not finish in time:\n{log_path.read_text()[-4000:]}")
        finally:
            if driver.poll() is None:
                driver_tree.stop()
            else:
                driver_tree.stop(grace_s=1)  # anything the driver left behind
        out = log_path.read_text()
        assert driver.returncode == 0, out[-4000:]
        assert killed is not None, f"no trial was seen on the worker node with a checkpoint:\n{out[-4000:]}"
        assert checked_running
        assert worker_raylet not in cluster.tree.alive()

    df = pd.read_parquet(sweep_path / "trials")
    latest = results.latest_attempts(df)
    lost = SPEC["search"]["trials"] - int((latest["status"] == "completed").sum())
    assert len(latest) == SPEC["search"]["trials"] and lost == 0, latest[["trial_id", "attempt", "status"]]
    assert (latest["steps_done"] == ITERATIONS).all()

    row = latest.set_index("trial_id").loc[killed["trial_id"]]
    assert row["attempt"] >= 2, latest[["trial_id", "attempt", "status"]]
    metric = "mode_coverage"
    curves = pd.read_parquet(sweep_path / "curves" / f"{killed['trial_id']}-a{row['attempt']}.parquet")
    assert sorted(curves.loc[curves["metric"] == metric, "step"]) == STEPS  # resumed from the checkpoint, no gap
    retried = latest[latest["attempt"] >= 2]
    recovered = int((retried["status"] == "completed").sum())

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name("multi").experiment_id])
    assert not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    attempts = {int(r.data.tags["attempt"]): r.info.status for r in runs
                if r.data.tags.get("trial_id") == killed["trial_id"]}  # fmt: skip
    assert attempts[1] == "FAILED"
    assert attempts[int(row["attempt"])] == "FINISHED"

    figures = {
        "trials": len(latest), "kills": 1, "killed_trial": killed["trial_id"], "killed_at_step": killed["step"],
        "retried": len(retried), "recovered": recovered, "lost": lost, "wall_s": round(time.monotonic() - t0, 1),
    }  # fmt: skip
    print("node-failure figures:", json.dumps(figures))
    assert recovered >= 1
