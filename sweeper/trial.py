"""The Tune trial: one (configuration, seed) training run in a Ray worker.

It turns Tune's sampled config into a ``TrainConfig``, resumes from Tune's
checkpoint when the trial is retried or restored, and forwards each evaluation
to Tune with a checkpoint (models, optimizers, RNG states, sample previews).
The final report carries the run's summary (final/best per metric and the full
evaluation history), so the driver can write an exact Parquet row even if it
was restarted mid-trial. Private settings (paths) come through
``tune.with_parameters``, never through the param space.

A trial with ``resources.workers > 1`` trains data-parallel in a Ray Train
``TorchTrainer`` that this function launches (``sweeper/distributed.py``); Tune
sees the same results and checkpoints either way.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_KEY = "__trial_index__"  # set by Ray's Repeater: which replicate seed this trial is
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
        _save_preview(p.samples, directory / "samples.png")
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


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    from trainers.config import TrainConfig

    cfg = TrainConfig.from_dict(trial_config(config, ctx))
    to_tune = TuneReporter(ctx)
    if ctx.workers > 1:
        from sweeper.distributed import run_distributed

        run_distributed(cfg, ctx, to_tune)
        return

    from ray import tune

    from trainers.loop import CHECKPOINT_FILE, Progress, Trainer

    trainer = Trainer(cfg)
    checkpoint = tune.get_checkpoint()  # a retried or restored trial continues exactly where it was
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load(Path(d) / CHECKPOINT_FILE)

    def report(p: Progress) -> None:
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint(p, Path(d))
            to_tune(progress_metrics(p, trainer.history), Path(d))

    trainer.run(report)


def _save_preview(samples: Any, path: Path) -> None:
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
