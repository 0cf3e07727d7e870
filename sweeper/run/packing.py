"""Packed trials: K trainings that share an architecture run as one Tune trial.

``pack: K`` in a sweep file makes each Tune trial ask the searcher for K configurations (seed
replicates included), train them together with ``trainers.packed.PackedTrainer`` (one vectorized
model in one process), and report every member under ``m{i}/<key>``. The recorder splits such a
trial back into K members, so Parquet rows and MLflow runs look exactly like unpacked ones; Optuna
is told each member's objective separately.

Members of one pack must agree on every training key except ``trainers.packed.PER_MEMBER_KEYS``
(``can_pack``); in particular on the normalizer, since a pack runs one module structure under vmap.
``PackSearcher`` therefore queues the inner searcher's suggestions by those keys and cuts each pack
from one queue, so a sweep over normalizer x scale x seed packs same-normalizer members together.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

PACK_KEY = "__pack__"


def pack_key(config: dict[str, Any]) -> tuple:
    """What members of one pack must share: every suggested key but the per-member ones and ``__*``."""
    from trainers.packed import PER_MEMBER_KEYS

    return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in PER_MEMBER_KEYS and not k.startswith("__")))


class PackSearcher(Searcher):
    """Wraps a searcher: one suggestion = up to K inner suggestions that can pack together.

    Inner suggestions are queued by :func:`pack_key`; a suggestion draws from the inner searcher
    until some queue holds K (at most 2K - 1 draws, so a sampler is not run far ahead of its
    results) and returns K members of one queue, or, when none is full, the fullest queue as a
    smaller pack. ``total`` (the sweep's trainings) caps the draws; once they are drawn and
    packed, the searcher is FINISHED (Tune's ``num_samples`` is then only an upper bound).
    """

    def __init__(self, inner: Searcher, k: int, metric: str, mode: str, total: int | None = None):
        super().__init__(metric=metric, mode=mode)
        self.inner = inner
        self.k = k
        self.total = total
        self._drawn = 0
        self._exhausted = False
        self._queues: dict[tuple, list[tuple[str, dict]]] = {}
        self._members: dict[str, list[str]] = {}
        self._last: dict[str, float] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | str | None:
        waiting = None
        for i in range(2 * self.k - 1):
            if any(len(q) >= self.k for q in self._queues.values()):
                break
            if self._exhausted or (self.total is not None and self._drawn >= self.total):
                self._exhausted = True
                break
            sub = f"{trial_id}-m{i}"
            cfg = self.inner.suggest(sub)
            if cfg == Searcher.FINISHED:
                self._exhausted = True
                break
            if cfg is None:  # the inner searcher waits for results: pack what is queued, or wait too
                waiting = cfg
                break
            self._drawn += 1
            self._queues.setdefault(pack_key(cfg), []).append((sub, cfg))
        if not self._queues:
            return Searcher.FINISHED if self._exhausted else waiting
        key = max(self._queues, key=lambda q: min(len(self._queues[q]), self.k))  # a full queue, else the fullest
        members, self._queues[key] = self._queues[key][: self.k], self._queues[key][self.k :]
        if not self._queues[key]:
            del self._queues[key]
        self._members[trial_id] = [sub for sub, _ in members]
        return {PACK_KEY: [cfg for _, cfg in members]}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        # Members report at different steps (one may have diverged earlier): keep each one's last word.
        for i in range(len(self._members.get(trial_id, []))):
            if f"m{i}/{self.metric}" in result:
                self._last[f"{trial_id}/{i}"] = result[f"m{i}/{self.metric}"]

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        for i, sub in enumerate(self._members.pop(trial_id, [])):
            last = self._last.pop(f"{trial_id}/{i}", None)
            value = (result or {}).get(f"m{i}/{self.metric}", last)
            if error or value is None:
                self.inner.on_trial_complete(sub, None, error=True)
            else:
                self.inner.on_trial_complete(sub, {self.metric: value}, error=False)

    _STATE = ("k", "total", "_drawn", "_exhausted", "_queues", "_members", "_last")

    def save(self, checkpoint_path: str) -> None:
        inner_path = checkpoint_path + ".inner"
        self.inner.save(inner_path)
        Path(checkpoint_path).write_bytes(pickle.dumps({name: getattr(self, name) for name in self._STATE}))

    def restore(self, checkpoint_path: str) -> None:
        self.inner.restore(checkpoint_path + ".inner")
        for name, value in pickle.loads(Path(checkpoint_path).read_bytes()).items():
            setattr(self, name, value)


def run_pack_trial(config: dict[str, Any], ctx: Any) -> None:
    """The Tune function for a pack: like ``sweeper.run.trial.run_trial``, for K members at once."""
    import torch
    from ray import tune

    from sweeper.run.reporting import OBJECTIVE, TuneReporter, penalty, save_preview, trial_config
    from trainers.config import TrainConfig
    from trainers.loop import CHECKPOINT_FILE, write_checkpoint
    from trainers.packed import PackedTrainer

    cfgs = [TrainConfig.from_dict(trial_config(m, ctx)) for m in config[PACK_KEY]]
    trainer = PackedTrainer(cfgs)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            trainer.load_state_dict(torch.load(Path(d) / CHECKPOINT_FILE, weights_only=True))
    better = max if ctx.mode == "max" else min
    objectives = [TuneReporter(ctx).objective for _ in cfgs]  # each member's final-or-best objective

    def report(step: int, progress: list[Any]) -> None:
        out: dict[str, Any] = {"step": step, "iterations": cfgs[0].iterations}
        for i, p in enumerate(progress):
            if p is None:  # this member stopped earlier (diverged): nothing new to say
                continue
            for k, v in p.metrics.items():
                out[f"m{i}/{k}"] = float(v)
            out[f"m{i}/trial_status"] = p.status
            out[f"m{i}/{OBJECTIVE}"] = objectives[i](p.metrics)
            if p.done:
                out[f"m{i}/history_json"] = json.dumps(trainer.history[i])
        # Tune requires the searcher's metric at the top level; the PackSearcher reads the per-member ones.
        values = [out[f"m{i}/{OBJECTIVE}"] for i, p in enumerate(progress) if p is not None]
        out[OBJECTIVE] = better(values) if values else penalty(ctx.mode)
        with tempfile.TemporaryDirectory() as d:
            write_checkpoint(trainer.state_dict(), Path(d))
            for i, p in enumerate(progress):
                if p is not None and p.samples is not None:
                    save_preview(p.samples, Path(d) / f"samples_m{i}.png")
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(d))

    trainer.run(report)
