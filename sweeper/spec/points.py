"""The finite configurations of a sweep: the cross product within each block, the union across them.

Kept apart from the schema and the backends because both need it: ``SweepSpec`` checks every
grid point (model/resolution/data_root), and the search backends enqueue them.
"""

from __future__ import annotations

import itertools
from typing import Any, Protocol

from sweeper.spec.params import Param, values_of


class Blocks(Protocol):
    """What the points need of a ``SweepSpec`` (a protocol, so the schema can import this module)."""

    @property
    def blocks(self) -> list[dict[str, Param]]: ...

    @property
    def parameters(self) -> list[str]: ...


def grid_points(spec: Blocks) -> list[dict[str, Any]]:
    """Every configuration of a grid sweep: the cross product within each block, the union across them.

    Duplicates across blocks are dropped (the paper's config lists the default
    setting twice; its scheduler skipped the second copy). With several blocks, a
    parameter missing from a block takes the TrainConfig default there. Continuous
    parameters have no points (a block holding one contributes none).
    """
    out: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    names = spec.parameters
    defaults = _defaults() if len(spec.blocks) > 1 else {}
    for block in spec.blocks:
        keys = [k for k in names if k in block or k in defaults]
        supports = [values_of(block[k]) or [] if k in block else [defaults[k]] for k in keys]
        for combo in itertools.product(*supports):
            point = dict(zip(keys, combo, strict=True))
            key = tuple(sorted((k, repr(v)) for k, v in point.items()))
            if key not in seen:
                seen.add(key)
                out.append(point)
    return out


def _defaults() -> dict[str, Any]:
    from trainers.config import TrainConfig

    return TrainConfig().to_dict()
