"""A sweep with planted best scales and decoys, built with the recorder's own row function.

2 normalizers x 6 scales x 5 seeds of ``fid`` (lower is better) at one optimizer setting. The
planted best scale differs between selections (``final``: end of training; ``best``: best during
training), so there are 4 cells to get right. Decoys, each a way real sweeps go wrong:

* a **failed** trial with an excellent value (it must never count);
* **diverged** trials with null finals (the old loop did not evaluate a diverged run) but a finite
  ``best_fid``: under ``final`` they are lost seeds, under ``best`` they count, and they must stay in
  their setting although their ``steps_done`` differs;
* **retried** attempts: attempt 1 failed early with a tempting value, attempt 2 is the real run;
* **one lucky seed**: at one scale 4 of 5 seeds diverged before any evaluation and the survivor
  has the best value of the whole sweep; a scale whose mean rests on its survivors alone must not
  be best (the survivorship rule).

Every row carries every column the recorder writes (``sweeper.run.rows.summary_row``), so
bookkeeping columns (``steps_done``, times, hosts, run ids, ``config_json``) differ between rows
as in real sweeps. ``score`` uses only ``best_scales``, which the old analysis also has, so the
same check runs against older code (``python tests/planted.py --score-with OTHER_REPO``).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

SCALES = {"sn": [0.7, 1.0, 1.4, 2.0, 5.0, 10.0], "bsn": [0.7, 1.0, 1.2, 1.6, 2.4, 4.0]}
SEEDS = [0, 1, 2, 3, 4]
ITERATIONS = 1000
# Planted seed-mean FID per (normalizer, scale): end of training ("final") and best during it.
FINAL = {
    "sn": {0.7: 34.0, 1.0: 31.0, 1.4: 28.0, 2.0: 30.5, 5.0: 60.0, 10.0: 90.0},
    "bsn": {0.7: 31.0, 1.0: 26.5, 1.2: 29.0, 1.6: 30.0, 2.4: 33.0, 4.0: 40.0},
}
BEST = {
    "sn": {0.7: 31.0, 1.0: 28.5, 1.4: 26.5, 2.0: 24.0, 5.0: 45.0, 10.0: 70.0},
    "bsn": {0.7: 28.0, 1.0: 25.5, 1.2: 23.0, 1.6: 26.0, 2.4: 30.0, 4.0: 36.0},
}
PLANTED = {("sn", "final"): 1.4, ("sn", "best"): 2.0, ("bsn", "final"): 1.0, ("bsn", "best"): 1.2}
NOISE = 0.4
LUCKY = ("bsn", 4.0)  # 4 of 5 seeds diverge at step 2; seed 0 completes with FID 15 (best anywhere)
DIVERGED = {("sn", 1.4): [3], ("sn", 2.0): [1], ("sn", 5.0): [0, 1, 2], ("sn", 10.0): [0, 1, 2, 3, 4]}
"""(normalizer, scale) -> seeds that diverge at step 700 after evaluating at step 500."""
FAILED = ("sn", 10.0, 0)  # fails at step 900 right after an evaluation with FID 5
RETRIED = ("bsn", 1.0, 2)  # attempt 1 fails at step 300 with FID 12; attempt 2 is the real run


def _params(norm: str, c: float, seed: int) -> dict[str, Any]:
    from trainers.config import TrainConfig

    cfg = TrainConfig(
        dataset="cifar10", data_root="/data/cifar10", resolution=32, model="sngan_cnn", normalizer=norm,
        scale=c, seed=seed, iterations=ITERATIONS, eval_every=500, eval_samples=10_000, eval_real_samples=5_000,
        metrics=["fid"], inception_weights="/w/pt_inception-2015-12-05-6726825d.pth", device="cuda",
        divergence_threshold=float("inf"),
    )  # fmt: skip
    return {**cfg.to_dict(), "loss": cfg.resolved_loss}


def build(rng_seed: int = 0) -> pd.DataFrame:
    """The planted sweep as a table of trial rows (one per attempt)."""
    return pd.DataFrame(build_rows(rng_seed))


def build_rows(rng_seed: int = 0) -> list[dict[str, Any]]:
    """The planted sweep's rows (one per attempt), exactly as the recorder would write them."""
    from sweeper.run.rows import summary_row

    rng = np.random.default_rng(rng_seed)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = []

    def add(norm: str, c: float, seed: int, status: str, history: list[dict[str, float]], attempt: int = 1,
            error: str | None = None) -> None:  # fmt: skip
        tid = f"{norm}-c{c:g}-s{seed}"
        start = t0 + timedelta(minutes=len(rows))
        last = {"step": history[-1]["step"], "hostname": f"node{len(rows) % 3}"}
        rows.append(
            summary_row(
                sweep="planted", trial_id=tid, attempt=attempt, status=status, error=error,
                params=_params(norm, c, seed), history=history, last=last, metrics=["fid"],
                directions={"fid": "min"}, started=start, finished=start + timedelta(seconds=600 + len(rows)),
                run_id=f"run{len(rows):04d}",
            )
        )  # fmt: skip

    for norm, scales in SCALES.items():
        for c in scales:
            for seed in SEEDS:
                final = FINAL[norm][c] + rng.normal(0, NOISE)
                best = min(BEST[norm][c] + rng.normal(0, NOISE), final)
                if (norm, c) == LUCKY:
                    if seed == 0:
                        add(norm, c, seed, "completed", [{"step": 500, "fid": 15.0}, {"step": 1000, "fid": 15.0}])
                    else:
                        add(norm, c, seed, "diverged", [{"step": 2, "loss_d": 3e6, "loss_g": -1e6}])
                    continue
                if (norm, c, seed) == FAILED:
                    add(norm, c, seed, "failed", [{"step": 500, "fid": 4.0}, {"step": 900, "fid": 5.0}],
                        error="RuntimeError: CUDA error: an illegal memory access was encountered")  # fmt: skip
                    continue
                if (norm, c, seed) == RETRIED:
                    add(norm, c, seed, "failed", [{"step": 300, "fid": 12.0}], attempt=1, error="worker died")
                    add(norm, c, seed, "completed", [{"step": 500, "fid": best}, {"step": 1000, "fid": final}], 2)
                    continue
                if seed in DIVERGED.get((norm, c), []):
                    add(norm, c, seed, "diverged", [{"step": 500, "fid": best}, {"step": 700, "loss_d": np.inf}])
                    continue
                add(norm, c, seed, "completed", [{"step": 500, "fid": best}, {"step": 1000, "fid": final}])
    return rows


def counted_values(trials: pd.DataFrame, norm: str, c: float, selection: str) -> np.ndarray:
    """What the documented rule counts at one scale: latest attempts, not failed, finite values (by seed)."""
    df = trials.sort_values("attempt").groupby("trial_id").tail(1)
    sub = df[(df["normalizer"] == norm) & np.isclose(df["scale"], c) & (df["status"] != "failed")]
    v = pd.to_numeric(sub.sort_values("seed")[f"{selection}_fid"], errors="coerce").to_numpy(dtype=float)
    return v[np.isfinite(v)]


def expected(trials: pd.DataFrame) -> dict[tuple[str, str], dict[str, float]]:
    """Per cell: the planted scale, numpy's mean and s.e. (ddof 1) there, and the seed count."""
    out = {}
    for (norm, sel), c in PLANTED.items():
        v = counted_values(trials, norm, c, sel)
        out[(norm, sel)] = {"scale": c, "mean": float(np.mean(v)), "sem": float(np.std(v, ddof=1) / np.sqrt(len(v))),
                            "n": len(v)}  # fmt: skip
    return out


def score(trials: pd.DataFrame) -> dict[str, Any]:
    """Run the analysis in ``sys.path`` on ``trials``; a cell is right when the analysis reports
    exactly one best-scale row for that normalizer and selection, at the planted scale, with mean
    and s.e. equal to numpy's (to 1e-9 relative)."""
    from sweeper import analysis

    best = analysis.best_scales(trials, ["fid"], ["final", "best"], {"fid": "min"}, n_boot=200)
    want = expected(trials)
    cells = {}
    for (norm, sel), w in want.items():
        rows = best[(best["normalizer"] == norm) & (best["selection"] == sel)]
        ok = len(rows) == 1
        got: dict[str, Any] = {"rows": len(rows)}
        if len(rows):
            r = rows.sort_values("n_scales", ascending=False).iloc[0]
            got.update(scale=float(r["best_scale"]), mean=float(r["mean"]), sem=float(r["sem"]), n=int(r["n_seeds"]))
            ok &= got["scale"] == w["scale"] and bool(np.isclose(got["mean"], w["mean"], rtol=1e-9, atol=0))
            ok &= bool(np.isclose(got["sem"], w["sem"], rtol=1e-9, atol=0)) and got["n"] == w["n"]
        cells[f"{norm}/{sel}"] = {"right": bool(ok), "want": w, "got": got}
    return {"right": sum(c["right"] for c in cells.values()), "of": len(cells), "cells": cells}


if __name__ == "__main__":  # python tests/planted.py [--dump FILE] [--score FILE]
    args = sys.argv[1:]
    if args[:1] == ["--dump"]:
        build().to_pickle(args[1])
    elif args[:1] == ["--score"]:
        print(json.dumps(score(pd.read_pickle(args[1])), indent=1, default=float))
    else:
        print(json.dumps(score(build()), indent=1, default=float))
