"""Multi-worker trials: a Ray Train V2 ``TorchTrainer`` launched from the Tune function.

A trial with ``resources.workers: N > 1`` keeps its Tune trial (search, scheduler,
recorder, retries are unchanged) but trains in N Ray Train workers, DDP over G and
D (``Trainer(cfg, distributed=True)``; batch, BatchNorm and buffer semantics are
documented in ``trainers/loop.py``: ``batch_size`` is per worker).

Resources (``trial_resources``): the Tune function itself reserves only
``{"cpu": 0.01}`` (0 is refused by Tune); the workers reserve ``cpus_per_trial`` CPUs
and ``gpus_per_trial`` GPUs *each* through ``ScalingConfig.resources_per_worker``.
Train V2 places its workers in a placement group of its own, so resources reserved by
the Tune trial could never be used by them: reserving them there would deadlock a
full cluster. The Train controller runs with 0 CPUs on the Tune function's node.
Tune then no longer limits how many trials run at once: unless ``resources.max_concurrent``
is set (to about cluster CPUs // (workers x cpus_per_trial)), every trial's Tune
function starts and its Train run waits for its workers (no deadlock: each worker
group is one all-or-nothing placement group, but searchers see no results meanwhile).

Reporting: rank 0 calls ``ray.train.report(metrics, checkpoint)`` at every evaluation
(the other ranks report ``{}`` without a checkpoint; saving is collective). Ray's own
``ray.tune.integration.ray_train.TuneReportCallback`` forwards only the metrics plus
a ``checkpoint_path`` key, so Tune would get no checkpoint and the recorder no
``samples.png`` previews. ``_ForwardToTune`` (a Train ``UserCallback``, run in the
controller) instead hands each (metrics, persisted checkpoint) to the Tune function
through a Ray queue; the Tune function calls ``tune.report`` with a Tune checkpoint
copied from it, through the same ``TuneReporter`` as a single-process trial. So the
driver sees exactly the same result keys (step, iterations, trial_status, objective,
history_json at the end) and checkpoints (``checkpoint.pt``, ``samples.png``). The
callback waits until Tune has copied a checkpoint before the controller registers the
next one, because Train keeps only the newest (``num_to_keep=1``) and would delete
it underneath the copy.

Retries and resume: the Train run is named ``train-<trial_id>`` under
``<sweep>/ddp/`` in the sweep's storage, so a retried trial (Tune ``FailureConfig``)
or a trial of a resumed sweep starts a Train run of the same name, which restores its
latest checkpoint (``ray.train.get_checkpoint()``; every rank loads it and takes back
its own random streams). Train itself does not retry (``max_failures=0``): Tune's
``max_failures`` is the one retry budget. The Tune checkpoint is a copy for the
recorder and Tune's bookkeeping; a Train run directory that was deleted means the
retry starts from step 0.

Stopping: when Tune stops the trial (a scheduler, a stopper) while it runs,
``tune.report`` raises ``SystemExit`` in the Tune function, which then sends the Train
controller an abort and shuts the queues down without waiting for either: with
``reuse_actors`` the Tune actor lives on and gives the function 2 s to return before it
refuses to reuse the actor and fails the next trial. The abort ends the workers and
frees their placement group for the next trial.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sweeper.run.reporting import TrialContext
    from sweeper.spec import Resources
    from trainers.config import TrainConfig

TUNE_FUNCTION_CPU = 0.01
"""What the Tune function of a multi-worker trial reserves (Tune refuses 0)."""
ACK_TIMEOUT_S = 3600.0
"""How long the Train controller waits for Tune to take a checkpoint before it goes on anyway."""
_DONE = "__snsweep_train_done__"


def trial_resources(resources: Resources) -> dict[str, float]:
    """What ``tune.with_resources`` reserves for one trial."""
    if resources.workers > 1:
        return {"cpu": TUNE_FUNCTION_CPU}
    return {"cpu": resources.cpus_per_trial, "gpu": resources.gpus_per_trial}


def with_workers(ctx: TrialContext, resources: Resources) -> TrialContext:
    """The trial context with the per-worker resources ``run_trial`` needs to launch workers."""
    import dataclasses

    return dataclasses.replace(
        ctx,
        workers=resources.workers,
        cpus_per_worker=resources.cpus_per_trial,
        gpus_per_worker=resources.gpus_per_trial,
    )


def _forwarder_class() -> type:
    from ray.train.v2.api.callback import UserCallback

    class _ForwardToTune(UserCallback):
        """Runs in the Train controller: hands rank 0's report to the Tune function, waits for Tune."""

        def __init__(self, items: Any, acks: Any):
            self.items, self.acks = items, acks

        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            import ray

            rank0 = next((m for m in metrics if m), {})  # ranks > 0 report {}
            controller = ray.get_runtime_context().current_actor
            try:
                self.items.put((rank0, checkpoint, controller))
                if checkpoint is not None:  # Train deletes it when the next one registers: let Tune copy it first
                    self.acks.get(timeout=ACK_TIMEOUT_S)
            except Exception:  # noqa: BLE001 - Tune stopped the trial (queues gone): an abort is on its way
                pass

    return _ForwardToTune


def train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: rank ``get_world_rank()`` of the DDP run (process group set up by Train)."""
    import ray.train

    from sweeper.run.reporting import progress_metrics, write_checkpoint
    from trainers.config import TrainConfig
    from trainers.loop import CHECKPOINT_FILE, Progress, Trainer

    fields = dict(config["train"])
    if config["use_gpu"]:
        import ray.train.torch

        fields["device"] = str(ray.train.torch.get_device())
    trainer = Trainer(TrainConfig.from_dict(fields), distributed=True)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load(Path(d) / CHECKPOINT_FILE)

    def report(p: Progress) -> None:
        with tempfile.TemporaryDirectory() as d:
            if write_checkpoint(p, Path(d)):  # collective: every rank saves, rank 0 writes
                metrics = progress_metrics(p, trainer.history)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
            else:
                ray.train.report({}, checkpoint=None)

    trainer.run(report)


def run_distributed(cfg: TrainConfig, ctx: TrialContext, to_tune: Callable[[dict[str, Any], Path], None]) -> None:
    """In the Tune function: train ``cfg`` on ``ctx.workers`` Train workers, forwarding to Tune."""
    import ray
    import ray.train
    from ray import tune
    from ray.train._internal.session import get_session
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    storage = get_session().storage  # the sweep's storage (shared by every node of a cluster)
    items: Queue = Queue(actor_options={"num_cpus": 0})
    acks: Queue = Queue(actor_options={"num_cpus": 0})
    use_gpu = ctx.gpus_per_worker > 0
    per_worker = {"CPU": ctx.cpus_per_worker, **({"GPU": ctx.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"train": cfg.to_dict(), "use_gpu": use_gpu},
        scaling_config=ray.train.ScalingConfig(
            num_workers=ctx.workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{tune.get_context().get_trial_id()}",
            storage_path=f"{storage.storage_fs_path}/ddp",
            storage_filesystem=storage.storage_filesystem,
            callbacks=[_forwarder_class()(items, acks)],
            failure_config=ray.train.FailureConfig(max_failures=0),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    outcome: dict[str, BaseException] = {}

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as e:  # noqa: BLE001 - re-raised in the Tune function below
            outcome["error"] = e
        finally:
            try:
                items.put(_DONE)
            except Exception:  # noqa: BLE001 - the queue is gone: the Tune function has already returned
                pass

    thread = threading.Thread(target=fit, name="snsweep-train-fit", daemon=True)
    controller = None
    finished = False
    thread.start()
    try:
        while True:
            item = items.get()
            if item == _DONE:
                break
            metrics, checkpoint, controller = item
            if checkpoint is None:
                continue
            try:
                with checkpoint.as_directory() as d:
                    to_tune(metrics, Path(d))  # raises SystemExit when Tune stops the trial
            finally:
                acks.put(True)
        finished = True
        thread.join()
    finally:
        # Unless the run has ended, Tune stopped the trial (or forwarding failed): end the Train
        # run and its workers. Nothing here may block: a reused Tune actor gives this function 2 s to return
        # (TUNE_FUNCTION_THREAD_TIMEOUT_S) before it gives up on reusing it and fails the
        # next trial. The abort runs in the controller once its callback returns, which the
        # queues' shutdown forces if it is waiting for an ack.
        if not finished and controller is not None:
            controller.abort.remote()
        for q in (items, acks):
            q.shutdown(force=True)
    if "error" in outcome:
        raise outcome["error"]
