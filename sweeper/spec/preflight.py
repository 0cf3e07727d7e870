"""Are this spec's inputs usable? Asked before Ray starts and before anything is written.

A sweep whose data root is wrong fails in every trial the same way; finding that out by running
the trials costs a minute, a results dir, a report and an MLflow run per trial. The preflight asks
the trainer's own rules (``trainers.data.layout``, ``trainers.models.shapes``,
``trainers.metrics.inputs``: one place for each rule, shared with the loaders and models) about
every input a trial can receive. For each block of the space it takes every combination of the
values of the fields a rule reads: a ``train`` value, a searched parameter's choices or grid
values, every integer of an ``int`` range, else the trainer's default. Grids and sampled sweeps
are treated alike, since a sampler may draw any of those combinations.

Problems come back as ``label: path: message`` lines like the spec's own, each naming the field
(``train.data_root``, ``space.resolution``) and the fix; all of them in one pass. ``files=False``
(``sweeper validate --no-data``, the client side of ``sweeper submit``) keeps only the rules that
need no file system: model/resolution, model/data, metrics/data, a data root set for every real
dataset. File checks are cached per path, so a data root shared by 100 configurations is looked
at once, and each Inception weights file is hashed once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import product
from typing import Any

from sweeper.errors import SpecError
from sweeper.spec.params import IntRange, Param, values_of
from sweeper.spec.schema import SweepSpec

INT_RANGE_LIMIT = 4096
"""An ``int`` range of an input field is checked value by value up to this many values (else its ends)."""
SHOWN_VALID = 8


@dataclass
class Summary:
    """What the preflight looked at, for the one line ``validate`` and ``run`` print."""

    files: bool
    combinations: int = 0
    data_roots: set[tuple[str, str]] = field(default_factory=set)
    weights: set[str] = field(default_factory=set)
    seconds: float = 0.0

    def text(self) -> str:
        what = f"{self.combinations} input combination{'s' if self.combinations != 1 else ''}"
        if not self.files:
            return f"{what} checked; file checks skipped (--no-data)"
        roots = f"{len(self.data_roots)} data root{'s' if len(self.data_roots) != 1 else ''}"
        weights = f", {len(self.weights)} weights file{'s' if len(self.weights) != 1 else ''}" if self.weights else ""
        return f"{what}, {roots}{weights} checked in {self.seconds:.2f} s"


@dataclass(frozen=True)
class _Field:
    values: tuple[Any, ...]
    path: str
    searched: bool
    """More than one value in this block: the field a combination's problem is blamed on first."""
    int_range: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Problem:
    path: str
    message: str
    value: Any
    field: _Field


def check(spec: SweepSpec, label: str, *, files: bool = True) -> Summary:
    """Raise SpecError with one line per problem (``label: path: message``); else what was checked."""
    lines, summary = problems(spec, label, files=files)
    if lines:
        raise SpecError(lines)
    return summary


def problems(spec: SweepSpec, label: str, *, files: bool = True) -> tuple[list[str], Summary]:
    start = time.perf_counter()
    checker = _Checker(files)
    found: list[_Problem] = []
    for b, block in enumerate(spec.blocks):
        fields = {k: _field(spec, b, block, k) for k in _INPUTS}
        checker.fields = fields
        checker.summary.combinations += _count(fields[k] for k in _INPUTS if k != "metrics")
        for keys, rule in checker.rules():
            for combo in product(*(fields[k].values for k in keys)):
                values = dict(zip(keys, combo, strict=True))
                for blame, message in rule(values):
                    key = _blamed(blame, fields)
                    found.append(_Problem(fields[key].path, message, values.get(key), fields[key]))
    checker.summary.seconds = time.perf_counter() - start
    return [f"{label}: {p}" for p in _collapse(found)], checker.summary


# --- where values come from ------------------------------------------------------------------
def _defaults() -> dict[str, Any]:
    from trainers.config import TrainConfig

    return TrainConfig().to_dict()


def _field(spec: SweepSpec, b: int, block: dict[str, Param], key: str) -> _Field:
    if key == "metrics":
        where = "train.metrics" if "metrics" in spec.train else "objective.metric"
        return _Field((tuple(spec.train_metrics),), where, False)
    if key in spec.train:
        return _Field((spec.train[key],), f"train.{key}", False)
    if key in block:
        p = block[key]
        path = f"space[{b}].{key}" if len(spec.blocks) > 1 else f"space.{key}"
        values = values_of(p)
        span = None
        if values is None and isinstance(p, IntRange):
            lo, hi = p.int
            span = (lo, hi)
            values = list(range(lo, hi + 1)) if hi - lo < INT_RANGE_LIMIT else [lo, hi]
        distinct = tuple(dict.fromkeys(values or []))
        return _Field(distinct, path, len(distinct) > 1, span)
    return _Field((_defaults()[key],), f"train.{key}", False)


def _count(fields: Iterable[_Field]) -> int:
    n = 1
    for f in fields:
        n *= len(f.values)
    return n


def _blamed(blame: tuple[str, ...], fields: dict[str, _Field]) -> str:
    """The field a problem is reported at: the first of ``blame`` that is searched in this block
    (the value that makes only some configurations invalid), else the rule's own field (first)."""
    return next((k for k in blame if fields[k].searched), blame[0])


def _collapse(found: list[_Problem]) -> list[str]:
    """``path: message`` lines, deduplicated; many bad values of one ``int`` range become one line."""
    by_path: dict[str, list[_Problem]] = {}
    for p in found:
        by_path.setdefault(p.path, []).append(p)
    out: dict[str, None] = {}
    for path, group in by_path.items():
        span = group[0].field.int_range
        bad = list(dict.fromkeys(p.value for p in group))
        if span is not None and len(bad) > 1:
            valid = [v for v in group[0].field.values if v not in bad][:SHOWN_VALID]
            hint = f"valid there: {', '.join(map(str, valid))}; use `choice`" if valid else "none is valid there"
            out[
                f"{path}: {group[0].message} (and {len(bad) - 1} more values of int: [{span[0]}, {span[1]}]; {hint})"
            ] = None
            continue
        for p in group:
            out[f"{path}: {p.message}"] = None
    return list(out)


# --- the rules (each reads a few fields and asks the trainer) ---------------------------------
_INPUTS = ("dataset", "data_root", "resolution", "channels", "model", "metrics", "inception_weights", "stats_cache_dir")
Found = list[tuple[tuple[str, ...], str]]
"""(fields to blame, in order of preference; the trainer's message) per problem."""


def _problem(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str | None:
    from trainers.config import ConfigError

    try:
        fn(*args, **kwargs)
    except ConfigError as e:
        return str(e)
    return None


class _Checker:
    """The rules, each reading a few fields and asking the trainer; file answers cached per path."""

    def __init__(self, files: bool):
        self.files = files
        self.summary = Summary(files=files)
        self.fields: dict[str, _Field] = {}
        self._located: dict[tuple[str, str, int], str | None] = {}
        self._hashed: dict[str | None, str | None] = {}

    def rules(self) -> list[tuple[tuple[str, ...], Callable[[dict[str, Any]], Found]]]:
        rules = [
            (("model", "resolution"), self.model_resolution),
            (("model", "dataset"), self.model_data),
            (("metrics", "dataset", "channels"), self.metrics_data),
            (("dataset", "data_root", "channels"), self.data_config),
        ]
        if self.files:
            rules += [
                (("dataset", "data_root", "channels", "metrics"), self.data_files),
                (("metrics", "inception_weights"), self.weights),
                (("metrics", "stats_cache_dir"), self.cache_dir),
            ]
        return rules

    def model_resolution(self, v: dict[str, Any]) -> Found:
        from trainers.models.shapes import resolution_problem

        problem = resolution_problem(v["model"], v["resolution"])
        return [(("resolution", "model"), problem)] if problem else []

    def model_data(self, v: dict[str, Any]) -> Found:
        from trainers.data.layout import sample_kind
        from trainers.models.shapes import check_data

        problem = _problem(check_data, v["model"], v["dataset"], sample_kind(v["dataset"]))
        return [(("model", "dataset"), problem)] if problem else []

    def metrics_data(self, v: dict[str, Any]) -> Found:
        from trainers.data import PROCEDURAL
        from trainers.data.layout import sample_kind
        from trainers.metrics import IMAGE_METRICS, MODE_METRICS
        from trainers.metrics.inputs import check_fit

        metrics, dataset = v["metrics"], v["dataset"]
        modes, images = [m for m in metrics if m in MODE_METRICS], [m for m in metrics if m in IMAGE_METRICS]
        kind = sample_kind(dataset)
        # asked twice so the line names the right field: the dataset (kind of data), then the channels
        problem = _problem(check_fit, modes, images, dataset, has_modes=dataset in PROCEDURAL, kind=kind, channels=3)
        if problem:
            return [(("dataset", "metrics"), problem)]
        problem = _problem(
            check_fit, modes, images, dataset, has_modes=dataset in PROCEDURAL, kind=kind, channels=v["channels"]
        )
        return [(("channels", "dataset"), problem)] if problem else []

    def data_config(self, v: dict[str, Any]) -> Found:
        from trainers.data.layout import check_config

        problem = _problem(check_config, v["dataset"], v["data_root"], v["channels"])
        if not problem:
            return []
        return [(("data_root", "dataset") if not v["data_root"] else ("channels", "dataset"), problem)]

    def data_files(self, v: dict[str, Any]) -> Found:
        from trainers.data.layout import ROOTED, check_config, locate
        from trainers.metrics.inputs import needs_real_images, real_images_needed

        dataset, root = v["dataset"], v["data_root"]
        if dataset not in ROOTED or _problem(check_config, dataset, root, v["channels"]):
            return []  # procedural, or already reported by data_config
        need = real_images_needed(v["metrics"])
        key = (dataset, str(root), need)
        if key not in self._located:
            why = f"{', '.join(m for m in v['metrics'] if needs_real_images(m))} need at least {need} real images"
            self._located[key] = _problem(locate, dataset, str(root), min_images=need, why=why)
        self.summary.data_roots.add((dataset, str(root)))
        problem = self._located[key]
        if problem and self.fields["dataset"].searched and self.fields["data_root"].searched:
            problem += (
                " (a sampler pairs every searched dataset with every searched data_root: pair them in a "
                "union of blocks with the grid sampler)"
            )
        return [(("data_root", "dataset"), problem)] if problem else []

    def weights(self, v: dict[str, Any]) -> Found:
        from trainers.metrics import IMAGE_METRICS
        from trainers.metrics.inputs import check_inception_backend, check_inception_weights, needs_inception

        if not any(m in IMAGE_METRICS and needs_inception(m) for m in v["metrics"]):
            return []
        path = v["inception_weights"]
        if path not in self._hashed:
            self._hashed[path] = _problem(check_inception_weights, path)
        if path:
            self.summary.weights.add(str(path))
        out: Found = [(("inception_weights",), self._hashed[path])] if self._hashed[path] else []
        backend = _problem(check_inception_backend)
        return out + ([(("metrics",), backend)] if backend else [])

    def cache_dir(self, v: dict[str, Any]) -> Found:
        from trainers.metrics import IMAGE_METRICS
        from trainers.metrics.inputs import check_cache_dir

        if not any(m in IMAGE_METRICS for m in v["metrics"]):
            return []  # only image metrics cache real statistics
        problem = _problem(check_cache_dir, v["stats_cache_dir"])
        return [(("stats_cache_dir",), problem)] if problem else []
