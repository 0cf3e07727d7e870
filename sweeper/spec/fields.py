"""Sweep-file values checked against the trainer's own fields and rules.

A ``train`` value or a searched parameter is checked against the ``TrainConfig`` field's type and
the trainer's rules (``TrainConfig.validate``, the model/dataset/normalizer catalogues), so the
service can never accept a value the trainer would refuse later. Errors are collected, one per
parameter, and raised together (:func:`raise_errors`).
"""

from __future__ import annotations

import re
import types
import typing
from functools import cache
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from sweeper.spec.params import Choice, Grid, IntRange, LogUniform, Uniform, bounds_of, values_of
from sweeper.spec.text import is_finite_number, show_value, unknown


def raise_errors(errors: list[tuple[tuple, str]]) -> None:
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



@cache
def field_kinds() -> dict[str, str]:
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


def catalogues() -> dict[str, list[str]]:
    from trainers.data import DATASETS
    from trainers.models import MODELS
    from trainers.normalizers import METHODS

    return {"normalizer": list(METHODS), "dataset": list(DATASETS), "model": list(MODELS)}


def typed_value(key: str, kind: str, v: Any) -> tuple[Any, str | None]:
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
        return v, f"`{key}` must be a finite number, got {show_value(v)}{hint}"
    if kind == "int":
        if isinstance(v, int) and not isinstance(v, bool):
            return v, None
        if isinstance(v, float) and v.is_integer():
            return v, f"`{key}` must be an integer, got {show_value(v)} (write {int(v)})"
        return v, f"`{key}` must be an integer, got {show_value(v)}{hint}"
    if kind == "bool":
        return v, None if isinstance(v, bool) else f"`{key}` must be true or false, got {show_value(v)}"
    if kind == "str":
        return v, None if isinstance(v, str) else f"`{key}` must be a string, got {show_value(v)}"
    if kind == "str?":
        return v, None if v is None or isinstance(
            v, str
        ) else f"`{key}` must be a string or null, got {show_value(v)}"
    return v, None


def trainer_rule(key: str, v: Any) -> str | None:
    """The trainer's own rule for one (type-correct) value, or None if it passes."""
    from trainers.config import ConfigError, TrainConfig

    catalogue = catalogues().get(key)
    if catalogue is not None:
        return None if v in catalogue else unknown(key, v, catalogue)
    try:
        TrainConfig(**{key: v})
    except ConfigError as e:
        return str(e)
    except (TypeError, ValueError, OverflowError) as e:
        return f"`{key}`: {e}"
    return None


def check_value(key: str, value: Any) -> tuple[Any, list[str]]:
    """A fixed ``train`` value: (converted value, problems)."""
    kind = field_kinds()[key]
    if key == "metrics":
        from trainers.metrics import METRICS

        if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
            return value, [
                f"`metrics` must be a list of metric names, got {show_value(value)}; valid: {', '.join(METRICS)}"
            ]
        bad = [m for m in value if m not in METRICS]
        return value, [unknown("metric", bad, METRICS)] if bad else []
    if key == "options":
        from trainers.normalizers import OPTIONS

        if not isinstance(value, dict):
            return value, [f"`options` must be a mapping of normalizer options ({', '.join(OPTIONS)})"]
        bad = [k for k in value if k not in OPTIONS]
        return value, [unknown("normalizer option", bad, OPTIONS)] if bad else []
    if kind in ("list", "dict"):
        ok = isinstance(value, list if kind == "list" else dict)
        return value, [] if ok else [
            f"`{key}` must be a {'list' if kind == 'list' else 'mapping'}, got {show_value(value)}"
        ]
    value, problem = typed_value(key, kind, value)
    if problem:
        return value, [problem]
    if value is None:
        return value, []
    rule = trainer_rule(key, value)
    return value, [rule] if rule else []


def check_param(key: str, p: Any) -> tuple[Any, list[str]]:
    """A searched parameter: (the parameter with values converted to the field's type, problems)."""
    kind = field_kinds()[key]
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
            rule = trainer_rule(key, end)
            if rule and rule not in problems:
                problems.append(rule)
        return p, problems
    values = values_of(p) or []
    catalogue = catalogues().get(key)
    converted: list[Any] = []
    for v in values:
        v, problem = typed_value(key, kind, v)
        if problem is None and catalogue is None and v is not None:
            problem = trainer_rule(key, v)  # catalogue names are checked together below, in one line
        if problem and problem not in problems:
            problems.append(problem)
        converted.append(v)
    if catalogue is not None:
        bad = [v for v in converted if isinstance(v, str) and v not in catalogue]
        if bad:
            problems.append(unknown(key, list(dict.fromkeys(bad)), catalogue))
    if problems:
        return p, problems
    if isinstance(p, Choice):
        return Choice(choice=converted), []
    if isinstance(p, Grid):
        return Grid(grid=converted), []
    return converted[0], []
