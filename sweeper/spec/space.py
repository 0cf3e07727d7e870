"""Pure translation of a sweep spec into what the search backends (Optuna, Ray Tune) take.

No Ray or Optuna objects are *used* here beyond building distributions, so the
mapping is a plain function tested with a table of input -> expected output.
Seeds are not a search dimension: they are a replicate axis handled by the
tuner (each configuration runs once per seed; the searcher sees the mean).

A union of blocks (``space`` as a list) is expanded like the paper's
GPUTaskScheduler configs: the cross product within each block, the union across
blocks, duplicates dropped. A parameter that some blocks leave out takes, in
those blocks, the TrainConfig default (it cannot also be in ``train``), so every
point names the same parameters and equal configurations dedupe.
"""

from __future__ import annotations

from typing import Any

from sweeper.spec.params import Choice, Grid, IntRange, LogUniform, Param, Uniform, values_of
from sweeper.spec.points import grid_points
from sweeper.spec.schema import SweepSpec


def optuna_distribution(p: Param) -> Any:
    """One parameter -> an Optuna distribution (fixed values become 1-element categoricals)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(p, Uniform):
        return FloatDistribution(p.uniform[0], p.uniform[1])
    if isinstance(p, LogUniform):
        return FloatDistribution(p.loguniform[0], p.loguniform[1], log=True)
    if isinstance(p, IntRange):
        return IntDistribution(p.int[0], p.int[1], log=p.log)
    if isinstance(p, (Choice, Grid)):
        return CategoricalDistribution(_dedupe(values_of(p) or []))
    return CategoricalDistribution([p])


def optuna_space(spec: SweepSpec) -> dict[str, Any]:
    """The searched parameters as Optuna distributions.

    A union of blocks (``space`` as a list) becomes, per parameter, a categorical
    over the union of its values; the grid points themselves are enqueued.
    """
    blocks = spec.blocks
    if len(blocks) == 1 and not spec.is_grid:
        return {k: optuna_distribution(p) for k, p in blocks[0].items() if _is_searched(p)}
    from optuna.distributions import CategoricalDistribution

    union: dict[str, list[Any]] = {}
    for point in grid_points(spec):
        for k, v in point.items():
            union.setdefault(k, [])
            if v not in union[k]:
                union[k].append(v)
    return {k: CategoricalDistribution(v) for k, v in union.items() if len(v) > 1}


def fixed_params(spec: SweepSpec) -> dict[str, Any]:
    """Parameters with a single value in every block: constants, not search dimensions."""
    out: dict[str, Any] = dict(spec.train)
    if spec.is_grid or len(spec.blocks) > 1:
        points = grid_points(spec)
        for k in spec.parameters:
            vals = {repr(pt.get(k)) for pt in points}
            if points and len(vals) == 1 and all(k in pt for pt in points):
                out[k] = points[0][k]
        return out
    for k, p in spec.blocks[0].items():
        if not _is_searched(p):
            out[k] = (values_of(p) or [p])[0]
    return out


def tune_space(spec: SweepSpec) -> dict[str, Any]:
    """The same space as Ray Tune sampling primitives (used without Optuna, and in docs).

    One mapping only: a union of blocks has no Tune equivalent (``grid_points`` lists it).
    """
    from ray import tune

    if len(spec.blocks) > 1:
        raise ValueError("tune_space takes one mapping; a union of blocks is a list of grid_points")

    def convert(p: Param) -> Any:
        if isinstance(p, Uniform):
            return tune.uniform(*p.uniform)
        if isinstance(p, LogUniform):
            return tune.loguniform(*p.loguniform)
        if isinstance(p, IntRange):
            return (tune.lograndint if p.log else tune.randint)(p.int[0], p.int[1] + 1)
        if isinstance(p, Grid):
            return tune.grid_search(list(p.grid))
        if isinstance(p, Choice):
            return tune.choice(list(p.choice))
        return p

    return {k: convert(p) for k, p in spec.blocks[0].items()}


def _is_searched(p: Param) -> bool:
    v = values_of(p)
    return v is None or len(_dedupe(v)) > 1


def _dedupe(values: list[Any]) -> list[Any]:
    """Distinct values in order (by repr, as grid points: ``1`` and ``True`` stay distinct)."""
    out: dict[str, Any] = {}
    for v in values:
        out.setdefault(repr(v), v)
    return list(out.values())
