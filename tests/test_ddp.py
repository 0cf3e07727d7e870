"""Data-parallel trials: the DDP loop on two gloo processes, and a `workers: 2` sweep end to end.

(1) Without Ray: two ``torch.multiprocessing`` ranks run ``Trainer(cfg, distributed=True)``
(hinge + BSN, and WGAN-GP + SNConv with gradients through u/v, the hardest path for DDP:
lazy buffers, three D forwards and a double backward per D step). Both ranks must end
with identical parameters and power-iteration vectors, per-rank BatchNorm statistics
(each rank saw its own data), finite losses, and a run resumed from a mid-run
checkpoint must be bit-identical to the uninterrupted one (on rank 1 except its
rank-local BN running stats, which nothing reads).

(2) With Ray: ``sweeper run`` on a one-trial sweep with ``resources: {workers: 2}``
launches a Train V2 ``TorchTrainer`` from the Tune function; the driver must record
the trial exactly as a single-process one (one completed Parquet row, its final
metric, both evaluation steps in the curves).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, sweeper_cmd
from proc_utils import kill_everything_under

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

TINY = {
    "dataset": "blobs", "model": "sngan_cnn", "resolution": 8, "width": 0.0625, "latent_dim": 8,
    "batch_size": 8, "iterations": 4, "eval_every": 2, "eval_samples": 32, "n_dis": 2,
    "metrics": ["mode_coverage"], "diagnostics": True, "num_threads": 1,
}  # fmt: skip
CASES = [
    {"normalizer": "bsn"},
    {"normalizer": "snconv", "loss": "wgan_gp", "grad_through_uv": True},
]


def _flat_state(t) -> dict[str, torch.Tensor]:
    return {**{f"G.{k}": v for k, v in t.G.state_dict().items()}, **{f"D.{k}": v for k, v in t.D.state_dict().items()}}


def _rank(rank: int, world: int, store: str, out: str) -> None:
    """One rank: for each case, train straight (checkpoint at step 2), then resume from step 2."""
    import torch.distributed as dist

    from trainers.config import TrainConfig
    from trainers.loop import CHECKPOINT_FILE, Trainer

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        for i, case in enumerate(CASES):
            cfg = TrainConfig(**{**TINY, **case})
            ckpt = Path(out) / f"case{i}"

            def save_at_2(p, ckpt=ckpt):
                if p.step == 2:
                    written = p.save_checkpoint(ckpt)  # collective: every rank calls it
                    assert (written is not None) == (rank == 0)

            straight = Trainer(cfg, distributed=True)
            result = straight.run(save_at_2)
            resumed = Trainer(cfg, distributed=True)
            resumed.load(ckpt / CHECKPOINT_FILE)
            again = resumed.run()
            torch.save(
                {
                    "state": _flat_state(straight),
                    "resumed": _flat_state(resumed),
                    "history": result.history,
                    "history_resumed": again.history,
                    "status": result.status,
                },
                Path(out) / f"case{i}-rank{rank}.pt",
            )
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_stay_identical_and_resume_bit_exact(tmp_path: Path):
    import torch.multiprocessing as mp

    mp.spawn(_rank, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=True)
    for i, case in enumerate(CASES):
        r0 = torch.load(tmp_path / f"case{i}-rank0.pt", weights_only=False)
        r1 = torch.load(tmp_path / f"case{i}-rank1.pt", weights_only=False)
        assert r0["status"] == r1["status"] == "completed", case
        bn = [k for k in r0["state"] if ".running_" in k]
        assert bn, "sngan_cnn's G has BatchNorm"
        same = [k for k in r0["state"] if k not in bn and "num_batches_tracked" not in k]
        assert any("_u" in k for k in same), "the normalizer's power-iteration vectors are compared"
        for k in same:  # weights, gammas, u/v vectors
            assert torch.equal(r0["state"][k], r1["state"][k]), (case, k)
        # per-rank BatchNorm: each rank normalized (and averaged) its own data
        assert any(not torch.equal(r0["state"][k], r1["state"][k]) for k in bn), case
        for h in r0["history"]:
            assert torch.isfinite(torch.tensor([h["loss_d"], h["loss_g"]])).all(), (case, h)
            assert "mode_coverage" in h, "rank 0 evaluates"
        assert [h["loss_d"] for h in r0["history"]] == [h["loss_d"] for h in r1["history"]], "losses are global"
        assert "mode_coverage" not in r1["history"][0], "only rank 0 evaluates"
        # bit-exact resume on every rank; rank 1 resumes rank 0's BN running stats (the only
        # ones ever read), so there those rank-local buffers are the one exception
        for k, v in r0["state"].items():
            assert torch.equal(v, r0["resumed"][k]), (case, k)
        for k in same:
            assert torch.equal(r1["state"][k], r1["resumed"][k]), (case, k)
        assert r0["history"] == r0["history_resumed"]


SPEC = {
    "name": "ddp",
    "train": {**{k: v for k, v in TINY.items() if k not in ("n_dis", "num_threads")}, "normalizer": "sn"},
    "space": {"scale": {"uniform": [0.9, 1.1]}},  # one sampled configuration
    "seeds": [0],
    "search": {"sampler": "random", "seed": 0, "trials": 1},
    "objective": {"metric": "mode_coverage"},
    "resources": {"workers": 2, "cpus_per_trial": 1},
}


def test_sweep_with_two_workers_records_like_a_single_process_trial(tmp_path: Path):
    ray_tmp = Path(tempfile.mkdtemp(prefix="sns-", dir="/tmp"))  # Ray's socket paths must stay < 107 bytes
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    env = {
        **os.environ,
        "HOME": str(home),
        "TMPDIR": str(ray_tmp),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray binds and connects on 127.0.0.1 only
        "RAY_USAGE_STATS_ENABLED": "0",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    results = tmp_path / "results"
    try:
        proc = subprocess.run(
            [*sweeper_cmd(), "--results-dir", str(results), "--tracking-uri", "none",
             "run", "spec.yaml", "--num-cpus", "3"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240,
        )  # fmt: skip
    finally:
        kill_everything_under(ray_tmp)  # nothing of this test's Ray may outlive it
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    sweep = results / "ddp"
    df = pd.read_parquet(sweep / "trials")
    assert len(df) == 1, df
    row = df.iloc[0]
    assert row["status"] == "completed", row["error"]
    assert row["steps_done"] == 4
    assert 0.0 <= row["final_mode_coverage"] <= 1.0
    from sweeper import results as sweep_results

    curves = sweep_results.load_curves(sweep)
    assert set(curves["step"]) == {2, 4}
    for metric in ("loss_d", "loss_g", "mode_coverage"):
        assert set(curves.loc[curves["metric"] == metric, "step"]) == {2, 4}, metric
    # the trial trained in a Train run named after it, and Tune got real checkpoints from it
    train_runs = list((sweep / "ddp").glob("train-*"))
    assert [p.name for p in train_runs] == [f"train-{row['trial_id']}"]
    tune_ckpts = list((sweep / "tune").rglob("checkpoint_*/checkpoint.pt"))
    assert tune_ckpts and all((p.parent / "samples.png").is_file() for p in tune_ckpts)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
