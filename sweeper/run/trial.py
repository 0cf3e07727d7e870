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

import tempfile
from pathlib import Path
from typing import Any

from sweeper.run.reporting import (
    TRIAL_ID_KEY,
    TrialContext,
    TuneReporter,
    progress_metrics,
    trial_config,
    write_checkpoint,
)


def run_trial(config: dict[str, Any], ctx: TrialContext) -> None:
    from trainers.config import TrainConfig

    cfg = TrainConfig.from_dict(trial_config(config, ctx))
    to_tune = TuneReporter(ctx)
    if ctx.workers > 1:
        from sweeper.run.distributed import run_distributed

        run_distributed(cfg, ctx, to_tune)
        return

    from ray import tune

    from trainers.loop import CHECKPOINT_FILE, Progress, Trainer

    trainer = Trainer(cfg)
    checkpoint = tune.get_checkpoint()  # a retried trial continues exactly where it was
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load(Path(d) / CHECKPOINT_FILE)
    elif ctx.restore.get(config.get(TRIAL_ID_KEY, "")):
        # a resumed sweep's unfinished trial: continue from the checkpoint its dead attempt left
        folder = Path(ctx.restore[config[TRIAL_ID_KEY]])
        try:
            trainer.load(folder / CHECKPOINT_FILE)
        except Exception as e:  # noqa: BLE001 - a checkpoint cut short by the kill: train from the start
            print(f"could not continue from {folder} ({type(e).__name__}: {e}); training from step 0")
            trainer = Trainer(cfg)

    def report(p: Progress) -> None:
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint(p, Path(d))
            to_tune(progress_metrics(p, trainer.history), Path(d))

    trainer.run(report)
