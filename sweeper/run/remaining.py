"""The searcher of a session: the ledger's unfinished trials first, then new configurations.

A fresh sweep is the special case with nothing recorded. A grid sweep never needs a sampler: its
trials are all known, so they are all slots. A sampled sweep hands out the slots (unfinished
trials of configurations already sampled, each under its old trial id), then asks the inner
searcher (Optuna in a seed ``Repeater``, told the finished configurations first) for the rest of
the budget. After exactly ``total`` suggestions it answers FINISHED, so a session never runs more
trials than the spec has left, packed sweeps included (a last pack may be smaller).
"""

from __future__ import annotations

from typing import Any

from ray.tune.search import Searcher

from sweeper.run.ledger import Plan
from sweeper.run.reporting import OBJECTIVE
from sweeper.spec import SweepSpec


class RemainderSearcher(Searcher):
    def __init__(self, slots: list[dict[str, Any]], inner: Searcher | None, total: int, mode: str):
        super().__init__(metric=OBJECTIVE, mode=mode)
        self.slots = list(slots)
        self.inner = inner
        self.total = total
        self.given = 0
        self._inner_ids: set[str] = set()

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        if self.inner is not None:
            self.inner.set_search_properties(metric, mode, config, **spec)
        return True

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.given >= self.total:
            return Searcher.FINISHED
        if self.slots:
            config = self.slots.pop(0)
        elif self.inner is not None:
            config = self.inner.suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            self._inner_ids.add(trial_id)
        else:
            return Searcher.FINISHED
        self.given += 1
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._inner_ids and self.inner is not None:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._inner_ids and self.inner is not None:
            self._inner_ids.discard(trial_id)
            self.inner.on_trial_complete(trial_id, result, error=error)

    def save(self, checkpoint_path: str) -> None:
        # Tune snapshots its searcher; resume never restores it (the ledger rebuilds the session).
        import pickle

        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        import pickle

        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


def make_session_searcher(spec: SweepSpec, plan: Plan, study: Any = None) -> Any:
    """The session's searcher for ``plan`` (a PackSearcher around it when trials are packed).

    ``study`` (sweeper.run.study): the sweep's Optuna study in its database, which the sampler
    continues; without one an in-memory study is told the finished configurations first."""
    from sweeper.run.search import make_searcher

    inner = None
    if plan.new_configurations:
        try:
            inner = make_searcher(spec, study, evaluated=plan.evaluated, seed_offset=plan.seed_offset)
        except ValueError:
            # a finished configuration Optuna cannot take back (a sweep recorded by an older
            # version): sample the rest without that knowledge rather than not at all
            inner = make_searcher(spec, study, seed_offset=plan.seed_offset)
    searcher = RemainderSearcher([s.config for s in plan.slots], inner, plan.total, spec.metric_mode)
    if spec.pack > 1:
        from sweeper.run.packing import PackSearcher

        return PackSearcher(searcher, spec.pack, OBJECTIVE, spec.metric_mode, total=plan.total)
    return searcher


def tune_trials(spec: SweepSpec, plan: Plan) -> int:
    """Tune's ``num_samples`` for the session: one per training, or for packed trials an upper bound.

    Packs are cut per normalizer (``sweeper.run.packing``), so there may be more of them than
    ``total / pack``; the pack searcher answers FINISHED once every training is packed."""
    return plan.total
