"""What a Tune trial hands the driver: its context, its results' keys, its checkpoints.

Shared by the single-process trial (``sweeper.run.trial``), multi-worker trials
(``sweeper.run.distributed``) and packed trials (``sweeper.run.packing``), so all three report the
same keys: the trainer's metrics, ``step``/``iterations``/``trial_status``, the searcher's
``objective`` and, in the last report, the whole evaluation history.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INDEX_KEY = "__trial_index__"  # set by Ray's Repeater: which replicate seed this trial is
TRIAL_ID_KEY = "__trial_id__"  # set on resume: the id an unfinished trial is recorded under again
OBJECTIVE = "objective"


@dataclass(frozen=True)
class TrialContext:
    fixed: dict[str, Any]
    """TrainConfig fields that every trial shares (from ``train`` and single-valued params)."""
    seeds: list[int]
    metric: str
    mode: str
    selection: str
    num_threads: int = 1
    workers: int = 1
    """DDP workers per trial (``resources.workers``); 1 trains in the Tune function itself."""
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    restore: dict[str, str] = field(default_factory=dict)
    """Resume: trial id -> the checkpoint folder its dead attempt left (``sweeper.run.ledger``)."""


def trial_config(config: dict[str, Any], ctx: TrialContext) -> dict[str, Any]:
    """Sampled params + fixed params + the replicate's seed, as TrainConfig fields."""
    index = int(config.get(INDEX_KEY, 0))
    params = {k: v for k, v in config.items() if not k.startswith("__")}
    merged = {**ctx.fixed, **params, "seed": ctx.seeds[index % len(ctx.seeds)]}
    merged.setdefault("num_threads", ctx.num_threads)
    return merged


def penalty(mode: str) -> float:
    """What the searcher is told for a diverged or metric-less trial: clearly worst, rank-safe."""
    return -1e6 if mode == "max" else 1e6


def progress_metrics(p: Any, history: list[dict[str, float]]) -> dict[str, Any]:
    """A ``Progress`` as the result keys the recorder reads (the objective is added by ``TuneReporter``)."""
    metrics: dict[str, Any] = {k: float(v) for k, v in p.metrics.items()}
    metrics.update(step=p.step, iterations=p.iterations, trial_status=p.status)
    if p.done:
        # The loop's TrainResult arrives after the last report; the summary must be in that
        # last report, so the history is read from the trainer's state instead.
        metrics["history_json"] = json.dumps(history)
    return metrics


def write_checkpoint(p: Any, directory: Path) -> bool:
    """The trainer's checkpoint plus a sample preview; False where this rank writes nothing."""
    if p.save_checkpoint(directory) is None:
        return False
    if p.samples is not None:
        save_preview(p.samples, directory / "samples.png")
    return True


class TuneReporter:
    """Adds the searcher's objective (final or best so far) and reports to Tune with a checkpoint."""

    def __init__(self, ctx: TrialContext):
        self.ctx = ctx
        self.best: float | None = None

    def objective(self, metrics: dict[str, Any]) -> float:
        value = metrics.get(self.ctx.metric, math.nan)
        if math.isfinite(value):
            better = max if self.ctx.mode == "max" else min
            self.best = value if self.best is None else better(self.best, value)
        chosen = self.best if (self.ctx.selection == "best" and self.best is not None) else value
        return chosen if math.isfinite(chosen) else penalty(self.ctx.mode)

    def __call__(self, metrics: dict[str, Any], checkpoint_dir: Path) -> None:
        from ray import tune

        metrics = {**metrics, OBJECTIVE: self.objective(metrics)}
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(checkpoint_dir)))


def save_preview(samples: Any, path: Path) -> None:
    """An 8x8 image grid, or a scatter plot for 2D points."""
    if samples.dim() == 4:
        from torchvision.utils import save_image

        save_image(samples[:64], path, nrow=8, normalize=True, value_range=(-1, 1))
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 3))
    pts = samples.detach().cpu().numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=2)
    fig.savefig(path, dpi=80)
    plt.close(fig)
