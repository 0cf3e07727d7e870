"""What the service costs over bare training, and what evaluation costs.

    python -m benchmarks.bench_sweep [--trials 8] [--iterations 150]

(1) Sweep efficiency: wall time of an N-trial sweep (real Ray, Optuna, MLflow in a temp SQLite
store, Parquet) at concurrency = cores, over (sum of the same N bare trainings / cores). The bare
trainings are run first, one after another, with the same configurations and one thread each,
exactly what each trial runs. Target: <= 1.05.

(3) Evaluation cost: the fraction of a training run spent in evaluation (sampling + metrics) and in
diagnostics, at the demo's cadence.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
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


def sweep_efficiency(n_trials: int = 8, iterations: int = 400) -> dict[str, Any]:
    from sweeper import results
    from sweeper.tuning import Storage, run_sweep
    from trainers.config import TrainConfig
    from trainers.loop import Trainer

    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="snsweep-bench-"))
    spec = _spec(n_trials, iterations, "bench-sweep")
    storage = Storage(work / "results", f"sqlite:///{work / 'mlflow.db'}", work / "mlartifacts")
    t0 = time.perf_counter()
    run_sweep(spec, storage, num_cpus=cores, progress=lambda _: None)
    sweep_wall = time.perf_counter() - t0
    rows = results.load(work / "results" / "bench-sweep")
    # The trial phase: first trial start to last trial end, without Ray start-up, the MLflow store's
    # creation and the report (fixed costs that a long sweep amortises).
    trial_phase = (rows["finished_at"].max() - rows["started_at"].min()).total_seconds()
    bare = []
    for cfg_json in rows["config_json"]:
        cfg = TrainConfig.from_dict(json.loads(cfg_json))
        t = time.perf_counter()
        Trainer(cfg).run()
        bare.append(time.perf_counter() - t)
    ideal = sum(bare) / cores
    return {
        "trials": n_trials,
        "iterations": iterations,
        "cores": cores,
        "sweep_wall_s": sweep_wall,
        "bare_sum_s": sum(bare),
        "ideal_s": ideal,
        "ratio": sweep_wall / ideal,
        "trial_phase_s": trial_phase,
        "trial_phase_ratio": trial_phase / ideal,
        "fixed_overhead_s": sweep_wall - trial_phase,
        "target": 1.05,
    }


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
    p.add_argument("--iterations", type=int, default=400)
    a = p.parse_args()
    e = evaluation_cost()
    print(f"evaluation: {e['eval_fraction']:.1%} of training time, diagnostics {e['diagnostics_fraction']:.1%}")
    s = sweep_efficiency(a.trials, a.iterations)
    print(
        f"sweep of {s['trials']} trials on {s['cores']} cores: {s['sweep_wall_s']:.1f} s vs ideal "
        f"{s['ideal_s']:.1f} s (bare sum {s['bare_sum_s']:.1f} s / {s['cores']}): ratio {s['ratio']:.3f} "
        f"(target <= {s['target']})"
    )


if __name__ == "__main__":
    main()
