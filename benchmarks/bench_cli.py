"""Wall time of the commands that do not train: each should answer in well under half a second.

    python -m benchmarks.bench_cli [--repeats 5]

Each command runs as a user types it (a fresh `python -m sweeper.cli` process, in an empty folder),
``repeats`` times interleaved with the others; the table gives the median and the fastest. Python's
own start-up is measured the same way (``python -c pass``) for reference. None of these imports
torch, Ray, MLflow or Optuna (tests/test_layering.py checks it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",), ("--version",), ("presets",), ("normalizers",), ("schema",), ("status",),
    ("validate", "demo", "--no-data"), ("validate", "demo"),
)  # fmt: skip
TARGET_S = 0.5


def run(repeats: int = 5) -> dict[str, Any]:
    times: dict[str, list[float]] = {"python -c pass": []} | {" ".join(c): [] for c in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="snsweep-bench-cli-") as tmp:
        for _ in range(repeats):
            for name in times:
                argv = [sys.executable, "-c", "pass"] if name == "python -c pass" else [
                    sys.executable, "-m", "sweeper.cli", *name.split()]  # fmt: skip
                t0 = time.perf_counter()
                subprocess.run(argv, cwd=tmp, capture_output=True, check=False)
                times[name].append(time.perf_counter() - t0)
    return {
        "repeats": repeats,
        "target_s": TARGET_S,
        "commands": {k: {"median_s": statistics.median(v), "min_s": min(v)} for k, v in times.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    print(json.dumps(run(p.parse_args().repeats), indent=1))


if __name__ == "__main__":
    main()
