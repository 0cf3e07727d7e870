"""User errors: the one exception family every command turns into ``error:`` lines and exit code 2.

Why one family: a mistake a user can fix (a bad sweep file, an unknown preset, a results dir
that is not writable, a cluster that cannot be reached) must end in one line per problem that
names the field and the fix, whichever stage finds it. Every stage raises a ``UserError``
subclass; only the CLI prints them. Anything else is a bug and is reported as one (a one-line
summary plus the path of a log with the traceback).
"""

from __future__ import annotations

import re
import unicodedata


class UserError(Exception):
    """A problem the user can fix; ``lines`` holds one message per problem (each one printed line)."""

    def __init__(self, lines: list[str] | str):
        lines = [lines] if isinstance(lines, str) else list(lines)
        self.lines = [one_line(line) for line in lines]
        super().__init__("\n".join(self.lines))


class SpecError(UserError, ValueError):
    """A problem in a sweep file (or a preset name, or the spec stored in ``sweep.json``)."""


class SweepError(UserError, RuntimeError):
    """A problem found while starting or resuming a sweep (results dir, cluster, resources)."""


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(line: str) -> str:
    """Escape control and line-separator characters so one message is one printed line."""

    def esc(m: re.Match[str]) -> str:
        c = m.group()
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    line = _UNSAFE.sub(esc, line)
    return "".join(
        c if unicodedata.category(c) not in ("Zl", "Zp", "Cs") else f"\\u{ord(c):04x}" for c in line
    )
