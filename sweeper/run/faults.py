"""Crash points for testing: ``SNSWEEP_TEST_KILL_AT=<point>`` makes the driver SIGKILL itself there.

A sweep must survive its driver dying at any moment; some moments (right after the banner,
between the Tuner's creation and its first trial, during the report) last milliseconds and
cannot be hit reliably from outside. The kill matrix (``tests/kill_matrix.py``) sets this
variable to die exactly there, the way a real SIGKILL would: no clean-up code runs.

Points: ``ray_started``, ``banner``, ``tuner``, ``report``. Unset (always, outside tests) it
costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "SNSWEEP_TEST_KILL_AT"


def point(name: str) -> None:
    if os.environ.get(ENV) == name:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
