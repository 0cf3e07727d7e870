"""The searcher and the scheduler of a sweep: Optuna inside Ray Tune, seeds as replicates.

Each configuration runs once per seed (Ray's ``Repeater``); Optuna is told the mean over seeds.
A grid is enqueued point by point (``points_to_evaluate``); ASHA, when asked for, stops trials
at evaluation rungs. With a ``Study`` (sweeper.run.study) the Optuna study lives in its database,
one trial per configuration with the per-seed values (sweeper.run.study_search).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sweeper.run.reporting import OBJECTIVE
from sweeper.run.study import Study
from sweeper.spec import SweepSpec


def make_searcher(spec: SweepSpec, study: Study | None = None) -> Any:
    import optuna

    from sweeper.run.study_search import SeedRepeater, StudySearch
    from sweeper.spec.space import grid_points, optuna_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = spec.search.seed
    startup = max(2, min(10, spec.search.trials // 2))
    samplers: dict[str, Callable[[], Any]] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=startup),
        "grid": lambda: optuna.samplers.RandomSampler(seed=seed),  # never used: every point is enqueued
    }
    space = optuna_space(spec)
    if not space:
        # Everything is fixed (e.g. one grid point): OptunaSearch refuses an empty space, so give it a
        # constant placeholder; keys starting with "__" never reach the training config.
        space = {"__constant__": optuna.distributions.CategoricalDistribution([0])}
    points = None
    if spec.is_grid:
        points = [{k: v for k, v in pt.items() if k in space} or {"__constant__": 0} for pt in grid_points(spec)]
    searcher = StudySearch(
        space=space,
        metric=OBJECTIVE,
        mode=spec.metric_mode,
        sampler=samplers[spec.search.sampler](),
        points_to_evaluate=points,
        storage=study.storage() if study else None,  # None: Optuna's in-memory storage, as before
        study_name=study.name if study and study.storage() else None,
    )
    # Each configuration runs once per seed; Optuna is told the mean over seeds.
    return SeedRepeater(searcher, list(spec.seeds))


def make_pack_searcher(spec: SweepSpec, study: Study | None = None) -> Any:
    """``pack: K``: each Tune trial asks for K configurations (see sweeper.run.packing)."""
    from sweeper.run.packing import PackSearcher

    return PackSearcher(make_searcher(spec, study), spec.pack, OBJECTIVE, spec.metric_mode)


def make_scheduler(spec: SweepSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if spec.scheduler.type == "asha":
        return ASHAScheduler(
            time_attr="training_iteration",  # one unit = one evaluation report
            metric=OBJECTIVE,
            mode=spec.metric_mode,
            grace_period=spec.scheduler.grace_period,
            reduction_factor=spec.scheduler.reduction_factor,
        )
    return FIFOScheduler()
