"""Search efficiency: how close TPE + ASHA gets to the full grid's best, for what share of its compute.

    python -m benchmarks.bench_search [--replays 30]

The problem is the demo's (16 px blobs, the SNGAN CNN at 1/4 width, 240 iterations evaluated every 60,
mode_coverage, one seed) with normalizer x scale x lr_d on a 36-point grid. Compute = generator
iterations actually trained (``steps_done`` summed over trials). Target: TPE+ASHA's best within 2% of
the grid's best with at most a third of the grid's compute.

Two measurements:

1. The service for real: the grid as one sweep (every point to the end), then TPE (seeded) + ASHA
   as another sweep over the same finite space with a third as many configurations; ASHA stops the
   weak ones early, so it spends at most a third of the grid's compute. One run of a noisy problem.
2. Replays, for a distribution instead of one draw: training here is deterministic (CPU, one
   thread, seeded), so a configuration's evaluation curve is the same every time it runs, and the
   grid sweep has recorded every configuration's curve. Optuna's TPESampler (the sampler the service
   uses, same settings) + Optuna's SuccessiveHalvingPruner (asynchronous successive halving with the
   service's grace period and reduction factor) search that table once per sampler seed, on to the
   grid's whole compute; the target is read at a third of it. Random search (with and without
   ASHA) replays as the baseline. Each replay is a real Optuna study whose objective reads the
   recorded curves instead of retraining: it differs from a live sweep only in that trials
   complete one at a time.

The result: the median gap, the share of seeds that land within 2%, and the median best-so-far
against the share of the grid's compute spent (the "best metric vs trials" curve).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

TRAIN = {
    "dataset": "blobs", "model": "sngan_cnn", "resolution": 16, "width": 0.25, "latent_dim": 32,
    "batch_size": 32, "iterations": 240, "eval_every": 60, "eval_samples": 512, "metrics": ["mode_coverage"],
    "diagnostics": False, "lr_g": 5.0e-4,
}  # fmt: skip
GRID = {
    "normalizer": {"grid": ["none", "sn", "bsn"]},
    "scale": {"grid": [0.5, 0.7, 1.0, 1.4, 2.0, 2.8]},
    "lr_d": {"grid": [2.0e-4, 1.0e-3]},
}
METRIC = "mode_coverage"
GRACE_PERIOD, REDUCTION_FACTOR = 2, 3  # evaluations; the same for the live sweep and the replays
TARGET_GAP, TARGET_COMPUTE = 0.02, 1 / 3
FRACTIONS = (0.1, 0.2, 1 / 3, 0.5, 1.0)  # of the grid's compute, for the best-so-far curve


def _run(spec_data: dict[str, Any], work: Path) -> tuple[Any, Any]:
    from sweeper import results
    from sweeper.run.storage import Storage
    from sweeper.run.sweep import run_sweep
    from sweeper.spec import SweepSpec

    spec = SweepSpec.model_validate(spec_data)
    run_sweep(spec, Storage(work / "results", None, work / "art"), progress=lambda _: None)
    path = work / "results" / spec.name
    return results.latest_attempts(results.load(path)), results.load_curves(path)


def curve_table(rows: Any, curves: Any) -> dict[tuple, list[tuple[int, float]]]:
    """(normalizer, scale, lr_d) -> [(step, mode_coverage)] of the grid's runs, in step order."""
    mine = curves[curves["metric"] == METRIC]
    table: dict[tuple, list[tuple[int, float]]] = {}
    for r in rows.itertuples():
        c = mine[mine["trial_id"] == r.trial_id].sort_values("step")
        table[(r.normalizer, float(r.scale), float(r.lr_d))] = list(zip(c["step"].astype(int), c["value"], strict=True))
    return table


def replay(
    table: dict[tuple, list[tuple[int, float]]], budget: int, sampler: str, seed: int, prune: bool, n_configs: int
) -> list[tuple[int, float]]:
    """One search over the recorded curves: [(compute so far, best final so far)] after each trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    startup = max(2, min(10, n_configs // 2))  # as sweeper.run.search.make_searcher
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    pruner = (
        optuna.pruners.SuccessiveHalvingPruner(min_resource=GRACE_PERIOD, reduction_factor=REDUCTION_FACTOR)
        if prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(direction="maximize", sampler=samplers[sampler](), pruner=pruner)
    space = {
        "normalizer": optuna.distributions.CategoricalDistribution(GRID["normalizer"]["grid"]),
        "scale": optuna.distributions.CategoricalDistribution(GRID["scale"]["grid"]),
        "lr_d": optuna.distributions.CategoricalDistribution(GRID["lr_d"]["grid"]),
    }
    used, best, trace = 0, float("-inf"), []
    while used < budget:
        trial = study.ask(space)
        curve = table[(trial.params["normalizer"], float(trial.params["scale"]), float(trial.params["lr_d"]))]
        pruned = False
        for i, (step, value) in enumerate(curve, start=1):  # i = evaluation count, Tune's training_iteration
            trial.report(value, i)
            if i < len(curve) and trial.should_prune():
                used += step
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned = True
                break
        if not pruned:
            used += curve[-1][0]
            study.tell(trial, curve[-1][1])
            best = max(best, curve[-1][1])
        trace.append((used, best))
    return trace


def _best_at(trace: list[tuple[int, float]], compute: float) -> float:
    """Best final value reached within ``compute`` iterations (-inf when no trial finished by then)."""
    reached = [b for used, b in trace if used <= compute]
    return reached[-1] if reached else float("-inf")


def run(replays: int = 30) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="snsweep-bench-search-"))
    base = {"train": TRAIN, "seeds": [0], "objective": {"metric": METRIC}}
    grid, grid_curves = _run({**base, "name": "grid", "space": GRID, "search": {"sampler": "grid"}}, work)
    n_grid = len(grid)
    choice = {k: {"choice": v["grid"]} for k, v in GRID.items()}
    tpe, _ = _run(
        {**base, "name": "tpe", "space": choice, "search": {"sampler": "tpe", "seed": 0, "trials": n_grid // 3},
         "scheduler": {"type": "asha", "grace_period": GRACE_PERIOD, "reduction_factor": REDUCTION_FACTOR}},
        work,
    )  # fmt: skip
    best_grid = float(grid[f"final_{METRIC}"].max())
    compute_grid = int(grid["steps_done"].sum())
    n_best = int((grid[f"final_{METRIC}"] >= best_grid * (1 - TARGET_GAP)).sum())

    table = curve_table(grid, grid_curves)
    budget = int(compute_grid * TARGET_COMPUTE)
    strategies = {"tpe+asha": ("tpe", True), "random+asha": ("random", True), "random": ("random", False)}
    replayed: dict[str, Any] = {}
    for name, (sampler, prune) in strategies.items():
        # each replay runs on to the grid's whole compute, for the curve; the target is read at a third
        traces = [replay(table, compute_grid, sampler, s, prune, n_grid // 3) for s in range(replays)]
        finals = [_best_at(t, budget) for t in traces]
        gaps = [(best_grid - f) / best_grid if best_grid > 0 else float("nan") for f in finals]
        replayed[name] = {
            "median_gap": statistics.median(gaps),
            "share_within_target": sum(g <= TARGET_GAP for g in gaps) / len(gaps),
            "median_trials": statistics.median(len([u for u, _ in t if u <= budget]) for t in traces),
            "median_best_vs_compute": {
                f"{f:.2f}": statistics.median(_best_at(t, f * compute_grid) for t in traces) for f in FRACTIONS
            },
        }
    best_tpe = float(tpe[f"final_{METRIC}"].max())
    return {
        "grid_trials": n_grid,
        "grid_best": best_grid,
        "grid_configs_within_2pct_of_best": n_best,
        "grid_share_scoring_zero": float((grid[f"final_{METRIC}"] <= 0).mean()),
        "live_tpe_asha": {
            "trials": len(tpe),
            "stopped_early": int((tpe["status"] == "stopped_early").sum()),
            "best": best_tpe,
            "gap": (best_grid - best_tpe) / best_grid if best_grid else float("nan"),
            "compute_ratio": int(tpe["steps_done"].sum()) / compute_grid,
        },
        "replays": replays,
        "replay_budget": f"{TARGET_COMPUTE:.2f} of the grid's compute ({budget} iterations)",
        "replayed": replayed,
        "targets": f"gap <= {TARGET_GAP:.0%}, compute ratio <= {TARGET_COMPUTE:.2f}",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replays", type=int, default=30)
    print(json.dumps(run(p.parse_args().replays), indent=1))


if __name__ == "__main__":
    main()
