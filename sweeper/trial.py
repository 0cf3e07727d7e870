"""The Tune trial: one (configuration, seed) training run in a Ray worker.

It turns Tune's sampled config into a ``TrainConfig``, resumes from Tune's
checkpoint when the trial is retried or restored, and forwards each evaluation
to Tune with a checkpoint (models, optimizers, RNG states, sample previews).
The final report carries the run's summary (final/best per metric and the full
evaluation history), so the driver can write an exact Parquet row even if it
was restarted mid-trial. Private settings (paths) come through
``tune.with_parameters``, never through the param space.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
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
    data_root_overrides: dict[str, str] = field(default_factory=dict)


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


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    from ray import tune

    from trainers.config import TrainConfig
    from trainers.loop import CHECKPOINT_FILE, Progress

    cfg = TrainConfig.from_dict(trial_config(config, ctx))
    better = max if ctx.mode == "max" else min
    best: list[float] = []

    def objective(metrics: dict[str, float]) -> float:
        value = metrics.get(ctx.metric, math.nan)
        if math.isfinite(value):
            best[:] = [better(best[0], value)] if best else [value]
        chosen = best[0] if (ctx.selection == "best" and best) else value
        return chosen if math.isfinite(chosen) else penalty(ctx.mode)

    def report(p: Progress) -> None:
        metrics: dict[str, Any] = {k: float(v) for k, v in p.metrics.items()}
        metrics.update(step=p.step, iterations=p.iterations, trial_status=p.status, **{OBJECTIVE: objective(metrics)})
        if p.done:
            metrics["history_json"] = json.dumps(trainer_history[0]() if trainer_history else [])
        with tempfile.TemporaryDirectory() as d:
            p.save_checkpoint(Path(d))
            if p.samples is not None:
                _save_preview(p.samples, Path(d) / "samples.png")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    # The loop's TrainResult arrives after the last report; the summary must be in
    # that last report, so the history is read from the checkpoint state instead.
    trainer_history: list[Any] = []
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        local = Path(tempfile.mkdtemp(prefix="snsweep-resume-"))
        with checkpoint.as_directory() as d:
            (local / CHECKPOINT_FILE).write_bytes((Path(d) / CHECKPOINT_FILE).read_bytes())
        resume = local / CHECKPOINT_FILE

    from trainers.loop import Trainer

    trainer = Trainer(cfg)
    if resume is not None:
        trainer.load(resume)
    trainer_history.append(lambda: trainer.history)
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
