"""How user values appear in error messages: short, YAML-flavoured, one line."""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from typing import Any


def is_finite_number(x: Any) -> bool:
    """A real number (not a bool) that is finite; huge ints that overflow a float are not."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def show_value(x: Any, limit: int = 40) -> str:
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
        keys = ", ".join(show_value(k, 20) for k in list(x)[:4]) + (", ..." if len(x) > 4 else "")
        return f"a mapping with keys {keys}" if x else "an empty mapping"
    if isinstance(x, (list, tuple)):
        if x and len(x) <= 4 and all(v is None or isinstance(v, (bool, int, float, str)) for v in x):
            return "[" + ", ".join(show_value(v, 12) for v in x) + "]"
        return f"a list of {len(x)}" if x else "an empty list"
    return f"a {type(x).__name__} value"


def key_text(k: Any) -> str:
    """A mapping key as it appears in a field path."""
    if isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", k):
        return k
    return show_value(k, 30)


def unknown(what: str, given: Any, valid: Iterable[str], *, shown: bool = True) -> str:
    """``unknown <what> 'x' (did you mean 'y'?); valid: a, b``: one wording for every catalogue.

    Why one function: a typo in a key, a preset, a normalizer, a model, a dataset, a metric or a
    sampler is the commonest user error; each deserves the nearest valid name, found the same way
    (difflib, case-insensitive), and the full list to choose from. ``given`` may be a list of
    several unknown values of the same catalogue (one message for all of them).
    """
    valid = [str(v) for v in valid]
    lowered = {v.lower(): v for v in valid}

    def one(x: Any) -> str:
        close: list[str] = []
        if isinstance(x, str) and x:
            close = difflib.get_close_matches(x.lower(), list(lowered), n=1, cutoff=0.6)
            starts = [v for v in lowered if v.startswith(x.lower())]
            close = close or (starts if len(starts) == 1 else [])  # `gpus` -> gpus_per_trial
        hint = f" (did you mean {show_value(lowered[close[0]])}?)" if close else ""
        return (f"{show_value(x)}{hint}" if shown else hint.strip()).strip()

    items = [one(x) for x in (given if isinstance(given, list) else [given])]
    names = ", ".join(i for i in items if i)
    listing = f"; valid: {', '.join(valid)}" if valid else ""
    return f"unknown {what}{' ' + names if names else ''}{listing}"
