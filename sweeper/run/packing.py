"""Packed trials: K trainings that share an architecture run as one Tune trial.

``pack: K`` in a sweep file makes each Tune trial ask the searcher for K configurations (seed
replicates included), train them together with ``trainers.packed.PackedTrainer`` (one vectorized
model in one process), and report every member under ``m{i}/<key>``. The recorder splits such a
trial back into K members, so Parquet rows and MLflow runs look exactly like unpacked ones; Optuna
is told each member's objective separately.
"""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

PACK_KEY = "__pack__"


class PackSearcher(Searcher):
    """Wraps a searcher: one suggestion = up to K inner suggestions, told back one by one."""

    def __init__(self, inner: Searcher, k: int, metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.inner = inner
        self.k = k
        self._members: dict[str, list[str]] = {}
        self._last: dict[str, float] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id: str) -> dict | str | None:
        configs, ids = [], []
        for i in range(self.k):
            sub = f"{trial_id}-m{i}"
            cfg = self.inner.suggest(sub)
            if cfg is None or cfg == Searcher.FINISHED:
                if not configs:
                    return cfg
                break
            configs.append(cfg)
            ids.append(sub)
        self._members[trial_id] = ids
        return {PACK_KEY: configs}

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

    def save(self, checkpoint_path: str) -> None:
        # One file: Tune saves to a temporary name and renames only that one (a second file beside
        # it was left under the temporary name, so a packed sweep could not resume). Tune saves the
        # state of wrappers it can see (``.searcher``) itself; this one hides the seed Repeater, so
        # its groups travel here too, or a resumed pack could not tell Optuna its members.
        with tempfile.TemporaryDirectory() as d:
            self.inner.save(str(Path(d) / "inner.pkl"))
            inner = (Path(d) / "inner.pkl").read_bytes()
        wrapper = self.inner.get_state() if hasattr(self.inner, "searcher") else None
        state = {"k": self.k, "members": self._members, "last": self._last, "inner": inner, "wrapper": wrapper}
        Path(checkpoint_path).write_bytes(pickle.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        state = pickle.loads(Path(checkpoint_path).read_bytes())
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "inner.pkl").write_bytes(state["inner"])
            self.inner.restore(str(Path(d) / "inner.pkl"))
        if state["wrapper"] is not None:
            self.inner.set_state(state["wrapper"])
        self.k, self._members, self._last = state["k"], state["members"], state["last"]


def run_pack_trial(config: dict[str, Any], ctx: Any) -> None:
    """The Tune function for a pack: like ``sweeper.run.trial.run_trial``, for K members at once."""
    import torch
    from ray import tune

    from sweeper.run.reporting import OBJECTIVE, TuneReporter, penalty, save_preview, trial_config
    from trainers.config import TrainConfig
    from trainers.loop import CHECKPOINT_FILE
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
            torch.save(trainer.state_dict(), Path(d) / CHECKPOINT_FILE)
            for i, p in enumerate(progress):
                if p is not None and p.samples is not None:
                    save_preview(p.samples, Path(d) / f"samples_m{i}.png")
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(d))

    trainer.run(report)
