"""The demo as a user meets it: wall time of `sweeper run` (no argument), and what its metric looks like.

    python -m benchmarks.bench_demo

Runs the real command in a fresh process and a fresh folder (local Ray, MLflow SQLite, Parquet, the
report), exactly README's first command minus the install, and reads the results back:

- wall time (target <= 5 minutes on 2 cores) and where it went, as `sweeper run` prints it;
- the distribution of the objective over the grid: share of exact zeros (a mostly-zero metric
  measures luck, not normalizers), and per normalizer the spread *across scales* (SD of the
  per-scale means) against the spread *across seeds* (pooled SD within a scale): a scale that
  matters shows a spread across scales well above the seed noise;
- the report's headline, verbatim.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_S = 300.0


def run(preset: str = "demo") -> dict[str, Any]:
    import numpy as np

    from sweeper import results
    from sweeper import spec as specmod
    from sweeper.analysis.headline import report_headline_lines

    spec = specmod.load(preset)
    metric = spec.objective.metric
    with tempfile.TemporaryDirectory(prefix="snsweep-bench-demo-") as tmp:
        work = Path(tmp)
        env = {**os.environ, "HOME": str(work / "home"), "RAY_USAGE_STATS_ENABLED": "0",
               "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "sweeper.cli", "run", preset], cwd=work, env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"sweeper run {preset} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        rows = results.latest_attempts(results.load(work / "results" / preset))
        headline = report_headline_lines(work / "results" / preset / "report")
        finished_line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(f"sweep {preset} finished")), "")
    values = rows[f"final_{metric}"].astype(float)
    spread: dict[str, dict[str, float]] = {}
    for norm, sub in rows.groupby("normalizer"):
        by_scale = sub.groupby("scale")[f"final_{metric}"]
        means = by_scale.mean()
        within = by_scale.var(ddof=1).dropna()
        spread[str(norm)] = {
            "scales": int(len(means)),
            "across_scales_sd": float(means.std(ddof=1)) if len(means) > 1 else math.nan,
            "across_seeds_sd": float(np.sqrt(within.mean())) if len(within) else math.nan,
            "min_scale_mean": float(means.min()),
            "max_scale_mean": float(means.max()),
        }
    return {
        "preset": preset,
        "trainings": int(len(rows)),
        "wall_s": wall,
        "target_s": TARGET_S,
        "finished_line": finished_line,
        "metric": metric,
        "share_exact_zero": float((values == 0).mean()),
        "quantiles": {q: float(values.quantile(q)) for q in (0.0, 0.25, 0.5, 0.75, 1.0)},
        "spread": spread,
        "headline": headline,
    }


def main() -> None:
    print(json.dumps(run(), indent=1))


if __name__ == "__main__":
    main()
