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
import threading
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


def _bare_training(cfg_json: str) -> tuple[float, float]:
    """One training as a trial runs it, without the service: (wall seconds, CPU seconds)."""
    from trainers.config import TrainConfig
    from trainers.loop import Trainer

    cfg = TrainConfig.from_dict(json.loads(cfg_json))
    t, c = time.perf_counter(), time.process_time()
    Trainer(cfg).run()
    return time.perf_counter() - t, time.process_time() - c


def bare_trainings(configs: list[str], workers: int) -> tuple[list[float], list[float], float]:
    """The trainings ``workers`` at a time in plain processes: (each one's wall s, each one's CPU s, total wall)."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_warm_worker) as pool:
        list(pool.map(time.sleep, [0.5] * workers))  # start every worker (and its imports) before timing
        t = time.perf_counter()
        each = list(pool.map(_bare_training, configs))
        return [w for w, _ in each], [c for _, c in each], time.perf_counter() - t


class TreeCpu:
    """CPU seconds used by this process and all its descendants (Ray's daemons and workers) while active.

    Sampled every 0.2 s, since Ray's workers may exit before the end; a process's CPU after its
    last sample is missed (under 0.2 s each, a handful of processes)."""

    def __init__(self) -> None:
        import psutil

        self._me = psutil.Process()
        self._seen: dict[int, float] = {}
        self._start = self._cpu(self._me)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _cpu(p: Any) -> float:
        t = p.cpu_times()
        return t.user + t.system

    def _sample(self) -> None:
        for p in self._me.children(recursive=True):
            try:
                self._seen[p.pid] = self._cpu(p)
            except Exception:  # noqa: BLE001, S112 - it exited between listing and reading
                continue

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()

    def __enter__(self) -> TreeCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()
        self.seconds = self._cpu(self._me) - self._start + sum(self._seen.values())


def _timed_sweep(spec: Any, work: Path, tag: str, cores: int) -> tuple[float, float, dict[str, float], Any]:
    """One sweep as ``sweeper run`` does it, with its own Ray: (wall s, CPU s of the whole tree, phases, rows)."""
    import ray

    from sweeper import results
    from sweeper.run.storage import Storage
    from sweeper.run.sweep import run_sweep

    storage = Storage(work / tag / "results", f"sqlite:///{work / tag / 'mlflow.db'}", work / tag / "mlartifacts")
    ray.shutdown()
    with TreeCpu() as cpu:
        t0 = time.perf_counter()
        outcome = run_sweep(spec, storage, num_cpus=cores, progress=lambda _: None)
        wall = time.perf_counter() - t0
    ray.shutdown()  # not timed: the CLI's exit does it after the report is written
    rows = results.load(work / tag / "results" / spec.name).sort_values("started_at")
    return wall, cpu.seconds, outcome.timings, rows


def sweep_efficiency(n_trials: int = 8, iterations: int = 1200) -> dict[str, Any]:
    """Sweep, bare trainings, the same sweep again: the mean of the two sweeps cancels a machine that
    drifts linearly in speed (these shared vCPUs drift by 10-20% over minutes)."""
    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="snsweep-bench-"))
    spec = _spec(n_trials, iterations, "bench-sweep")
    wall_a, cpu_a, phases_a, rows = _timed_sweep(spec, work, "a", cores)
    bare, bare_cpu, pool_wall = bare_trainings(list(rows["config_json"]), cores)
    wall_b, cpu_b, phases_b, rows_b = _timed_sweep(spec, work, "b", cores)
    assert sorted(rows["config_json"]) == sorted(rows_b["config_json"]), "the two sweeps trained different configs"
    sweep_wall = (wall_a + wall_b) / 2
    phases = {k: (phases_a[k] + phases_b.get(k, phases_a[k])) / 2 for k in phases_a}
    ideal = sum(bare) / cores
    trials = phases.get("trials", sweep_wall)
    return {
        "trials": n_trials,
        "iterations": iterations,
        "cores": cores,
        "sweep_walls_s": [wall_a, wall_b],
        "sweep_wall_s": sweep_wall,
        "phases_s": phases,
        "bare_sum_s": sum(bare),
        "bare_mean_s": statistics.mean(bare),
        "bare_pool_wall_s": pool_wall,
        "ideal_s": ideal,
        "ratio": sweep_wall / ideal,
        "trial_phase_ratio": trials / ideal,
        "cpu_ratio": (cpu_a + cpu_b) / 2 / sum(bare_cpu),
        "fixed_overhead_s": sweep_wall - trials,
        "per_trial_overhead_s": (trials - ideal) * cores / n_trials,
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
