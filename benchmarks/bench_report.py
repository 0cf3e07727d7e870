"""End-to-end timing of :func:`sweeper.analysis.report.write_report` on a large synthetic sweep.

Why: a 10k-trial sweep with 5M curve rows is the size the service must report on without the
analysis step becoming the bottleneck (target < 30 s on a 2-core machine). The synthetic sweep
mixes the paper's grid (10 scales × 5 seeds at the default setting, c = 1 at four other optimizer
settings) with a random-search block of log-uniform scales where every scale has its own seed,
plus failed and diverged trials: the shapes that stress grouping, bootstrap and plotting.

Run: ``python -m benchmarks.bench_report``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATASETS = ("cifar10", "stl10", "celeba", "imagenet")
NORMALIZERS = ("sn", "bsn", "snconv", "none", "lecun")
# (lr_g, lr_d, beta2, n_dis): the paper's five optimizer settings, default first.
SETTINGS = (
    (1e-4, 1e-4, 0.999, 1),
    (2e-4, 2e-4, 0.999, 1),
    (1e-4, 1e-4, 0.9, 5),
    (1e-4, 2e-4, 0.999, 1),
    (2e-4, 1e-4, 0.999, 1),
)
GRID = (0.7, 0.8, 0.9, 1.0, 1.2, 1.4, 1.6, 2.0, 3.0, 4.0)
CURVE_METRICS = (
    "fid",
    "is",
    "loss_d",
    "loss_g",
    "grad_norm/total",
    "grad_norm/layer0",
    "grad_norm/layer1",
    "grad_norm/layer2",
    "sigma_w/layer0",
    "sigma_w/layer1",
)


def synthetic_trials(n_trials: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Trial-summary (v1) rows: a grid block, then log-uniform random search up to ``n_trials``."""
    rng = np.random.default_rng(seed)
    recs: list[tuple[Any, ...]] = []
    for ds in DATASETS:
        for norm in NORMALIZERS:
            for c in GRID:
                recs += [(ds, norm, c, *SETTINGS[0], s) for s in range(5)]
            for st in SETTINGS[1:]:
                recs += [(ds, norm, 1.0, *st, s) for s in range(5)]
    n_rand = max(0, n_trials - len(recs))
    ds_r = rng.choice(DATASETS, n_rand)
    norm_r = rng.choice(NORMALIZERS, n_rand)
    c_r = np.exp(rng.uniform(np.log(0.5), np.log(5.0), n_rand))
    st_r = rng.integers(0, len(SETTINGS), n_rand)
    recs += [(ds_r[i], norm_r[i], c_r[i], *SETTINGS[st_r[i]], int(rng.integers(0, 5))) for i in range(n_rand)]
    df = pd.DataFrame(
        recs[:n_trials], columns=["dataset", "normalizer", "scale", "lr_g", "lr_d", "beta2", "n_dis", "seed"]
    )
    n = len(df)
    offset = (
        df["normalizer"].map({"sn": 0.0, "bsn": -2.0, "snconv": 8.0, "none": 15.0, "lecun": 5.0}).to_numpy()
    )
    opt = np.where(df["lr_d"] > 1e-4, 1.5, 0.0) + np.where(df["n_dis"] > 1, -1.0, 0.0)
    quality = 10 * np.log(df["scale"].to_numpy() / 1.4) ** 2 + offset + opt + rng.normal(0, 0.8, n)
    status = rng.choice(["completed", "diverged", "stopped_early", "failed"], n, p=[0.93, 0.02, 0.02, 0.03])
    fid = 30 + quality + np.where(status == "diverged", 200.0, 0.0)
    fid = np.where(status == "failed", np.nan, fid)
    df.insert(0, "trial_id", [f"t{i:05d}" for i in range(n)])
    df.insert(0, "sweep", "bench")
    df["attempt"] = 0
    df["status"] = status
    df["error"] = np.where(status == "failed", "RuntimeError: CUDA error: an illegal memory access", None)
    df["model"] = df["dataset"].map(lambda d: "resnet128" if d == "imagenet" else "cnn32")
    df["beta1"] = 0.5
    df["batch_size"] = 64
    df["iterations"] = 400_000
    for m, v in (
        ("fid", fid),
        ("is", 9 - 0.1 * (fid - 30)),
        ("kid", (fid - 25) / 1000),
        ("fid_small", fid / 3),
    ):
        df[f"final_{m}"] = v
        better = -1 if m in ("fid", "kid", "fid_small") else 1
        df[f"best_{m}"] = v + better * np.abs(rng.normal(0, 0.02, n)) * np.abs(v)
        df[f"best_{m}_step"] = rng.integers(1, 40, n) * 10_000
    df["wall_seconds"] = rng.uniform(3600, 20000, n)
    df["started_at"] = "2025-01-01T00:00:00"
    df["finished_at"] = "2025-01-01T05:00:00"
    df["host"] = "node0"
    df["mlflow_run_id"] = ""
    df["config_json"] = "{}"
    # A few retries: earlier failed attempts that the latest attempt replaces.
    retry = df.sample(n=min(200, n), random_state=seed).assign(attempt=-1, status="failed")
    return pd.concat([retry, df], ignore_index=True)


def synthetic_curves(trials: pd.DataFrame, n_rows: int = 5_000_000, seed: int = 0) -> pd.DataFrame:
    """Long curves (trial_id, step, metric, value): ``n_rows`` spread over every latest trial."""
    rng = np.random.default_rng(seed)
    ids = trials.loc[trials["attempt"] >= 0, "trial_id"].to_numpy()
    n_steps = max(1, n_rows // (len(ids) * len(CURVE_METRICS)))
    steps = np.arange(n_steps, dtype=np.int64) * 1000
    per_trial = n_steps * len(CURVE_METRICS)
    total = per_trial * len(ids)
    t = np.repeat(ids, per_trial)
    metric = np.tile(np.repeat(np.array(CURVE_METRICS, dtype=object), n_steps), len(ids))
    step = np.tile(steps, len(ids) * len(CURVE_METRICS))
    value = np.exp(-step / (steps[-1] + 1)) + rng.random(total) * 0.1
    return pd.DataFrame({"trial_id": t, "step": step, "metric": metric, "value": value})


def run(n_trials: int = 10_000, n_curve_rows: int = 5_000_000, out_dir: Path | None = None) -> dict[str, Any]:
    """Build the synthetic sweep, time ``write_report`` end to end, return the figures."""
    from sweeper.analysis.report import write_report

    t0 = time.perf_counter()
    trials = synthetic_trials(n_trials)
    curves = synthetic_curves(trials, n_curve_rows)
    gen_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(out_dir) if out_dir is not None else Path(tmp)
        t1, c1 = time.perf_counter(), time.process_time()
        md = write_report(trials, curves, out, title="Benchmark sweep", primary_metric="fid")
        report_s, report_cpu = time.perf_counter() - t1, time.process_time() - c1
        figures = len(list((out / "figures").glob("*.png")))
        html_bytes = (out / "report.html").stat().st_size
        md_text = md.read_text()
    return {
        "n_trials": int((trials["attempt"] >= 0).sum()),
        "n_attempts": len(trials),
        "n_curve_rows": len(curves),
        "generate_seconds": round(gen_s, 2),
        "write_report_seconds": round(report_s, 2),
        # CPU seconds of this process: the wall figure above depends on what else the shared cores run.
        "write_report_cpu_seconds": round(report_cpu, 2),
        "figures": figures,
        "html_mb": round(html_bytes / 2**20, 2),
        "sections_failed": md_text.count("could not be generated"),
    }


if __name__ == "__main__":
    res = run()
    for k, v in res.items():
        print(f"{k:>22}: {v}")
    print(f"write_report end to end: {res['write_report_seconds']:.1f} s (target < 30 s)")
