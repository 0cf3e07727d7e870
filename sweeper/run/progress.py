"""Progress lines for packed trials: one line per pack, not one per training.

A pack of 18 trainings would otherwise print 18 start lines, 18 step lines every few seconds and
18 finish lines. The user needs to see which pack runs which configurations, how far it is, its
best member so far, and what is done and left; the per-training detail is in MLflow and Parquet.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from sweeper.run.reporting import INDEX_KEY


def members_summary(configs: Iterable[dict[str, Any]], seeds: list[int]) -> str:
    """``normalizer=sn scale=0.7..1.4 seed=0..2``: each searched key once, a range where members differ."""
    configs = list(configs)
    keys = [k for k in dict.fromkeys(k for c in configs for k in c) if not k.startswith("__")]
    parts = [_values(k, [c.get(k) for c in configs]) for k in keys]
    parts.append(_values("seed", [seeds[int(c.get(INDEX_KEY, 0)) % len(seeds)] for c in configs]))
    return " ".join(parts)


def _values(key: str, values: list[Any]) -> str:
    distinct = list(dict.fromkeys(values))
    if len(distinct) == 1:
        return f"{key}={_fmt(distinct[0])}"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct):
        return f"{key}={_fmt(min(distinct))}..{_fmt(max(distinct))}"
    return f"{key}={{{','.join(_fmt(v) for v in distinct)}}}"


def pack_step_line(pack: str, step: int, iterations: Any, metric: str, values: dict[int, float], mode: str) -> str:
    """``pack [id] step 375/1000: mode_coverage best 0.42 (trial 11), median 0.12, 18 running``."""
    finite = {n: v for n, v in values.items() if math.isfinite(v)}
    if not finite:
        return f"    pack [{pack}] step {step}/{iterations}: no {metric} yet, {len(values)} running"
    pick = max if mode == "max" else min
    best = pick(finite, key=lambda n: finite[n])
    ordered = sorted(finite.values())
    median = ordered[len(ordered) // 2]
    return (
        f"    pack [{pack}] step {step}/{iterations}: {metric} best {finite[best]:.4g} (trial {best}), "
        f"median {median:.4g}, {len(values)} running"
    )


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
