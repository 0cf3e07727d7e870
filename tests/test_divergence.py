"""The paper's large-c runs train to the end: the presets' own settings at c = 5, 7, 10 (issue 17).

At 32 px, width 1, batch 64 the early hinge loss grows roughly like c^8 (sn c = 5: |loss| 1.2e4 at
step 2; c = 10: 3.0e6; snconv c = 7 and 10 pass 1e4 at step 1), so the old default stop at
|loss| > 1e4 ended these runs before any evaluation. Here each run uses exactly the parameters
the sweep hands its trials (``fixed_and_context`` of the preset), with only what a CPU test must
change: a few steps, the CPU, a CIFAR-format folder written by the test, and the small extractor.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from test_images_data import cifar_root  # noqa: F401  (fixture: a CIFAR-10 folder written by the test)

from sweeper import spec as specmod
from sweeper.run.rows import summary_row
from sweeper.run.sweep import fixed_and_context
from trainers.config import TrainConfig
from trainers.loop import Trainer

CPU = {"device": "cpu", "iterations": 2, "eval_every": 2, "eval_samples": 64, "eval_real_samples": 64,
       "is_samples": 128, "metrics": ["fid_small", "is_small"], "inception_weights": None,
       "stats_cache_dir": None, "num_threads": 1, "diagnostics": False}  # fmt: skip


def _config(preset: str, normalizer: str, scale: float, root: Path, **over: Any) -> TrainConfig:
    fixed, _ = fixed_and_context(specmod.load(preset), 1)
    assert (fixed["width"], fixed["batch_size"], fixed["resolution"]) == (1.0, 64, 32)  # the paper's CNN
    return TrainConfig.from_dict({**fixed, "normalizer": normalizer, "scale": scale, "seed": 0,
                                  "data_root": str(root), **CPU, **over})  # fmt: skip


def _row(cfg: TrainConfig, result: Any) -> dict[str, Any]:
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    return summary_row(
        sweep="t", trial_id="t", attempt=1, status=result.status, error=result.error,
        params={**cfg.to_dict(), "loss": cfg.resolved_loss}, history=result.history,
        last={"step": result.step}, metrics=cfg.metrics, directions={"fid_small": "min", "is_small": "max"},
        started=now, finished=now,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("preset", "normalizer", "scale"),
    [("cifar10-scale", "sn", 5.0), ("cifar10-scale", "sn", 7.0), ("cifar10-scale", "sn", 10.0),
     ("snconv-scale", "snconv", 7.0), ("snconv-scale", "snconv", 10.0)],
)  # fmt: skip
def test_large_scales_complete_with_evaluations(cifar_root, preset: str, normalizer: str, scale: float) -> None:  # noqa: F811
    root, _ = cifar_root
    cfg = _config(preset, normalizer, scale, root)
    assert cfg.divergence_threshold == math.inf
    losses: list[float] = []
    result = Trainer(cfg).run(lambda p: losses.append(abs(p.metrics["loss_d"])))
    assert result.status == "completed" and result.step == 2
    row = _row(cfg, result)
    assert row["status"] == "completed" and row["steps_done"] == 2 and row["error"] is None
    assert math.isfinite(row["final_fid_small"]) and math.isfinite(row["final_is_small"])
    assert (row["is_samples"], row["is_splits"], row["eval_samples"]) == (128, 10, 64)
    if scale >= 7:
        assert max(losses) > 1e4  # the regime the old stop cut off


def test_the_explicit_finite_stop_still_works_and_evaluates(cifar_root) -> None:  # noqa: F811
    root, _ = cifar_root
    cfg = _config("cifar10-scale", "sn", 10.0, root, divergence_threshold=1e4)
    result = Trainer(cfg).run()
    assert result.status == "diverged" and result.step <= 2 and "threshold 10000" in result.error
    row = _row(cfg, result)
    assert row["status"] == "diverged" and row["steps_done"] == result.step
    assert math.isfinite(row["final_fid_small"])  # evaluated at the step it stopped
