"""The searcher and the scheduler of a sweep: Optuna inside Ray Tune, seeds as replicates.

Each configuration runs once per seed (a seed ``Repeater``); Optuna is told the mean over seeds,
and with a ``Study`` (sweeper.run.study) the Optuna study lives in its database, one trial per
configuration with the per-seed values (sweeper.run.study_search).
A grid is enqueued point by point (``points_to_evaluate``); ASHA, when asked for, stops trials
at evaluation rungs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sweeper.run.reporting import OBJECTIVE
from sweeper.run.study import Study
from sweeper.spec import SweepSpec


def make_searcher(
    spec: SweepSpec,
    study: Study | None = None,
    evaluated: list[tuple[dict[str, Any], float]] | None = None,
    seed_offset: int = 0,
) -> Any:
    """Optuna (TPE/random/CMA-ES) in a seed repeater: one Optuna trial per configuration.

    ``study``: the sweep's study in its database (sweeper.run.study), which the sampler reads and
    writes, so a resumed sweep samples on from everything it has seen; without one the study lives
    in memory. ``evaluated``: configurations a resumed sweep already finished, with their mean
    objective, told first to an in-memory study (a database study has them already);
    ``seed_offset``: how many configurations exist already, so a seeded sampler does not hand the
    first ones out again (``sweeper.run.ledger``)."""
    import optuna

    from sweeper.run.study_search import SeedRepeater, StudySearch
    from sweeper.spec.space import grid_points, optuna_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seed = spec.search.seed + seed_offset
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
    storage = study.storage() if study is not None else None
    points = rewards = None
    if spec.is_grid:
        points = [{k: v for k, v in pt.items() if k in space} or {"__constant__": 0} for pt in grid_points(spec)]
    elif evaluated and storage is None:
        points = [{k: params[k] for k in space if k in params} for params, _ in evaluated]
        rewards = [value for _, value in evaluated]
    searcher = StudySearch(
        space=space,
        metric=OBJECTIVE,
        mode=spec.metric_mode,
        sampler=samplers[spec.search.sampler](),
        points_to_evaluate=points,
        evaluated_rewards=rewards,
        storage=storage,  # None: Optuna's in-memory storage
        study_name=study.name if storage is not None else None,
    )
    # Each configuration runs once per seed; Optuna is told the mean over seeds.
    return SeedRepeater(searcher, list(spec.seeds))


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
