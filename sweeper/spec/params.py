"""The parameter forms of a sweep file's ``space``: a value, ``choice``, ``grid``, ``uniform``,
``loguniform`` or ``int``.

Each form is chosen by its key (a callable discriminator), so a bad ``{uniform: [3, 2]}`` is one
error of the ``uniform`` form, not one per union member.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sweeper.spec.text import is_finite_number, show_value

Scalar = bool | int | float | str
FORMS = ("choice", "grid", "uniform", "loguniform", "int")
FORMS_TEXT = "{choice|grid|uniform|loguniform|int}"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _scalar(v: Any) -> Any:
    if isinstance(v, (bool, int, float, str)):
        return v
    raise PydanticCustomError(
        "scalar", "{message}", {"message": f"expected a number, a string or true/false, got {show_value(v)}"}
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
                {"message": f"expected `{kind}: [low, high]` with {what}, got {show_value(v)}"},
            )
        if v[0] > v[1]:
            raise PydanticCustomError(
                "range", "{message}", {"message": f"low must be <= high, got [{v[0]}, {v[1]}]"}
            )
        return v

    return BeforeValidator(check)


class Choice(Strict):
    choice: Annotated[list[ScalarValue], Field(min_length=1)]


class Grid(Strict):
    grid: Annotated[list[ScalarValue], Field(min_length=1)]


class Uniform(Strict):
    uniform: Annotated[tuple[float, float], _pair("uniform")]


class LogUniform(Strict):
    loguniform: Annotated[tuple[float, float], _pair("loguniform")]

    @field_validator("loguniform")
    @classmethod
    def _positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {v[0]}")
        return v


class IntRange(Strict):
    int: Annotated[tuple[int, int], _pair("int", need_int=True)]
    log: bool = False

    @model_validator(mode="after")
    def _log_positive(self) -> IntRange:
        if self.log and self.int[0] < 1:
            raise PydanticCustomError(
                "range", "{message}", {"message": f"`log: true` needs low >= 1, got {self.int[0]}"}
            )
        return self


FORM_MODELS: dict[str, type[Strict]] = {
    "choice": Choice, "grid": Grid, "uniform": Uniform, "loguniform": LogUniform, "int": IntRange,
}  # fmt: skip
FORM_TAGS = {f"form:{k}": m for k, m in FORM_MODELS.items()}
_MODEL_TAG = {m: t for t, m in FORM_TAGS.items()}


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
UNION_TAGS = {*FORM_TAGS, "value", "space:mapping", "space:blocks"}


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
