"""How user values appear in error messages: short, YAML-flavoured, one line."""

from __future__ import annotations

import math
import re
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
