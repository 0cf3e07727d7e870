"""One readable GAN training loop with the paper's semantics.

Per iteration (PAPER.md §3.1): ``n_dis`` discriminator updates, each on a fresh
real batch and fresh z and each followed by exactly one persisted power
iteration (``normalizers.update``), then one generator update that reuses the
*last* discriminator step's z. Evaluation runs G in eval mode (BatchNorm moving
averages) on fixed latents every ``eval_every`` iterations and at the end.

The loop knows nothing about Ray, Optuna or MLflow: it calls ``report`` with a
``Progress`` at each evaluation, and the caller decides what to do with it (a
Tune trial forwards it, ``python -m trainers`` prints it). Checkpoints hold the
models, optimizers, every RNG state and the best-so-far bookkeeping, so a run
resumed from step N is bit-identical on CPU to one that never stopped.

Data-parallel training (``Trainer(cfg, distributed=True)`` inside an initialized
``torch.distributed`` process group, e.g. a Ray Train worker; see
``sweeper/distributed.py``). With one process nothing below applies and the loop
is exactly the single-process one.

* **Batch semantics**: ``cfg.batch_size`` is per worker (the paper's "batch 64 per
  GPU"); N workers train on a global batch of N x batch_size per D/G update, with
  the learning rates unchanged (DDP averages the per-worker gradients).
* **BatchNorm in G**: per-worker batch statistics, not ``SyncBatchNorm``: each
  worker's BN normalizes its own batch_size samples, exactly what a single GPU
  does at that batch (the paper's TF code ran on one GPU); SyncBatchNorm would
  normalize over N x batch_size and change the numerics. The BN running averages
  that evaluation uses are rank 0's (its EMA over its own batches, as a single
  GPU's): only rank 0 evaluates and saves, and every rank resumes from them.
* **Buffers**: DDP runs with ``forward_sync_buffers=False`` (no per-forward
  broadcast; buffers are still synced once at wrap time). D's power-iteration
  vectors need none: every rank starts from the same seed, applies the same
  all-reduced gradient with the same Adam state, and so runs
  ``normalizers.update(D)`` on identical weights, keeping u identical
  (tests/test_ddp.py checks it); a broadcast before each of D's forwards would be
  a collective per forward for nothing. G's BN running stats are rank-local, and
  only rank 0's are ever read (see above).
* **Several D forwards per step** (real, fake, the penalty's double backward, the
  G step): plain DDP handles them because every parameter's gradient accumulates
  once per backward. The G step's backward also fills D's gradients, which the
  next D step discards: it runs under D's ``no_sync()`` so they are not all-reduced.
* **Randomness**: models are built from ``cfg.seed`` on every rank (identical
  initial weights and u vectors; DDP also broadcasts rank 0's). Then rank r > 0
  reseeds its data and z streams from (seed, r); rank 0 keeps the single-process
  streams. Losses are averaged over ranks every step, so divergence is decided
  identically everywhere.
* **Checkpoints**: ``save`` is collective: every rank's RNG states (torch, CUDA,
  data, epoch order) are gathered into rank 0's file under ``ranks``; rank 0
  alone writes; every rank loads the same file and takes back its own
  streams, so a resumed run continues bit-identically on CPU. Resuming needs the
  same number of workers. Only rank 0 evaluates, keeps best/history and has
  metrics and samples in its ``Progress``; every rank gets the reports, since
  saving is collective. The other ranks wait for rank 0's evaluation in the next
  collective, so one evaluation must fit in the process group's timeout (30 min).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from trainers import normalizers
from trainers.config import ConfigError, TrainConfig
from trainers.data import DatasetSource, make_source
from trainers.losses import LOSSES
from trainers.metrics import direction, eval_sample_count, make_evaluator
from trainers.models import build as build_models

CHECKPOINT_FILE = "checkpoint.pt"
EVAL_LATENT_SEED = 42
"""Fixed evaluation latents shared by every trial (compare_gan's convention): common
random numbers make metric differences between configurations less noisy."""
RESUMABLE_CHANGES = frozenset({"iterations", "device", "num_threads", "checkpoint_every"})
"""Config keys that may differ when resuming (extending a run, moving it)."""


@dataclass
class Progress:
    """What the loop tells its caller at each evaluation."""

    step: int
    iterations: int
    metrics: dict[str, float]
    """Evaluation metrics, losses and (when enabled) diagnostics at this step."""
    save_checkpoint: Callable[[Path], Path | None]
    """Write a checkpoint into a directory; collective when distributed (only rank 0 writes)."""
    samples: torch.Tensor | None = None
    """A few generated samples (images or 2D points) for previews."""
    done: bool = False
    status: str = "running"


@dataclass
class TrainResult:
    status: str
    """``completed`` or ``diverged``."""
    step: int
    final: dict[str, float]
    best: dict[str, float]
    best_step: dict[str, int]
    error: str = ""
    wall_seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def write_checkpoint(state: dict, directory: Path) -> Path:
    """``torch.save`` ``state`` as ``directory/checkpoint.pt`` through a temporary file and a rename,
    so that a crash mid-write never leaves a torn checkpoint (solo and packed runs alike)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{CHECKPOINT_FILE}.tmp"
    torch.save(state, tmp)
    return tmp.replace(directory / CHECKPOINT_FILE)


class Trainer:
    """Holds the state of one run; ``run()`` trains to ``cfg.iterations``.

    ``distributed=True``: one rank of a data-parallel run in the current
    ``torch.distributed`` process group (module docstring); a group of one is the
    single-process trainer. ``like``: a trainer whose dataset and evaluator this one shares
    (same data and metrics config; trainers.packed builds K trainers, the dataset is loaded
    once); building them consumes no randomness, so sharing changes nothing else.
    """

    def __init__(self, cfg: TrainConfig, distributed: bool = False, like: Trainer | None = None):
        self.cfg = cfg
        if distributed and not dist.is_initialized():
            raise ConfigError("distributed=True needs an initialized torch.distributed process group")
        self.rank = dist.get_rank() if distributed else 0
        self.world_size = dist.get_world_size() if distributed else 1
        self.is_main = self.rank == 0
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        if cfg.normalizer not in normalizers.METHODS:
            raise ConfigError(f"unknown normalizer {cfg.normalizer!r}; valid: {', '.join(normalizers.METHODS)}")
        self.device = torch.device(cfg.device)
        if self.world_size > 1 and self.device.type == "cuda":
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(self.device)  # NCCL collectives use the current device
        torch.manual_seed(cfg.seed)
        if like is None:
            self.source = make_source(cfg)
        else:  # a finite dataset's epoch order is per trainer; procedural sources are stateless
            src = like.source
            self.source = DatasetSource(src.dataset, src.sampling) if isinstance(src, DatasetSource) else src
        self.G, self.D = build_models(cfg)
        normalizers.apply(self.D, cfg.normalizer, cfg.scale, **self._normalizer_options())
        self.G.to(self.device)
        self.D.to(self.device)
        self.loss = LOSSES[cfg.resolved_loss]
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.data_rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.eval_z = torch.randn(
            eval_sample_count(cfg), cfg.latent_dim, generator=torch.Generator().manual_seed(EVAL_LATENT_SEED)
        )
        # what train_step calls: the DDP wrappers when distributed, else G and D themselves
        self.train_G, self.train_D = self.G, self.D
        if self.world_size > 1:
            self._setup_ddp()
        self.evaluate_samples = make_evaluator(cfg, self.source) if like is None else like.evaluate_samples
        self.step = 0
        self.best: dict[str, float] = {}
        self.best_step: dict[str, int] = {}
        self.history: list[dict[str, float]] = []
        self.status, self.error, self._loss_sum = "completed", "", [0.0, 0.0, 0]

    def _setup_ddp(self) -> None:
        if self.rank > 0:  # rank 0 keeps the single-process streams
            torch.manual_seed(_rank_seed(self.cfg.seed, self.rank))
            self.data_rng.manual_seed(_rank_seed(self.cfg.seed + 1, self.rank))
        # SNConv creates its u/v buffers at the first forward: create them before DDP snapshots them
        normalizers.materialize(self.D, self.generate(self.eval_z[:1]).to(self.device))
        ids = [self.device.index] if self.device.type == "cuda" else None
        self.train_G = DistributedDataParallel(self.G, device_ids=ids, forward_sync_buffers=False)
        self.train_D = DistributedDataParallel(self.D, device_ids=ids, forward_sync_buffers=False)

    def _normalizer_options(self) -> dict:
        opts = dict(self.cfg.options)
        if self.cfg.normalizer not in ("none", "lecun"):
            opts.setdefault("grad_through_uv", self.cfg.grad_through_uv)
        return opts

    # --- checkpoints -------------------------------------------------------------
    def _rng_state(self) -> dict:
        """This process's random streams: everything a bit-exact resume needs besides the models."""
        state = {"rng_torch": torch.get_rng_state(), "rng_data": self.data_rng.get_state()}
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        if hasattr(self.source, "state_dict"):
            state["source"] = self.source.state_dict()
        return state

    def _set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["rng_torch"].cpu())
        self.data_rng.set_state(state["rng_data"].cpu())
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), self.device)
        if "source" in state and hasattr(self.source, "load_state_dict"):
            self.source.load_state_dict(state["source"])

    def state_dict(self) -> dict:
        """The checkpoint; collective when distributed (gathers every rank's random streams)."""
        state = {
            "config": self.cfg.to_dict(),
            "step": self.step,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            **self._rng_state(),
            "best": dict(self.best),
            "best_step": dict(self.best_step),
            "history": list(self.history),
        }
        if self.world_size > 1:
            ranks: list[dict | None] = [None] * self.world_size
            dist.all_gather_object(ranks, self._rng_state())
            state["ranks"] = ranks
        return state

    def save(self, directory: Path) -> Path | None:
        """Write ``checkpoint.pt`` into ``directory``; when distributed every rank must call it,
        rank 0 alone writes (the others return None)."""
        state = self.state_dict()
        if not self.is_main:
            return None
        return write_checkpoint(state, directory)

    def load(self, path: Path) -> None:
        """Restore a checkpoint; refuse one written by a different configuration."""
        path = Path(path)
        if path.is_dir():
            path = path / CHECKPOINT_FILE
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True), str(path))

    def load_state_dict(self, state: dict, origin: str = "from this checkpoint") -> None:
        """Restore :meth:`state_dict`'s output; refuse one written by a different configuration."""
        saved = TrainConfig.from_dict(state["config"])
        changed = {k: v for k, v in saved.diff(self.cfg).items() if k not in RESUMABLE_CHANGES}
        if changed:
            detail = "; ".join(f"{k}: checkpoint {a!r} != config {b!r}" for k, (a, b) in changed.items())
            raise ConfigError(f"refusing to resume {origin}: the configuration changed ({detail})")
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if self.world_size > 1:
            ranks = state.get("ranks") or [state]
            if len(ranks) != self.world_size:
                raise ConfigError(
                    f"refusing to resume {origin}: written by {len(ranks)} worker(s), this run has {self.world_size}"
                )
            self._set_rng_state(ranks[self.rank])
        else:
            self._set_rng_state(state)
        self.step = int(state["step"])
        self.best, self.best_step = dict(state["best"]), dict(state["best_step"])
        self.history = list(state["history"])

    # --- one iteration -------------------------------------------------------------
    def _real(self, n: int) -> torch.Tensor:
        return self.source.sample(n, self.data_rng).to(self.device)

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.cfg.latent_dim, device=self.device)

    def train_step(self, want_grads: bool = False) -> tuple[float, float, dict[str, float]]:
        cfg, b = self.cfg, self.cfg.batch_size
        grads: dict[str, float] = {}
        for i in range(cfg.n_dis):
            real, z = self._real(b), self._z(b)
            with torch.no_grad():
                fake = self.train_G(z)  # train-mode BN stats update here too, as in the TF code
            loss_d = self.loss.d_loss(self.train_D, real, fake, cfg.gp_weight)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            if want_grads and i == cfg.n_dis - 1:
                grads = _grad_norms(self.D)
            self.opt_d.step()
            normalizers.update(self.D)  # exactly one persisted power iteration per D update
        # the G step reuses the last D step's z (paper semantics); D's gradients from it are
        # discarded by the next D step, so DDP need not all-reduce them
        with _unsynced(self.train_D):
            loss_g = self.loss.g_loss(self.train_D(self.train_G(z)))
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
        self.opt_g.step()
        if self.world_size > 1:  # the global batch's losses, so every rank sees the same divergence
            both = torch.stack([loss_d.detach(), loss_g.detach()]).double()
            dist.all_reduce(both)
            return float(both[0]) / self.world_size, float(both[1]) / self.world_size, grads
        return float(loss_d.detach()), float(loss_g.detach()), grads

    # --- evaluation ----------------------------------------------------------------
    @torch.no_grad()
    def generate(self, z: torch.Tensor, chunk: int = 256) -> torch.Tensor:
        was_training = self.G.training
        self.G.eval()
        try:
            return torch.cat([self.G(c.to(self.device)).cpu() for c in z.split(chunk)])
        finally:
            self.G.train(was_training)

    def evaluate(self, samples: torch.Tensor | None = None, diverged: bool = False) -> dict[str, float]:
        """Metrics of ``samples`` (default: G's eval-mode samples of the fixed latents); tracks the best.

        ``diverged``: the run stopped on a bad loss, so G may be broken. A diverged run is still
        evaluated where it stopped (its row then says how good G was at that step); non-finite
        samples, or metrics that cannot be computed from such samples, become NaN there instead
        of an error.
        """
        samples = self.generate(self.eval_z) if samples is None else samples
        self._last_samples = samples[:64]
        if diverged and not bool(torch.isfinite(samples).all()):
            return dict.fromkeys(self.cfg.metrics, math.nan)
        try:
            metrics = self.evaluate_samples(samples)
        except ConfigError:
            raise
        except (ValueError, ArithmeticError, RuntimeError):
            if not diverged:
                raise
            return dict.fromkeys(self.cfg.metrics, math.nan)
        for name, value in metrics.items():
            better = max if direction(name) == "max" else min
            if math.isfinite(value) and (name not in self.best or better(value, self.best[name]) == value):
                if self.best.get(name) != value:
                    self.best[name], self.best_step[name] = value, self.step
        return metrics

    def diagnostics(self) -> dict[str, float]:
        if not self.cfg.diagnostics:
            return {}
        # Diagnostics must never change the training trajectory: the global RNG is forked, the
        # probe batch comes from a generator of its own, and an epoch sampler's position is kept.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            from trainers import diagnostics

            saved = self.source.state_dict() if hasattr(self.source, "state_dict") else None
            probe_rng = torch.Generator().manual_seed(self.cfg.seed + 2)
            x = self.source.sample(min(self.cfg.batch_size, 16), probe_rng).to(self.device)
            if saved is not None:
                self.source.load_state_dict(saved)
            out = diagnostics.spectral_norms(self.D)
            out.update(diagnostics.parameter_variance(self.D))
            out["prop1_bound"] = diagnostics.prop1_bound(self.D, x)
        return out

    # --- the loop ------------------------------------------------------------------
    def run(self, report: Callable[[Progress], None] | None = None) -> TrainResult:
        cfg = self.cfg
        t0 = time.perf_counter()
        self.status, self.error, self._loss_sum = "completed", "", [0.0, 0.0, 0]
        self.G.train()
        self.D.train()
        if self.step >= cfg.iterations and self.history and report is not None:
            # Restored from the final checkpoint (the process died after saving it): say so again,
            # so the caller still receives the closing report it may have missed.
            report(self.closing_progress())
        while self.step < cfg.iterations and self.status != "diverged":
            is_eval = self.eval_due()
            loss_d, loss_g, grads = self.train_step(want_grads=is_eval and cfg.diagnostics and self.is_main)
            progress = self.record(loss_d, loss_g, grads, is_eval)
            if progress is not None and report is not None:
                report(progress)
        return self.result(time.perf_counter() - t0)

    def eval_due(self) -> bool:
        """Whether the coming iteration ends with an evaluation."""
        return (self.step + 1) % self.cfg.eval_every == 0 or self.step + 1 == self.cfg.iterations

    def bad_loss(self, loss_d: float, loss_g: float) -> float | None:
        """The loss that ends the run as diverged (NaN/Inf, or |loss| above the threshold), else None."""
        limit = self.cfg.divergence_threshold
        return next((v for v in (loss_d, loss_g) if not math.isfinite(v) or abs(v) > limit), None)

    def record(
        self, loss_d: float, loss_g: float, grads: dict[str, float], is_eval: bool, samples: torch.Tensor | None = None
    ) -> Progress | None:
        """Book one finished iteration: the step, divergence, and at an evaluation (or the divergence)
        the metrics, history and the ``Progress`` to report, else None. ``samples``: G's eval-mode
        samples when the caller made them (trainers.packed generates all members' at once)."""
        cfg = self.cfg
        self.step += 1
        s = self._loss_sum
        self._loss_sum = [s[0] + loss_d, s[1] + loss_g, s[2] + 1]
        bad = self.bad_loss(loss_d, loss_g)
        if bad is not None:
            self.status = "diverged"
            self.error = f"loss {bad} at step {self.step} (threshold {cfg.divergence_threshold})"
            is_eval = True
        if not is_eval:
            return None
        s, self._loss_sum = self._loss_sum, [0.0, 0.0, 0]
        metrics = {"loss_d": s[0] / s[2], "loss_g": s[1] / s[2]}
        if self.is_main:
            metrics.update(self.evaluate(samples, diverged=self.status == "diverged"))
            if self.status != "diverged":
                metrics.update(grads)
                metrics.update(self.diagnostics())
        self.history.append({"step": float(self.step), **metrics})
        done = self.status == "diverged" or self.step >= cfg.iterations
        return Progress(
            step=self.step,
            iterations=cfg.iterations,
            metrics=metrics,
            save_checkpoint=self.save,
            samples=getattr(self, "_last_samples", None),
            done=done,
            status=self.status if done else "running",
        )

    def closing_progress(self) -> Progress:
        """The final report again, for a run restored from its final checkpoint."""
        last = {k: v for k, v in self.history[-1].items() if k != "step"}
        return Progress(self.step, self.cfg.iterations, last, self.save, None, done=True, status="completed")

    def result(self, wall_seconds: float) -> TrainResult:
        final = {k: v for k, v in (self.history[-1] if self.history else {}).items() if k != "step"}
        return TrainResult(
            status=self.status,
            step=self.step,
            final=final,
            best=dict(self.best),
            best_step=dict(self.best_step),
            error=self.error,
            wall_seconds=wall_seconds,
            history=list(self.history),
        )


def _rank_seed(seed: int, rank: int) -> int:
    """A 63-bit seed for rank ``rank``'s stream of ``seed``, unrelated to any other (seed, rank)."""
    digest = hashlib.sha256(f"snsweep-rank:{seed}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _unsynced(module: nn.Module) -> contextlib.AbstractContextManager:
    return module.no_sync() if isinstance(module, DistributedDataParallel) else contextlib.nullcontext()


def _grad_norms(d: nn.Module) -> dict[str, float]:
    from trainers import diagnostics

    return diagnostics.gradient_norms(d)


def train(
    cfg: TrainConfig,
    report: Callable[[Progress], None] | None = None,
    resume_from: Path | None = None,
) -> TrainResult:
    """Train one GAN; resume from a checkpoint file or directory when given."""
    trainer = Trainer(cfg)
    if resume_from is not None:
        trainer.load(Path(resume_from))
    return trainer.run(report)
