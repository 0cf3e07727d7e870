"""The training loop: bit-exact resume, divergence, config-change refusal, real-data path, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_images_data import cifar_root  # noqa: F401  (fixture: a CIFAR-10 folder written by the test)

from trainers.config import ConfigError, TrainConfig
from trainers.loop import Trainer, train


def tiny(**kw) -> TrainConfig:
    base = {
        "dataset": "blobs", "resolution": 8, "width": 0.0625, "latent_dim": 8, "batch_size": 8,
        "iterations": 8, "eval_every": 4, "eval_samples": 32, "normalizer": "bsn", "n_dis": 2,
        "metrics": ["mode_coverage"], "diagnostics": True,
    }  # fmt: skip
    base.update(kw)
    return TrainConfig(**base)


def _state(t: Trainer) -> dict[str, torch.Tensor]:
    return {
        **{f"G.{k}": v for k, v in t.G.state_dict().items()},
        **{f"D.{k}": v for k, v in t.D.state_dict().items()},
    }


@pytest.mark.parametrize("normalizer", ["sn", "bsn", "snconv"])
def test_resume_is_bit_exact(tmp_path: Path, normalizer: str):
    """Train 2N steps straight vs N steps, checkpoint, resume, N steps: identical weights on CPU."""
    straight = Trainer(tiny(iterations=8, normalizer=normalizer))
    straight.run()
    first = Trainer(tiny(iterations=4, normalizer=normalizer))
    first.run()
    first.save(tmp_path)
    resumed = Trainer(tiny(iterations=8, normalizer=normalizer))  # only `iterations` changed: allowed
    resumed.load(tmp_path)
    result = resumed.run()
    assert result.step == 8
    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert straight.history == resumed.history


def test_planted_nan_ends_run_as_diverged_with_its_step():
    t = Trainer(tiny(iterations=20, n_dis=1))
    calls = {"n": 0}
    real_sample = t.source.sample

    def poisoned(n, generator):
        calls["n"] += 1
        x = real_sample(n, generator)
        return x * float("nan") if calls["n"] >= 5 else x

    t.source.sample = poisoned  # the 5th real batch (step 5 with n_dis=1) is NaN
    reports = []
    result = t.run(reports.append)
    assert result.status == "diverged"
    assert result.step == 5
    assert "step 5" in result.error
    assert reports[-1].done and reports[-1].status == "diverged"
    # evaluated where it stopped: G is NaN now, so the metric is NaN (not missing, not an error)
    assert math.isnan(reports[-1].metrics["mode_coverage"]) and result.history[-1]["step"] == 5


def test_a_run_stopped_on_a_finite_loss_is_evaluated_at_that_step():
    """The explicit finite stop (scheduler.stop_on_divergence) still ends the run, and its row says how
    good G was when it stopped."""
    t = Trainer(tiny(iterations=20, divergence_threshold=0.5, diagnostics=True))  # hinge |loss| ~ 2 at once
    reports = []
    result = t.run(reports.append)
    assert result.status == "diverged" and result.step == 1 and "threshold 0.5" in result.error
    last = reports[-1]
    assert last.done and last.status == "diverged" and 0.0 <= last.metrics["mode_coverage"] <= 1.0
    assert result.final["mode_coverage"] == last.metrics["mode_coverage"] == result.best["mode_coverage"]
    assert not any(k.startswith(("grad_norm/", "sigma")) for k in last.metrics)  # no diagnostics of a broken D


def test_the_paper_is_protocol_uses_its_own_sample_count_and_splits():
    """IS over is_samples generated images in is_splits splits, FID over eval_samples (paper: 50k / 10 vs 10k)."""
    from trainers.metrics import evaluation_facts, features, fid

    cfg = tiny(resolution=8, metrics=["is_small", "fid_small"], eval_samples=16, is_samples=40, is_splits=4,
               iterations=1, eval_every=1, n_dis=1)  # fmt: skip
    t = Trainer(cfg)
    assert t.eval_z.shape[0] == 40
    got = t.evaluate()
    samples = t.generate(t.eval_z)
    ext = features.small()
    _, logits = ext.extract(samples)
    want, _ = fid.inception_score(fid.softmax(logits[:40]), 4)
    assert got["is_small"] == pytest.approx(want, rel=1e-12)
    assert evaluation_facts(cfg) == {"eval_samples": 16, "eval_real_samples": 16, "is_samples": 40, "is_splits": 4,
                                     "feature_extractor": "seeded-small-v1"}  # fmt: skip
    with pytest.raises(ConfigError, match="needs 40 generated samples"):
        t.evaluate_samples(samples[:16])


def test_resume_refuses_a_changed_config(tmp_path: Path):
    t = Trainer(tiny(iterations=4))
    t.run()
    t.save(tmp_path)
    other = Trainer(tiny(iterations=8, lr_d=3e-4))
    with pytest.raises(ConfigError, match=r"lr_d: checkpoint 0.0001 != config 0.0003"):
        other.load(tmp_path)


def test_report_carries_metrics_diagnostics_and_a_checkpoint(tmp_path: Path):
    seen = []

    def report(p):
        seen.append(p)
        p.save_checkpoint(tmp_path / f"s{p.step}")

    result = train(tiny(), report=report)
    assert [p.step for p in seen] == [4, 8]
    m = seen[-1].metrics
    assert 0.0 <= m["mode_coverage"] <= 1.0
    assert "loss_d" in m and "grad_norm/total" in m and "prop1_bound" in m
    assert any(k.startswith("sigma_w/") for k in m)
    assert (tmp_path / "s8" / "checkpoint.pt").is_file()
    assert result.best_step["mode_coverage"] in (4, 8)
    state = torch.load(tmp_path / "s8" / "checkpoint.pt", weights_only=True)  # safe loading works
    assert state["step"] == 8


def test_tiny_sngan_trains_on_a_cifar_format_folder(cifar_root):  # noqa: F811
    root, _ = cifar_root
    cfg = TrainConfig(dataset="cifar10", data_root=str(root), resolution=32, width=0.0625, latent_dim=8,
                      batch_size=4, iterations=2, eval_every=2, eval_samples=16, normalizer="sn",
                      metrics=["fid_small"], diagnostics=False)  # fmt: skip
    result = train(cfg)
    assert result.status == "completed"
    assert result.final["fid_small"] > 0


def test_mode_metrics_on_the_real_distribution_are_perfect():
    from trainers.data.procedural import blobs
    from trainers.metrics.modes import mode_metrics

    src = blobs(16, 3)
    x = src.sample(4000, torch.Generator().manual_seed(0))
    m = mode_metrics(x, src.centers, src.hq_radius)
    assert m["hq_fraction"] == 1.0 and m["modes_captured"] == 8
    assert m["mode_coverage"] > 0.95
    collapsed = src.centers[[0]].repeat(100, 1, 1, 1)
    assert mode_metrics(collapsed, src.centers, src.hq_radius)["mode_coverage"] == pytest.approx(1 / 8)


def test_python_m_trainers_trains_and_resumes(tmp_path: Path):
    from trainers.__main__ import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("dataset: ring\nmodel: mlp\nwidth: 0.25\nlatent_dim: 4\nbatch_size: 16\niterations: 4\n"
                   "eval_every: 2\neval_samples: 64\nnormalizer: sn\nmetrics: [modes_captured]\n")  # fmt: skip
    out = tmp_path / "run"
    assert main(["--config", str(cfg), "--out", str(out)]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [2, 4]
    assert main(["--config", str(cfg), "--out", str(out), "--resume", "--set", "iterations=6"]) == 0
    assert json.loads((out / "result.json").read_text())["step"] == 6
    assert main(["--config", str(cfg), "--set", 'normalizer="bogus"', "--out", str(out / "x")]) == 2


def test_diagnostics_do_not_change_the_trajectory():
    """Same run with and without diagnostics: identical weights (diagnostics draw no training randomness)."""
    with_diag = Trainer(tiny(diagnostics=True))  # each Trainer seeds torch's global RNG: build, run, then the next
    with_diag.run()
    without = Trainer(tiny(diagnostics=False))
    without.run()
    a, b = _state(with_diag), _state(without)
    assert all(torch.equal(a[k], b[k]) for k in a)
