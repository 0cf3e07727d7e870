"""What the service costs over bare training, and what evaluation costs.

    python -m benchmarks.bench_sweep [--trials 8] [--iterations 1200]

(1) Sweep efficiency: wall time of an N-trial sweep (real Ray, Optuna, MLflow in a temp SQLite
store, Parquet, the report) at concurrency = cores, over (sum of the same N bare trainings / cores).
The bare trainings are the sweep's own configurations (read back from its Parquet rows) run by
hand, as a researcher would without the service: ``cores`` plain worker processes (torch imported
once each, one thread each, exactly what each trial runs), each training timed alone. Running them
``cores`` at a time matters: two trainings on two cores share caches and memory bandwidth, so
timing them one after another on an idle machine would charge that slow-down to the service.
Target: <= 1.05. The result also splits the sweep's wall time into its phases (Ray start-up, MLflow
set-up, trials, report + final MLflow flush) so the fixed costs can be read off: for trials of T
seconds the ratio is about (fixed + rounds * (T + per-trial overhead)) / (rounds * T).

(3) Evaluation cost: the fraction of a training run spent in evaluation (sampling + metrics) and in
diagnostics, at the demo's cadence.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

DEMO_TRAIN = {
    "dataset": "blobs", "model": "sngan_cnn", "resolution": 16, "width": 0.25, "latent_dim": 32,
    "batch_size": 32, "eval_samples": 512, "metrics": ["mode_coverage", "modes_captured", "hq_fraction", "mode_kl"],
}  # fmt: skip


def _spec(n_configs: int, iterations: int, name: str) -> Any:
    from sweeper.spec import SweepSpec

    return SweepSpec.model_validate(
        {
            "name": name,
            "train": {**DEMO_TRAIN, "iterations": iterations, "eval_every": max(1, iterations // 4)},
            "space": {"normalizer": {"choice": ["none", "sn", "bsn"]}, "scale": {"loguniform": [0.5, 2.0]}},
            "seeds": [0],
            "search": {"sampler": "random", "seed": 0, "trials": n_configs},
        }
    )


def _warm_worker() -> None:
    import torch

    import trainers.loop  # noqa: F401

    torch.set_num_threads(1)


def _bare_training(cfg_json: str) -> float:
    """One training as a trial runs it, without the service; returns its wall seconds."""
    from trainers.config import TrainConfig
    from trainers.loop import Trainer

    cfg = TrainConfig.from_dict(json.loads(cfg_json))
    t = time.perf_counter()
    Trainer(cfg).run()
    return time.perf_counter() - t


def bare_trainings(configs: list[str], workers: int) -> tuple[list[float], float]:
    """The trainings ``workers`` at a time in plain processes: (each one's seconds, wall of the lot)."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_warm_worker) as pool:
        list(pool.map(time.sleep, [0.5] * workers))  # start every worker (and its imports) before timing
        t = time.perf_counter()
        each = list(pool.map(_bare_training, configs))
        return each, time.perf_counter() - t


def sweep_efficiency(n_trials: int = 8, iterations: int = 1200) -> dict[str, Any]:
    from sweeper import results
    from sweeper.tuning import Storage, run_sweep

    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="snsweep-bench-"))
    spec = _spec(n_trials, iterations, "bench-sweep")
    storage = Storage(work / "results", f"sqlite:///{work / 'mlflow.db'}", work / "mlartifacts")
    t0 = time.perf_counter()
    outcome = run_sweep(spec, storage, num_cpus=cores, progress=lambda _: None)
    sweep_wall = time.perf_counter() - t0
    rows = results.load(work / "results" / "bench-sweep").sort_values("started_at")
    bare, pool_wall = bare_trainings(list(rows["config_json"]), cores)
    ideal = sum(bare) / cores
    phases = outcome.timings
    fixed = sweep_wall - phases.get("trials", sweep_wall)
    return {
        "trials": n_trials,
        "iterations": iterations,
        "cores": cores,
        "sweep_wall_s": sweep_wall,
        "phases_s": phases,
        "bare_sum_s": sum(bare),
        "bare_mean_s": statistics.mean(bare),
        "bare_pool_wall_s": pool_wall,
        "ideal_s": ideal,
        "ratio": sweep_wall / ideal,
        "trial_phase_ratio": phases.get("trials", sweep_wall) / ideal,
        "fixed_overhead_s": fixed,
        "per_trial_overhead_s": (phases.get("trials", sweep_wall) - ideal) * cores / n_trials,
        "target": 1.05,
    }


def sweep_overhead(sizes: tuple[tuple[int, int], ...] = ((8, 240), (8, 1200))) -> dict[str, Any]:
    """``sweep_efficiency`` at demo-sized and at longer trials, and the trial length where 1.05 is reached.

    The fixed costs (Ray start-up, report) and the per-trial costs (a fresh actor process per
    concurrent slot, reporting) are read off the longest run; with ``rounds = trials / cores`` the
    ratio is (fixed + rounds * (T + per_trial)) / (rounds * T), so it reaches 1.05 at
    T = (fixed + rounds * per_trial) / (0.05 * rounds)."""
    runs = [sweep_efficiency(n, it) for n, it in sizes]
    last = runs[-1]
    rounds = last["trials"] / last["cores"]
    per_trial = max(last["per_trial_overhead_s"], 0.0)
    breakeven = (last["fixed_overhead_s"] + rounds * per_trial) / (0.05 * rounds)
    return {"runs": runs, "breakeven_trial_s": breakeven, "rounds": rounds, "target": 1.05}


def evaluation_cost(iterations: int = 240, eval_every: int = 60, repeats: int = 3) -> dict[str, Any]:
    import torch

    from trainers.config import TrainConfig
    from trainers.loop import Trainer

    torch.set_num_threads(1)
    fractions, diag_fractions = [], []
    for r in range(repeats):
        cfg = TrainConfig(**DEMO_TRAIN, iterations=iterations, eval_every=eval_every, normalizer="bsn", seed=r)
        t = Trainer(cfg)
        spent = {"eval": 0.0, "diag": 0.0}
        for name, key in (("evaluate", "eval"), ("diagnostics", "diag")):
            fn = getattr(t, name)

            def timed(fn=fn, key=key, spent=spent):
                s = time.perf_counter()
                out = fn()
                spent[key] += time.perf_counter() - s
                return out

            setattr(t, name, timed)
        s = time.perf_counter()
        t.run()
        total = time.perf_counter() - s
        fractions.append(spent["eval"] / total)
        diag_fractions.append(spent["diag"] / total)
    return {
        "iterations": iterations,
        "eval_every": eval_every,
        "eval_fraction": statistics.median(fractions),
        "diagnostics_fraction": statistics.median(diag_fractions),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--iterations", type=int, default=1200)
    a = p.parse_args()
    e = evaluation_cost()
    print(f"evaluation: {e['eval_fraction']:.1%} of training time, diagnostics {e['diagnostics_fraction']:.1%}")
    s = sweep_efficiency(a.trials, a.iterations)
    print(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()
