"""Sweep files: the pydantic schema, loading, and one-line errors.

A sweep file says what to train (``train``: fixed TrainConfig fields), what to
search (``space``: per parameter a fixed value, ``choice``, ``uniform``,
``loguniform``, ``int`` or an explicit ``grid``), how (``search``, ``scheduler``),
with which replicate seeds (``seeds``) and on what resources. Everything is
checked before Ray starts; each problem becomes one line naming the file, the
field path and what is allowed (docs/SWEEP_FILES.md describes the format).

How errors stay one line per problem:

* Each parameter form is chosen by its key (a callable discriminator), so a bad
  ``{uniform: [3, 2]}`` is one error of the ``uniform`` form, not one per union member.
* Values are checked against the TrainConfig field's type and the trainer's own rules
  (``TrainConfig.validate``, the model/dataset/normalizer catalogues) in field
  validators that raise a ``ValidationError`` holding one error per parameter.
* Cross-field rules (a key in both ``train`` and ``space``, sampler limits, metrics
  that need a kind of dataset or Inception weights) run after the fields are valid.
* ``parse`` turns every error into ``label: path: message`` with control characters
  escaped, so one problem is exactly one printed line.
"""

from __future__ import annotations

import math
import re
import types
import typing
import unicodedata
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

Scalar = bool | int | float | str
FORMS = ("choice", "grid", "uniform", "loguniform", "int")
FORMS_TEXT = "{choice|grid|uniform|loguniform|int}"
MAX_NODES = 100_000
"""Values a sweep file may hold after YAML aliases are expanded (an alias bomb is refused)."""
MAX_DEPTH = 40
"""Nesting depth a sweep file may have (real ones use 5)."""
MAX_GRID_POINTS = 100_000
"""Configurations a grid (or a union of blocks) may have; the paper's largest sweep has 82."""
MAX_GRID_CHECK = 20_000
"""Grids up to this size are checked point by point for model/resolution/data_root consistency."""


class SpecError(ValueError):
    """A user-fixable problem in a sweep file; ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str]):
        lines = [_clean(line) for line in lines]
        super().__init__("\n".join(lines))
        self.lines = lines


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- small helpers -----------------------------------------------------------------------
def is_finite_number(x: Any) -> bool:
    """A real number (not a bool) that is finite; huge ints that overflow a float are not."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _show(x: Any, limit: int = 40) -> str:
    """A short, YAML-flavoured rendering of a user value for messages."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, (int, float)):
        text = repr(x)
        return text if len(text) <= limit else text[: limit - 3] + "..."
    if isinstance(x, str):
        text = repr(x)
        return text if len(text) <= limit else text[: limit - 4] + "...'"
    if isinstance(x, dict):
        keys = ", ".join(_show(k, 20) for k in list(x)[:4]) + (", ..." if len(x) > 4 else "")
        return f"a mapping with keys {keys}" if x else "an empty mapping"
    if isinstance(x, (list, tuple)):
        if x and len(x) <= 4 and all(v is None or isinstance(v, (bool, int, float, str)) for v in x):
            return "[" + ", ".join(_show(v, 12) for v in x) + "]"
        return f"a list of {len(x)}" if x else "an empty list"
    return f"a {type(x).__name__} value"


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _clean(line: str) -> str:
    """Escape control and line-separator characters so one message is one printed line."""

    def esc(m: re.Match[str]) -> str:
        c = m.group()
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    line = _UNSAFE.sub(esc, line)
    return "".join(
        c if unicodedata.category(c) not in ("Zl", "Zp", "Cs") else f"\\u{ord(c):04x}" for c in line
    )


def _key(k: Any) -> str:
    """A mapping key as it appears in a field path."""
    if isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", k):
        return k
    return _show(k, 30)


# --- parameter forms ------------------------------------------------------------------
def _scalar(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)):
        return v
    raise PydanticCustomError(
        "scalar", "{message}", {"message": f"expected a number, a string or true/false, got {_show(v)}"}
    )


ScalarValue = Annotated[Scalar, BeforeValidator(_scalar)]


def _pair(kind: str, need_int: bool = False) -> Any:
    what = "two integers" if need_int else "two finite numbers"

    def check(v: Any) -> Any:
        ok = isinstance(v, (list, tuple)) and len(v) == 2
        ok = ok and all(
            (isinstance(x, int) and not isinstance(x, bool)) if need_int else is_finite_number(x) for x in v
        )
        if not ok:
            raise PydanticCustomError(
                "range",
                "{message}",
                {"message": f"expected `{kind}: [low, high]` with {what}, got {_show(v)}"},
            )
        if v[0] > v[1]:
            raise PydanticCustomError(
                "range", "{message}", {"message": f"low must be <= high, got [{v[0]}, {v[1]}]"}
            )
        return v

    return BeforeValidator(check)


class Choice(_Strict):
    choice: Annotated[list[ScalarValue], Field(min_length=1)]


class Grid(_Strict):
    grid: Annotated[list[ScalarValue], Field(min_length=1)]


class Uniform(_Strict):
    uniform: Annotated[tuple[float, float], _pair("uniform")]


class LogUniform(_Strict):
    loguniform: Annotated[tuple[float, float], _pair("loguniform")]

    @field_validator("loguniform")
    @classmethod
    def _positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {v[0]}")
        return v


class IntRange(_Strict):
    int: Annotated[tuple[int, int], _pair("int", need_int=True)]
    log: bool = False

    @model_validator(mode="after")
    def _log_positive(self) -> IntRange:
        if self.log and self.int[0] < 1:
            raise PydanticCustomError(
                "range", "{message}", {"message": f"`log: true` needs low >= 1, got {self.int[0]}"}
            )
        return self


_FORM_MODELS: dict[str, type[_Strict]] = {
    "choice": Choice, "grid": Grid, "uniform": Uniform, "loguniform": LogUniform, "int": IntRange,
}  # fmt: skip
_FORM_TAG = {f"form:{k}": m for k, m in _FORM_MODELS.items()}
_MODEL_TAG = {m: t for t, m in _FORM_TAG.items()}


def _param_tag(v: Any) -> str | None:
    if isinstance(v, dict):
        forms = [k for k in FORMS if k in v]
        return f"form:{forms[0]}" if len(forms) == 1 else None
    if isinstance(v, BaseModel):
        return _MODEL_TAG.get(type(v))
    if isinstance(v, (bool, int, float, str)):
        return "value"
    return None


Param = Annotated[
    Annotated[Choice, Tag("form:choice")]
    | Annotated[Grid, Tag("form:grid")]
    | Annotated[Uniform, Tag("form:uniform")]
    | Annotated[LogUniform, Tag("form:loguniform")]
    | Annotated[IntRange, Tag("form:int")]
    | Annotated[ScalarValue, Tag("value")],
    Discriminator(_param_tag, custom_error_type="param_form", custom_error_message="invalid parameter form"),
]
Block = dict[str, Param]


def _space_tag(v: Any) -> str | None:
    if isinstance(v, dict):
        return "space:mapping"
    if isinstance(v, list):
        return "space:blocks"
    return None


Space = Annotated[
    Annotated[Block, Tag("space:mapping")]
    | Annotated[Annotated[list[Block], Field(min_length=1)], Tag("space:blocks")],
    Discriminator(_space_tag, custom_error_type="space_form", custom_error_message="invalid space"),
]
_TAGS = {*_FORM_TAG, "value", "space:mapping", "space:blocks"}


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
SEED_LIMIT = 2**31
"""Seeds (replicate and sampler) are in [0, 2**31): valid for torch, numpy and Optuna alike."""


class Objective(_Strict):
    metric: str = "mode_coverage"
    mode: Direction | None = None
    """Defaults to the metric's own direction."""
    selection: Selection = "final"
    """What the searcher sees: the value at the end of training, or the best during it."""

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        from trainers.metrics import METRICS

        if v not in METRICS:
            raise ValueError(f"unknown metric {_show(v)}; valid: {', '.join(METRICS)}")
        return v


class Search(_Strict):
    sampler: str = "tpe"
    seed: Annotated[int, Field(ge=0, lt=SEED_LIMIT)] = 0
    trials: Annotated[int, Field(ge=1, le=1_000_000)] = 8
    """Configurations to sample (each runs once per seed); ignored by ``grid``."""
    time_budget_s: Annotated[float, Field(gt=0)] | None = None

    @field_validator("sampler")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SAMPLERS:
            raise ValueError(f"unknown sampler {_show(v)}; valid: {', '.join(SAMPLERS)}")
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


_SECTIONS: dict[str, type[_Strict]] = {
    "objective": Objective, "search": Search, "scheduler": Scheduler, "resources": Resources,
}  # fmt: skip


class SweepSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")]
    description: str = ""
    reproduces: str = ""
    """The paper table/figure this sweep reproduces."""
    train: dict[str, Any] = Field(default_factory=dict)
    space: Space = Field(default_factory=dict)
    """One mapping (a product space) or a list of mappings (a union of grids, like the paper's configs)."""
    seeds: Annotated[list[Annotated[int, Field(ge=0, lt=SEED_LIMIT)]], Field(min_length=1)] = [0]
    objective: Objective = Objective()
    search: Search = Search()
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    allowed_failure_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    pack: Annotated[int, Field(ge=1, le=256)] = 1
    """Train this many trainings together as one vectorized model per Tune trial (trainers.packed)."""

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @field_validator("train")
    @classmethod
    def _check_train(cls, train: dict[str, Any]) -> dict[str, Any]:
        fields = _field_kinds()
        out: dict[str, Any] = {}
        errors: list[tuple[tuple, str]] = []
        for key, value in train.items():
            if key == "seed":
                errors.append(((key,), "seeds are a replicate axis: use the top-level `seeds` list"))
            elif key not in fields:
                errors.append(((key,), f"unknown config key; valid: {', '.join(sorted(fields))}"))
            else:
                value, problems = _check_value(key, value)
                if problems:
                    errors.append(((key,), "; ".join(problems)))
                out[key] = value
        _raise_if(errors)
        return out

    @field_validator("space")
    @classmethod
    def _check_space(cls, space: dict[str, Param] | list[dict[str, Param]]) -> Any:
        fields = _field_kinds()
        blocks = [space] if isinstance(space, dict) else space
        errors: list[tuple[tuple, str]] = []
        new_blocks: list[dict[str, Param]] = []
        for b, block in enumerate(blocks):
            where: tuple = () if isinstance(space, dict) else (b,)
            new: dict[str, Param] = {}
            for key, p in block.items():
                if key == "seed":
                    errors.append(
                        ((*where, key), "seeds are a replicate axis: use the top-level `seeds` list")
                    )
                elif key not in fields:
                    errors.append(((*where, key), f"unknown parameter; valid: {', '.join(sorted(fields))}"))
                else:
                    p, problems = _check_param(key, p)
                    if problems:
                        errors.append(((*where, key), "; ".join(problems)))
                    new[key] = p
            new_blocks.append(new)
        _raise_if(errors)
        return new_blocks[0] if isinstance(space, dict) else new_blocks

    @model_validator(mode="after")
    def _check_semantics(self) -> SweepSpec:
        errors: list[tuple[tuple, str]] = []
        multi = not isinstance(self.space, dict)
        for b, block in enumerate(self.blocks):
            where: tuple = ("space", b) if multi else ("space",)
            for key, p in block.items():
                if key in self.train:
                    errors.append(((*where, key), "also fixed in `train`; keep it in one place"))
                finite = values_of(p)
                if self.search.sampler == "grid" and finite is None:
                    errors.append(
                        ((*where, key), "the grid sampler needs finite values (a value, choice or grid)")
                    )
                elif multi and len(self.blocks) > 1 and finite is None:
                    errors.append(
                        (
                            (*where, key),
                            "a union of blocks needs finite values (a value, choice or grid) in every block",
                        )
                    )
                if self.search.sampler == "cmaes" and finite is not None and len(set(map(repr, finite))) > 1:
                    errors.append(
                        ((*where, key), "the cmaes sampler handles continuous parameters only "
                                        "(uniform, loguniform, int); use tpe or random for categorical ones")
                    )  # fmt: skip
        if len(self.blocks) > 1 and self.search.sampler != "grid":
            errors.append(
                (("search", "sampler"), "a union of blocks (`space` as a list) runs every point: "
                                        f"use `grid`, not {self.search.sampler!r} "
                                        "(it would mix values across blocks)")
            )  # fmt: skip
        if self.pack > 1:
            if self.scheduler.type != "fifo":
                errors.append((("pack",), "packed trials run to the end together: use `scheduler: {type: fifo}`"))
            if self.resources.workers > 1:
                errors.append((("pack",), "a pack is one process: use `resources.workers: 1`"))
        errors += self._metric_problems()
        errors += self._device_problems()
        if not errors:
            errors += self._point_problems()
        _raise_if(errors)
        return self

    def _values(self, key: str) -> list[Any]:
        """Every value ``key`` takes anywhere in this sweep (train, blocks, else the default)."""
        from trainers.config import TrainConfig

        if key in self.train:
            return [self.train[key]]
        out: list[Any] = []
        for block in self.blocks:
            vals = values_of(block[key]) if key in block else [getattr(TrainConfig(), key)]
            out += [v for v in (vals or []) if v not in out]
        return out

    def _metric_problems(self) -> list[tuple[tuple, str]]:
        from trainers.data import PROCEDURAL
        from trainers.metrics import IMAGE_METRICS, MODE_METRICS

        errors: list[tuple[tuple, str]] = []
        datasets = [d for d in self._values("dataset") if isinstance(d, str)]
        metrics = self.train_metrics
        where = ("train", "metrics") if "metrics" in self.train else ("objective", "metric")
        image_data = [d for d in datasets if d not in PROCEDURAL]
        modes = [m for m in metrics if m in MODE_METRICS]
        if modes and image_data:
            errors.append(
                (where, f"{', '.join(modes)} need a dataset with known modes (blobs, ring, grid), not "
                        f"{', '.join(map(repr, image_data))}; use fid/is (Inception) or fid_small/is_small")
            )  # fmt: skip
        toy = [d for d in datasets if d in ("ring", "grid")]
        images = [m for m in metrics if m in IMAGE_METRICS]
        if images and toy:
            errors.append(
                (where, f"{', '.join(images)} need image data, not the 2D toy {', '.join(map(repr, toy))}; "
                        "use mode metrics (mode_coverage, modes_captured, hq_fraction, mode_kl)")
            )  # fmt: skip
        inception = [m for m in metrics if m in ("fid", "kid", "is")]
        if inception and "inception_weights" in _field_kinds() and not any(self._values("inception_weights")):
            errors.append(
                (("train", "inception_weights"), f"metrics {', '.join(inception)} use the real Inception "
                 "network: set `inception_weights` to a local pt_inception-2015-12-05-6726825d.pth "
                 "(never downloaded), or use fid_small/is_small")
            )  # fmt: skip
        return errors

    def _device_problems(self) -> list[tuple[tuple, str]]:
        devices = [d for d in self._values("device") if isinstance(d, str)]
        if any(d.startswith("cuda") for d in devices) and self.resources.gpus_per_trial == 0:
            return [
                (("resources", "gpus_per_trial"), "must be > 0 when `device` is cuda: Ray hides GPUs from "
                 "trials that do not request one")
            ]  # fmt: skip
        return []

    def _grid_size(self) -> int:
        """Configurations of the finite blocks before de-duplication (no points are built)."""
        total = 0
        for block in self.blocks:
            size = 1
            for p in block.values():
                size *= len(values_of(p) or [])
            total += size
        return total

    def _point_problems(self) -> list[tuple[tuple, str]]:
        """Grid size, model/resolution and dataset/data_root consistency of every finite configuration."""
        if any(values_of(p) is None for block in self.blocks for p in block.values()):
            return []
        size = self._grid_size()
        if size > MAX_GRID_POINTS:
            if not self.is_grid and len(self.blocks) == 1:
                return []  # sampled: only `search.trials` points are drawn
            return [(("space",), f"the grid has {size:,} configurations (more than {MAX_GRID_POINTS:,}); "
                                 "sample it with tpe/random and `search.trials`")]  # fmt: skip
        if size > MAX_GRID_CHECK:
            return []  # too many to check one by one; the trials report such problems themselves
        from sweeper.space import grid_points
        from trainers.config import TrainConfig
        from trainers.data import IMAGE_DATASETS

        base = TrainConfig()
        where = ("space",) if any(self.blocks) else ("train",)
        seen: dict[tuple[tuple, str], None] = {}
        for point in grid_points(self):
            cfg = {**self.train, **point}

            def get(k: str, cfg: dict[str, Any] = cfg) -> Any:
                return cfg.get(k, getattr(base, k))

            def at(*keys: str) -> tuple:
                return where if any(k in self.parameters for k in keys) else ("train", keys[0])

            model, res, dataset = get("model"), get("resolution"), get("dataset")
            if model == "sngan_cnn" and isinstance(res, int) and res % 8:
                msg = (
                    f"resolution {res} with model sngan_cnn: must be a multiple of 8 (32/48/64 in the paper)"
                )
                seen[(at("resolution", "model"), msg)] = None
            if model == "sngan_resnet" and isinstance(res, int) and (res < 8 or res & (res - 1)):
                msg = (
                    f"resolution {res} with model sngan_resnet: must be a power of two >= 8 (the paper: 128)"
                )
                seen[(at("resolution", "model"), msg)] = None
            if dataset in IMAGE_DATASETS and not get("data_root"):
                msg = f"dataset {dataset!r} needs `data_root` (a local folder; nothing is downloaded)"
                seen[(at("dataset"), msg)] = None
        return list(seen)

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
    def n_tune_trials(self) -> int:
        """Tune trials: one per training, or one per pack of ``pack`` trainings."""
        return -(-self.n_trials // self.pack)

    @property
    def n_iterations(self) -> int:
        """Total training iterations of the sweep (each trial's ``iterations``, summed over trials).

        Exact for grids, where ``iterations`` may differ per block; for sampled sweeps
        it assumes the largest value ``iterations`` can take.
        """
        from trainers.config import TrainConfig

        default = TrainConfig().iterations
        fixed = self.train.get("iterations")
        if self.is_grid:
            from sweeper.space import grid_points

            per_seed = sum(int(pt.get("iterations", fixed or default)) for pt in grid_points(self))
            return per_seed * len(self.seeds)
        tops: list[Any] = [fixed] if fixed is not None else []
        for block in self.blocks if fixed is None else []:
            p = block.get("iterations", default)
            tops += [bounds_of(p)[1]] if bounds_of(p) else values_of(p) or []  # type: ignore[index]
        return int(max(tops, default=default)) * self.n_trials

    @property
    def parameters(self) -> list[str]:
        seen: dict[str, None] = {}
        for block in self.blocks:
            seen.update(dict.fromkeys(block))
        return list(seen)


def _raise_if(errors: list[tuple[tuple, str]]) -> None:
    """Raise one ValidationError holding one error per (location, message)."""
    if errors:
        raise ValidationError.from_exception_data(
            "SweepSpec",
            [
                InitErrorDetails(
                    type=PydanticCustomError("sweep_spec", "{message}", {"message": m}), loc=loc, input=None
                )
                for loc, m in errors
            ],
        )


# --- values against the trainer's fields ------------------------------------------------
@cache
def _field_kinds() -> dict[str, str]:
    """TrainConfig field -> float | int | bool | str | str? | list | dict | any."""
    from trainers.config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    out: dict[str, str] = {}
    for name in TrainConfig.field_names():
        tp = hints.get(name, Any)
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (typing.Union, types.UnionType) and type(None) in args:
            rest = [a for a in args if a is not type(None)]
            out[name] = "str?" if rest == [str] else "any"
        elif tp in (float, int, bool, str):
            out[name] = tp.__name__
        elif tp is list or origin is list:
            out[name] = "list"
        elif tp is dict or origin is dict:
            out[name] = "dict"
        else:
            out[name] = "any"
    return out


def _catalogues() -> dict[str, list[str]]:
    from trainers.data import DATASETS
    from trainers.models import MODELS
    from trainers.normalizers import METHODS

    return {"normalizer": list(METHODS), "dataset": list(DATASETS), "model": list(MODELS)}


def _typed(key: str, kind: str, v: Any) -> tuple[Any, str | None]:
    """(the value converted to the field's type, or a problem)."""
    hint = ""
    if (
        isinstance(v, str)
        and kind in ("float", "int")
        and re.fullmatch(r"\s*[-+]?[\d.]+([eE][-+]?\d+)?\s*", v)
    ):
        hint = " (remove the quotes)"
    if kind == "float":
        if is_finite_number(v):
            return float(v), None
        return v, f"`{key}` must be a finite number, got {_show(v)}{hint}"
    if kind == "int":
        if isinstance(v, int) and not isinstance(v, bool):
            return v, None
        if isinstance(v, float) and v.is_integer():
            return v, f"`{key}` must be an integer, got {_show(v)} (write {int(v)})"
        return v, f"`{key}` must be an integer, got {_show(v)}{hint}"
    if kind == "bool":
        return v, None if isinstance(v, bool) else f"`{key}` must be true or false, got {_show(v)}"
    if kind == "str":
        return v, None if isinstance(v, str) else f"`{key}` must be a string, got {_show(v)}"
    if kind == "str?":
        return v, None if v is None or isinstance(
            v, str
        ) else f"`{key}` must be a string or null, got {_show(v)}"
    return v, None


def _rule(key: str, v: Any) -> str | None:
    """The trainer's own rule for one (type-correct) value, or None if it passes."""
    from trainers.config import ConfigError, TrainConfig

    catalogue = _catalogues().get(key)
    if catalogue is not None:
        return None if v in catalogue else f"unknown {key} {_show(v)}; valid: {', '.join(catalogue)}"
    try:
        TrainConfig(**{key: v})
    except ConfigError as e:
        return str(e)
    except (TypeError, ValueError, OverflowError) as e:
        return f"`{key}`: {e}"
    return None


def _check_value(key: str, value: Any) -> tuple[Any, list[str]]:
    """A fixed ``train`` value: (converted value, problems)."""
    kind = _field_kinds()[key]
    if key == "metrics":
        from trainers.metrics import METRICS

        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            return value, [
                f"`metrics` must be a list of metric names, got {_show(value)}; valid: {', '.join(METRICS)}"
            ]
        bad = [m for m in value if m not in METRICS]
        return value, [
            f"unknown metric(s) {', '.join(map(_show, bad))}; valid: {', '.join(METRICS)}"
        ] if bad else []
    if key == "options":
        from trainers.normalizers import OPTIONS

        if not isinstance(value, dict):
            return value, [f"`options` must be a mapping of normalizer options ({', '.join(OPTIONS)})"]
        bad = [k for k in value if k not in OPTIONS]
        return value, [
            f"unknown normalizer option(s) {', '.join(map(_show, bad))}; valid: {', '.join(OPTIONS)}"
        ] if bad else []
    if kind in ("list", "dict"):
        ok = isinstance(value, list if kind == "list" else dict)
        return value, [] if ok else [
            f"`{key}` must be a {'list' if kind == 'list' else 'mapping'}, got {_show(value)}"
        ]
    value, problem = _typed(key, kind, value)
    if problem:
        return value, [problem]
    if value is None:
        return value, []
    rule = _rule(key, value)
    return value, [rule] if rule else []


def _check_param(key: str, p: Any) -> tuple[Any, list[str]]:
    """A searched parameter: (the parameter with values converted to the field's type, problems)."""
    kind = _field_kinds()[key]
    if kind in ("list", "dict"):
        return p, [
            f"`{key}` is a {'list' if kind == 'list' else 'mapping'} and cannot be searched; "
            "set it in `train`"
        ]
    if isinstance(p, (Uniform, LogUniform)) and kind == "int":
        return p, [f"`{key}` is an integer: use `int: [low, high]`, `choice` or `grid`"]
    if isinstance(p, (Uniform, LogUniform, IntRange)) and kind not in ("float", "int"):
        return p, [
            f"`{key}` takes {'true/false' if kind == 'bool' else 'names'}, not a range: "
            "use `choice` or `grid`"
        ]
    problems: list[str] = []
    bounds = bounds_of(p)
    if bounds is not None:
        for end in bounds:
            rule = _rule(key, end)
            if rule and rule not in problems:
                problems.append(rule)
        return p, problems
    values = values_of(p) or []
    converted: list[Any] = []
    for v in values:
        v, problem = _typed(key, kind, v)
        problem = problem or (_rule(key, v) if v is not None else None)
        if problem and problem not in problems:
            problems.append(problem)
        converted.append(v)
    if problems:
        return p, problems
    if isinstance(p, Choice):
        return Choice(choice=converted), []
    if isinstance(p, Grid):
        return Grid(grid=converted), []
    return converted[0], []


# --- loading ------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.2) and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {_show(key)} (first at line {first + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def preset_names() -> list[str]:
    root = resources.files("search_spaces")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    return resources.files("search_spaces").joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SpecError([f"{path}: cannot read ({e.strerror or e})"]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(
            [f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save it as UTF-8"]
        ) from None


def resolve_source(spec: str | Path | None) -> tuple[str, str]:
    """(label, YAML text) for a path or a preset name; ``None`` means the demo preset."""
    if spec is None:
        return "preset 'demo'", preset_text("demo")
    text = str(spec)
    if text in preset_names() and not Path(text).exists():
        return f"preset {text!r}", preset_text(text)
    try:
        path = Path(spec)
        looks_like_path = path.suffix in (".yaml", ".yml") or "/" in text or path.exists()
        is_file = path.is_file()
    except (OSError, ValueError):
        raise SpecError([f"{_show(text)}: not a readable path or a preset name"]) from None
    if looks_like_path:
        if not is_file:
            what = "a folder, not a sweep file" if path.is_dir() else "no such sweep file"
            raise SpecError([f"{path}: {what} (or pass a preset name: {', '.join(preset_names())})"])
        return str(path), _read(path)
    raise SpecError(
        [f"unknown preset {_show(text)}; valid presets: {', '.join(preset_names())} (or a .yaml path)"]
    )


def _shape_problem(data: Any) -> str | None:
    """Refuse absurd nesting or size (YAML alias bombs) before pydantic walks it."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    nodes = 0
    while stack:
        x, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"too large: more than {MAX_NODES:,} values (after expanding YAML aliases)"
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep; a sweep file needs about 5"
        if isinstance(x, dict):
            stack += [(k, depth + 1) for k in x] + [(v, depth + 1) for v in x.values()]
        elif isinstance(x, (list, tuple, set)):
            stack += [(v, depth + 1) for v in x]
    return None


def parse(text: str, label: str) -> SweepSpec:
    """Parse and validate YAML text; every problem becomes one ``label: path: message`` line."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.reader.ReaderError as e:
        char = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "?")
        raise SpecError(
            [f"{label}: invalid YAML at character {e.position + 1}: unacceptable character #x{char:04x} "
             "(control characters must be written as escapes inside double quotes)"]
        ) from None  # fmt: skip
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or (str(e).splitlines() or ["unreadable"])[0]
        raise SpecError([f"{label}: invalid YAML{where}: {problem}"]) from None
    except RecursionError:
        raise SpecError([f"{label}: invalid YAML: nested too deeply"]) from None
    if data is None:
        raise SpecError([f"{label}: the file is empty; a sweep file is a YAML mapping with at least `name`"])
    return from_data(data, label)


def from_data(data: Any, label: str) -> SweepSpec:
    """Validate an already-parsed mapping (e.g. the spec stored in ``sweep.json`` for ``resume``).

    Raises SpecError with one ``label: path: message`` line per problem, like ``parse``.
    """
    if not isinstance(data, dict):
        raise SpecError([f"{label}: expected a YAML mapping with at least `name`, got {_show(data)}"])
    problem = _shape_problem(data)
    if problem:
        raise SpecError([f"{label}: {problem}"])
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_errors(label, e, order=list(data))) from None
    except RecursionError:
        raise SpecError([f"{label}: nested too deeply"]) from None


def load(spec: str | Path | None) -> SweepSpec:
    label, text = resolve_source(spec)
    return parse(text, label)


# --- error messages -----------------------------------------------------------------------
def _path(loc: list[Any]) -> str:
    out = ""
    for x in loc:
        out += f"[{x}]" if isinstance(x, int) and not isinstance(x, bool) else ("." if out else "") + _key(x)
    return out


def _valid_keys(raw: tuple) -> list[str]:
    """The keys allowed where an unknown key ``raw[-1]`` was found."""
    parent = raw[:-1]
    for x in reversed(parent):
        if x in _FORM_TAG:
            return list(_FORM_TAG[x].model_fields)
    if not parent:
        return list(SweepSpec.model_fields)
    if len(parent) == 1 and parent[0] in _SECTIONS:
        return list(_SECTIONS[parent[0]].model_fields)
    return []


def _message(e: dict[str, Any]) -> str:
    kind, raw, given = e["type"], e["loc"], e.get("input")
    if kind == "extra_forbidden":
        valid = _valid_keys(raw)
        return "unknown key" + (f"; valid: {', '.join(valid)}" if valid else "")
    if kind == "missing":
        return "required field is missing"
    if kind == "param_form":
        if isinstance(given, dict) and sum(k in given for k in FORMS) > 1:
            both = " and ".join(k for k in FORMS if k in given)
            return f"expected one of {FORMS_TEXT}, got both {both}"
        extra = " (write `{choice: [...]}` or `{grid: [...]}`)" if isinstance(given, list) else ""
        return f"expected a value or one of {FORMS_TEXT}: got {_show(given)}{extra}"
    if kind == "space_form":
        return (
            f"expected a mapping of parameters, or a list of mappings (a union of grids), got {_show(given)}"
        )
    if "[key]" in raw:
        return f"keys must be strings, got {_show(given)}"
    msg = e["msg"].removeprefix("Value error, ")
    if kind in ("sweep_spec", "scalar", "range", "value_error"):
        return msg
    if kind == "too_short":
        n = (e.get("ctx") or {}).get("min_length", 1)
        return f"needs at least {n} item{'s' if n != 1 else ''}, got {_show(given)}"
    if kind == "string_pattern_mismatch":
        rule = "1-80 letters, digits, '_', '.' or '-', starting with a letter or digit"
        return f"must be {rule}, got {_show(given)}"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}, got {_show(given)}"
    msg = msg.replace("Input should be ", "must be ")
    return f"{msg}, got {_show(given)}" if "got" not in msg else msg


_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "list_type": "a list", "tuple_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}  # fmt: skip


def _format_errors(label: str, err: ValidationError, order: list[Any] | None = None) -> list[str]:
    """One line per problem: ``label: path: message``, in the file's order of top-level keys.

    Pydantic's union tags are removed from paths; ``order`` (the file's top-level keys)
    sorts the lines, since pydantic lists unknown keys after every known field.
    """
    rank = {k: i for i, k in enumerate(order or []) if isinstance(k, (str, int))}
    errors = sorted(err.errors(), key=lambda e: rank.get(e["loc"][0], len(rank)) if e["loc"] else -1)
    lines: list[str] = []
    for e in errors:
        loc = [x for x in e["loc"] if x not in _TAGS and x != "[key]"]
        path = _path(loc)
        line = _clean(f"{label}: {path}: {_message(e)}" if path else f"{label}: {_message(e)}")
        if line not in lines:
            lines.append(line)
    return lines


def json_schema() -> dict[str, Any]:
    return SweepSpec.model_json_schema()
