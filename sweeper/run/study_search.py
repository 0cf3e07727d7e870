"""The searcher pair that writes the study Optuna's tools read: seeds in, one trial per configuration out.

``SeedRepeater`` is Ray's ``Repeater`` (each configuration runs once per seed, the searcher is
told the mean), plus what the mean hides: each seed's objective and Tune trial id (the Parquet
``trial_id``), handed on with the mean. ``StudySearch`` is Ray's ``OptunaSearch``, plus what a
persistent study needs and Ray's searcher never had to care about with its in-memory one:

- the per-seed values become the Optuna trial's user attributes (before ``tell``: a finished
  trial cannot change);
- a configuration whose every seed failed is told FAIL (Optuna 5 refuses a NaN value, which left
  the trial RUNNING).

A resumed sweep builds a fresh searcher on the same study: the dead driver's RUNNING trials are
failed first (``sweeper.run.study.Study.fail_running``), and the configurations a session finishes
outside this searcher are added from the Parquet rows (``Study.record_finished``).

A packed sweep wraps this pair in ``sweeper.run.packing.PackSearcher``, which tells the
repeater each member's objective: the study looks the same.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search import Repeater
from ray.tune.search.optuna import OptunaSearch

REPLICATES_KEY = "__replicates__"
"""The key of the per-seed facts in the result the repeater hands the searcher."""


class SeedRepeater(Repeater):
    """``Repeater(searcher, len(seeds), set_index=True)`` that also reports each seed's value."""

    def __init__(self, searcher: OptunaSearch, seeds: list[int]):
        super().__init__(searcher, repeat=len(seeds), set_index=True)
        self.seeds = list(seeds)
        self._replicates: dict[str, list[str]] = {}
        """Primary trial id -> the group's Tune trial ids in seed order (saved with the Tune state)."""

    def suggest(self, trial_id: str) -> dict | str | None:
        config = super().suggest(trial_id)
        if isinstance(config, dict):
            primary = self._trial_id_to_group[trial_id].primary_trial_id
            self._replicates.setdefault(primary, []).append(trial_id)
        return config

    def on_trial_complete(self, trial_id: str, result: dict | None = None, **kwargs: Any) -> None:
        group = self._trial_id_to_group[trial_id]
        metric = self.searcher.metric
        group.report(trial_id, result[metric] if result and metric in result else math.nan)
        if not group.finished_reporting():
            return
        scores = [float(s) for s in group.scores()]
        finite = [s for s in scores if math.isfinite(s)]
        ids = self._replicates.get(group.primary_trial_id, [])
        facts: dict[str, Any] = {"seeds": self.seeds[: len(scores)], "trial_ids": ids}
        for seed, score in zip(self.seeds, scores, strict=False):
            facts[f"objective_seed_{seed}"] = score if math.isfinite(score) else None  # JSON has no NaN
        mean = sum(finite) / len(finite) if finite else math.nan  # np.nanmean, without its warning
        self.searcher.on_trial_complete(
            group.primary_trial_id, result={metric: mean, REPLICATES_KEY: facts}, **kwargs
        )


class StudySearch(OptunaSearch):
    """``OptunaSearch`` over a persistent study (see the module docstring)."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return
        result = dict(result or {})
        facts = result.pop(REPLICATES_KEY, {})
        for key, v in facts.items():  # before tell: a finished trial cannot change
            ot_trial.set_user_attr(key, v)
        value = result.get(self.metric)
        if value is None or value != value:  # NaN: every seed failed. Optuna 5 refuses to tell NaN,
            super().on_trial_complete(trial_id, None, error=True)  # which left the trial RUNNING: FAIL
        else:
            super().on_trial_complete(trial_id, result, error=error)
