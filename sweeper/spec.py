"""Sweep files: the pydantic schema, loading, and one-line errors.

A sweep file says what to train (``train``: fixed TrainConfig fields), what to
search (``space``: per parameter a fixed value, ``choice``, ``uniform``,
``loguniform``, ``int`` or an explicit ``grid``), how (``search``, ``scheduler``),
with which replicate seeds (``seeds``) and on what resources. Everything is
checked before Ray starts; each problem becomes one line naming the file, the
field path and what is allowed.
"""

from __future__ import annotations

import math
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Scalar = bool | int | float | str


class SpecError(ValueError):
    """A user-fixable problem in a sweep file; ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- parameter forms ------------------------------------------------------------------
class Choice(_Strict):
    choice: Annotated[list[Scalar], Field(min_length=1)]


class Grid(_Strict):
    grid: Annotated[list[Scalar], Field(min_length=1)]


class _Range(_Strict):
    @staticmethod
    def _ordered(v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"low must be <= high, got [{v[0]}, {v[1]}]")
        return v


class Uniform(_Range):
    uniform: tuple[float, float]
    _check = field_validator("uniform")(_Range._ordered)


class LogUniform(_Range):
    loguniform: tuple[float, float]

    @field_validator("loguniform")
    @classmethod
    def _positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {v[0]}")
        return cls._ordered(v)


class IntRange(_Range):
    int: tuple[int, int]
    log: bool = False
    _check = field_validator("int")(_Range._ordered)


Param = Choice | Grid | Uniform | LogUniform | IntRange | Scalar


def values_of(p: Param) -> list[Scalar] | None:
    """The finite support of a parameter, or None for a continuous one."""
    if isinstance(p, Choice):
        return list(p.choice)
    if isinstance(p, Grid):
        return list(p.grid)
    if isinstance(p, (Uniform, LogUniform, IntRange)):
        return None
    return [p]


def bounds_of(p: Param) -> tuple[float, float] | None:
    if isinstance(p, Uniform):
        return p.uniform
    if isinstance(p, LogUniform):
        return p.loguniform
    if isinstance(p, IntRange):
        return p.int
    return None


# --- sections ---------------------------------------------------------------------------
Direction = Literal["max", "min"]
Selection = Literal["final", "best"]
SAMPLERS = ("tpe", "random", "grid", "cmaes")


class Objective(_Strict):
    metric: str = "mode_coverage"
    mode: Direction | None = None
    """Defaults to the metric's own direction."""
    selection: Selection = "final"
    """What the searcher sees: the value at the end of training, or the best during it."""


class Search(_Strict):
    sampler: str = "tpe"
    seed: int = 0
    trials: Annotated[int, Field(ge=1)] = 8
    """Configurations to sample (each runs once per seed); ignored by ``grid``."""
    time_budget_s: Annotated[float, Field(gt=0)] | None = None

    @field_validator("sampler")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SAMPLERS:
            raise ValueError(f"unknown sampler {v!r}; valid: {', '.join(SAMPLERS)}")
        return v


class Scheduler(_Strict):
    type: Literal["fifo", "asha"] = "fifo"
    grace_period: Annotated[int, Field(ge=1)] = 1
    """ASHA: evaluations a trial gets before it may be stopped."""
    reduction_factor: Annotated[float, Field(gt=1)] = 3.0
    stop_on_divergence: bool = True


class Resources(_Strict):
    cpus_per_trial: Annotated[float, Field(gt=0)] = 1.0
    gpus_per_trial: Annotated[float, Field(ge=0)] = 0.0
    workers: Annotated[int, Field(ge=1)] = 1
    """DDP workers per trial (multi-GPU trials)."""
    max_concurrent: Annotated[int, Field(ge=1)] | None = None
    """None = as many as the cluster's resources allow."""
    max_failures: Annotated[int, Field(ge=0)] = 1
    """Retries of a trial from its last checkpoint after a worker/node failure."""


class SweepSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")]
    description: str = ""
    reproduces: str = ""
    """The paper table/figure this sweep reproduces."""
    train: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, Param] | list[dict[str, Param]] = Field(default_factory=dict)
    """One mapping (a product space) or a list of mappings (a union of grids, like the paper's configs)."""
    seeds: Annotated[list[int], Field(min_length=1)] = [0]
    objective: Objective = Objective()
    search: Search = Search()
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    allowed_failure_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _check_semantics(self) -> SweepSpec:
        from trainers.config import TrainConfig

        fields = set(TrainConfig.field_names())
        errors: list[str] = []
        for key in self.train:
            if key not in fields:
                errors.append(f"train.{key}: unknown config key; valid: {', '.join(sorted(fields))}")
        for b, block in enumerate(self.blocks):
            where = "space" if isinstance(self.space, dict) else f"space[{b}]"
            for key, p in block.items():
                if key == "seed":
                    errors.append(f"{where}.seed: seeds are a replicate axis: use the top-level `seeds` list")
                elif key not in fields:
                    errors.append(f"{where}.{key}: unknown parameter; valid: {', '.join(sorted(fields))}")
                elif key in self.train:
                    errors.append(f"{where}.{key}: also fixed in `train`; keep it in one place")
                else:
                    errors += [f"{where}.{key}: {m}" for m in _check_param(key, p)]
        for key, value in self.train.items():
            if key in fields:
                errors += [f"train.{key}: {m}" for m in _check_param(key, value)]
        if errors:
            raise ValueError(" | ".join(errors))
        from trainers.metrics import METRICS

        if self.objective.metric not in METRICS:
            raise ValueError(
                f"objective.metric: unknown metric {self.objective.metric!r}; valid: {', '.join(METRICS)}"
            )
        if self.search.sampler in ("grid",):
            for b, block in enumerate(self.blocks):
                for key, p in block.items():
                    if values_of(p) is None:
                        raise ValueError(f"space[{b}].{key}: the grid sampler needs finite values (grid/choice)")
        if self.search.sampler == "cmaes":
            for block in self.blocks:
                for key, p in block.items():
                    v = values_of(p)
                    if v is not None and len(v) > 1:
                        raise ValueError(
                            f"space.{key}: the cmaes sampler handles continuous parameters only; "
                            "use tpe or random for categorical ones"
                        )
        return self

    # --- derived views ----------------------------------------------------------------
    @property
    def blocks(self) -> list[dict[str, Param]]:
        return [self.space] if isinstance(self.space, dict) else list(self.space)

    @property
    def metric_mode(self) -> Direction:
        from trainers.metrics import METRICS

        return self.objective.mode or METRICS[self.objective.metric]  # type: ignore[return-value]

    @property
    def train_metrics(self) -> list[str]:
        """Metrics computed by every trial: the configured ones plus the objective."""
        from trainers.config import TrainConfig

        metrics = list(self.train.get("metrics", TrainConfig().metrics))
        if self.objective.metric not in metrics:
            metrics.insert(0, self.objective.metric)
        return metrics

    @cached_property
    def is_grid(self) -> bool:
        return self.search.sampler == "grid"

    @property
    def n_configurations(self) -> int:
        if not self.is_grid:
            return self.search.trials
        from sweeper.space import grid_points

        return len(grid_points(self))

    @property
    def n_trials(self) -> int:
        """Tune trials = configurations x seeds."""
        return self.n_configurations * len(self.seeds)

    @property
    def parameters(self) -> list[str]:
        seen: dict[str, None] = {}
        for block in self.blocks:
            seen.update(dict.fromkeys(block))
        return list(seen)


def _check_param(key: str, p: Any) -> list[str]:
    """Check a parameter's values (or range ends) against the trainer's own rules."""
    from trainers.config import ConfigError, TrainConfig

    catalogue = _catalogues().get(key)
    values = values_of(p) if isinstance(p, (Choice, Grid, Uniform, LogUniform, IntRange)) else [p]
    bounds = bounds_of(p) if isinstance(p, (Uniform, LogUniform, IntRange)) else None
    probes = values if values is not None else list(bounds or [])
    problems: list[str] = []
    for v in probes:
        if catalogue is not None:
            if v not in catalogue:
                problems.append(f"unknown {key} {v!r}; valid: {', '.join(catalogue)}")
            continue
        if key in ("metrics", "options"):
            continue
        try:
            TrainConfig(**{key: v})
        except ConfigError as e:
            problems.append(str(e))
        except TypeError as e:
            problems.append(str(e))
    if key == "n_dis" and isinstance(p, Uniform):
        problems.append("n_dis is an integer: use `int: [low, high]` or `choice`")
    return problems


def _catalogues() -> dict[str, list[str]]:
    from trainers.data import DATASETS
    from trainers.models import MODELS
    from trainers.normalizers import METHODS

    return {"normalizer": list(METHODS), "dataset": list(DATASETS), "model": list(MODELS)}


# --- loading ------------------------------------------------------------------------------
def preset_names() -> list[str]:
    root = resources.files("search_spaces")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    return resources.files("search_spaces").joinpath(f"{name}.yaml").read_text()


def resolve_source(spec: str | Path | None) -> tuple[str, str]:
    """(label, YAML text) for a path or a preset name; ``None`` means the demo preset."""
    if spec is None:
        return "preset 'demo'", preset_text("demo")
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.exists() or "/" in str(spec):
        if not path.is_file():
            raise SpecError([f"{path}: no such sweep file (or pass a preset name: {', '.join(preset_names())})"])
        try:
            return str(path), path.read_text()
        except OSError as e:
            raise SpecError([f"{path}: cannot read ({e.strerror})"]) from None
    if str(spec) in preset_names():
        return f"preset {spec!r}", preset_text(str(spec))
    raise SpecError([f"unknown preset {str(spec)!r}; valid presets: {', '.join(preset_names())} (or a .yaml path)"])


def parse(text: str, label: str) -> SweepSpec:
    """Parse and validate YAML text; every problem becomes one ``label: path: message`` line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError([f"{label}: invalid YAML{where}: {problem}"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"{label}: expected a mapping with at least `name`, got {type(data).__name__}"])
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_errors(label, e)) from None


def load(spec: str | Path | None) -> SweepSpec:
    label, text = resolve_source(spec)
    return parse(text, label)


def _format_errors(label: str, err: ValidationError) -> list[str]:
    lines: list[str] = []
    seen: set[str] = set()
    for e in err.errors():
        loc = [str(x) for x in e["loc"]]
        # pydantic reports a failed union once per member: keep the most specific message
        loc = [x for x in loc if x not in _UNION_TAGS]
        path = ".".join(loc) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        if e["type"] == "missing":
            msg = "required field is missing"
        if " | " in msg and not loc:
            for part in msg.split(" | "):
                key = f"{label}: {part}"
                if key not in seen:
                    seen.add(key)
                    lines.append(key)
            continue
        line = f"{label}: {path}: {msg}" if loc else f"{label}: {msg}"
        if path in {ln.split(": ")[1] for ln in lines if ln.count(": ") >= 2}:
            continue  # one line per field path is enough
        if line not in seen:
            seen.add(line)
            lines.append(line)
    return lines


_UNION_TAGS = {
    "Choice", "Grid", "Uniform", "LogUniform", "IntRange", "bool", "int", "float", "str",
    "dict[str,union[Choice,Grid,Uniform,LogUniform,IntRange,bool,int,float,str]]",
    "list[dict[str,union[Choice,Grid,Uniform,LogUniform,IntRange,bool,int,float,str]]]",
}  # fmt: skip


def json_schema() -> dict[str, Any]:
    return SweepSpec.model_json_schema()


def is_finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
