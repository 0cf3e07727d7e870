"""The searcher pair that writes the study Optuna's tools read: seeds in, one trial per configuration out.

``SeedRepeater`` is Ray's ``Repeater`` (each configuration runs once per seed, the searcher is
told the mean), plus what the mean hides: each seed's objective and Tune trial id (the Parquet
``trial_id``), handed on with the mean. ``StudySearch`` is Ray's ``OptunaSearch``, plus what a
persistent study needs and Ray's searcher never had to care about with its in-memory one:

- the per-seed values become the Optuna trial's user attributes (before ``tell``: a finished
  trial cannot change);
- a trial that the storage already finished (a driver died between ``tell`` and its last
  snapshot, or a failed configuration was re-run on resume) is not told twice and keeps exactly
  one COMPLETE trial (``sweeper.run.study.complete_once``);
- a configuration whose every seed failed is told FAIL (Optuna 5 refuses a NaN value, which left
  the trial RUNNING);
- after a restore (``sweeper resume``), RUNNING trials that no restored Tune trial will tell are
  failed (``sweeper.run.study.close_orphans``).

A packed sweep wraps this pair in ``sweeper.run.packing.PackSearcher``, which tells the
repeater each member's objective: the study looks the same.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.search import Repeater
from ray.tune.search.optuna import OptunaSearch

from sweeper.run import study as studymod

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
        if ot_trial is None:
            return
        result = dict(result or {})
        facts = result.pop(REPLICATES_KEY, {})
        value = result.get(self.metric)
        if trial_id not in self._completed_trials:
            import optuna

            try:
                for key, v in facts.items():
                    ot_trial.set_user_attr(key, v)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # the storage finished it already: below
            else:
                if value is None or value != value:  # NaN: every seed failed. Optuna 5 refuses to tell
                    super().on_trial_complete(trial_id, None, error=True)  # NaN and the trial stayed
                else:  # RUNNING forever; say FAIL
                    super().on_trial_complete(trial_id, result, error=error)
                return
        self._completed_trials.add(trial_id)
        studymod.complete_once(self._ot_study, ot_trial.number, value, facts)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        keep = {t.number for tid, t in self._ot_trials.items() if tid not in self._completed_trials}
        failed, requeued = studymod.close_orphans(self._ot_study, keep)
        if failed:
            again = f"; {requeued} grid point(s) queued again" if requeued else ""
            print(f"Optuna: {failed} trial(s) the dead driver left RUNNING marked FAIL{again}", flush=True)
