"""Search efficiency: how close TPE + ASHA gets to the full grid's best, for what share of its compute.

    python -m benchmarks.bench_search [--replays 30]

The problem is demo-search's (16 px blobs, the SNGAN CNN at 1/8 width, 1000 iterations evaluated every
125, mode_coverage, one seed), discretized: normalizer x scale x lr_d x n_dis on a 72-point grid, the
demo's scale grid within demo-search's range, lr_g fixed. On it the scale, the learning rate and n_dis
all matter and interact (the demo's own grid shows a graded, non-zero metric), so search has something
to find. Compute = generator iterations actually trained (``steps_done`` summed over trials). Target:
TPE+ASHA's best within 2% of the grid's best with at most a third of the grid's compute, in >= 80% of
sampler seeds.

Two measurements:

1. The service for real: the grid as one packed sweep (every point to the end), then TPE (seeded) +
   ASHA as another sweep over the same finite space with a third as many configurations; ASHA stops
   the weak ones early. One run of a noisy problem.
2. Replays, for a distribution instead of one draw: training here is deterministic (CPU, one
   thread, seeded), so a configuration's evaluation curve is the same every time it runs, and the
   grid sweep has recorded every configuration's curve. Optuna's TPESampler (the sampler the service
   uses, same settings) + Optuna's SuccessiveHalvingPruner (asynchronous successive halving with the
   service's grace period and reduction factor) search that table once per sampler seed, on to the
   grid's whole compute; the target is read at a third of it. Random search (with and without
   ASHA) and the grid in its own order replay as baselines. Each replay is a real Optuna study whose
   objective reads the recorded curves instead of retraining: it differs from a live sweep only in
   that trials complete one at a time.

The result: the median gap, the share of seeds that land within 2%, the share of trials ASHA
stopped, and the median best-so-far against the share of the grid's compute spent.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any


def _problem() -> tuple[dict[str, Any], dict[str, Any], int, float]:
    """demo-search's training block, the benchmark's grid, and ASHA's grace period and reduction factor.

    Read from the preset, so the benchmark measures the search users get (one definition of the problem).
    """
    from sweeper import spec as specmod

    preset = specmod.load("demo-search")
    train = {**preset.train, "metrics": [METRIC], "diagnostics": False, "lr_g": 2.0e-4}
    grid = {
        "normalizer": {"grid": ["sn", "bsn"]},
        "scale": {"grid": [0.7, 0.8, 0.9, 1.0, 1.2, 1.4]},
        "lr_d": {"grid": [1.0e-4, 2.0e-4, 5.0e-4]},
        "n_dis": {"grid": [1, 2]},
    }
    return train, grid, preset.scheduler.grace_period, preset.scheduler.reduction_factor


KEYS = ("normalizer", "scale", "lr_d", "n_dis")
METRIC = "mode_coverage"
TARGET_GAP, TARGET_COMPUTE = 0.02, 1 / 3
FRACTIONS = (0.1, 0.2, 1 / 3, 0.5, 1.0)  # of the grid's compute, for the best-so-far curve


def _run(spec_data: dict[str, Any], work: Path) -> tuple[Any, Any]:
    from sweeper.run.storage import Storage
    from sweeper.run.sweep import run_sweep
    from sweeper.spec import SweepSpec

    spec = SweepSpec.model_validate(spec_data)
    run_sweep(spec, Storage(work / "results", None, work / "art"), progress=lambda _: None)
    return _load(work, spec.name)


def curve_table(rows: Any, curves: Any) -> dict[tuple, list[tuple[int, float]]]:
    """(normalizer, scale, lr_d, n_dis) -> [(step, mode_coverage)] of the grid's runs, in step order."""
    mine = curves[curves["metric"] == METRIC]
    table: dict[tuple, list[tuple[int, float]]] = {}
    for r in rows.itertuples():
        c = mine[mine["trial_id"] == r.trial_id].sort_values("step")
        key = (r.normalizer, float(r.scale), float(r.lr_d), int(r.n_dis))
        table[key] = list(zip(c["step"].astype(int), c["value"], strict=True))
    return table


def replay(
    table: dict[tuple, list[tuple[int, float]]],
    grid: dict[str, Any],
    budget: int,
    strategy: str,
    seed: int,
    n_configs: int,
    asha: tuple[int, float],
) -> tuple[list[tuple[int, float]], int, int]:
    """One search over the recorded curves: ([(compute so far, best final so far)] per trial, trials, pruned).

    ``strategy``: ``tpe+asha``, ``random+asha``, ``random``, or ``grid`` (every point in the grid's
    own order, the way a grid sweep spends its compute).
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    points = list(table)
    if strategy == "grid":
        trace, used, best = [], 0, float("-inf")
        for key in points:
            used += table[key][-1][0]
            best = max(best, table[key][-1][1])
            trace.append((used, best))
            if used >= budget:
                break
        return trace, len(trace), 0
    sampler_name, _, prune = strategy.partition("+")
    startup = max(2, min(10, n_configs // 2))  # as sweeper.run.search.make_searcher
    sampler = (
        optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
        if sampler_name == "tpe"
        else optuna.samplers.RandomSampler(seed=seed)
    )
    grace, factor = asha
    if factor != int(factor):
        raise ValueError(f"Optuna's SuccessiveHalvingPruner takes a whole reduction factor, not {factor}")
    pruner = (
        optuna.pruners.SuccessiveHalvingPruner(min_resource=grace, reduction_factor=int(factor))
        if prune
        else optuna.pruners.NopPruner()
    )
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    space = {k: optuna.distributions.CategoricalDistribution(grid[k]["grid"]) for k in KEYS}
    used, best, trace, n_pruned = 0, float("-inf"), [], 0
    while used < budget:
        trial = study.ask(space)
        p = trial.params
        curve = table[(p["normalizer"], float(p["scale"]), float(p["lr_d"]), int(p["n_dis"]))]
        pruned = False
        for i, (step, value) in enumerate(curve, start=1):  # i = evaluation count, Tune's training_iteration
            trial.report(value, i)
            if i < len(curve) and trial.should_prune():
                used += step
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                pruned = True
                n_pruned += 1
                break
        if not pruned:
            used += curve[-1][0]
            study.tell(trial, curve[-1][1])
            best = max(best, curve[-1][1])
        trace.append((used, best))
    return trace, len(trace), n_pruned


def _best_at(trace: list[tuple[int, float]], compute: float) -> float:
    """Best final value reached within ``compute`` iterations (-inf when no trial finished by then)."""
    reached = [b for used, b in trace if used <= compute]
    return reached[-1] if reached else float("-inf")


def _load(work: Path, name: str) -> tuple[Any, Any]:
    from sweeper import results

    path = work / "results" / name
    return results.latest_attempts(results.load(path)), results.load_curves(path)


def run(replays: int = 30, reuse: Path | None = None) -> dict[str, Any]:
    """``reuse``: the folder of an earlier run (it is kept, and printed): replay on its two sweeps
    instead of training them again (about 20 minutes on 2 cores)."""
    train, grid_space, grace, factor = _problem()
    base = {"train": train, "seeds": [0], "objective": {"metric": METRIC}}
    n_grid = math.prod(len(v["grid"]) for v in grid_space.values())
    if reuse is not None:
        work = Path(reuse)
        (grid, grid_curves), (tpe, _) = _load(work, "grid"), _load(work, "tpe")
    else:
        work = Path(tempfile.mkdtemp(prefix="snsweep-bench-search-"))
        print(f"bench_search: sweeps in {work} (--reuse {work} replays on them again)", file=sys.stderr)
        grid, grid_curves = _run(
            {**base, "name": "grid", "space": grid_space, "search": {"sampler": "grid"}, "pack": 18}, work
        )
        choice = {k: {"choice": v["grid"]} for k, v in grid_space.items()}
        tpe, _ = _run(
            {**base, "name": "tpe", "space": choice, "search": {"sampler": "tpe", "seed": 0, "trials": n_grid // 3},
             "scheduler": {"type": "asha", "grace_period": grace, "reduction_factor": factor}},
            work,
        )  # fmt: skip
    if len(grid) != n_grid:
        raise RuntimeError(f"the grid sweep in {work} recorded {len(grid)} of {n_grid} configurations")
    finals = grid[f"final_{METRIC}"].astype(float)
    best_grid = float(finals.max())
    compute_grid = int(grid["steps_done"].sum())
    table = curve_table(grid, grid_curves)
    budget = int(compute_grid * TARGET_COMPUTE)
    replayed: dict[str, Any] = {}
    for name in ("tpe+asha", "random+asha", "random", "grid"):
        # each replay runs on to the grid's whole compute, for the curve; the target is read at a third
        seeds = range(1) if name == "grid" else range(replays)
        runs = [replay(table, grid_space, compute_grid, name, s, n_grid // 3, (grace, factor)) for s in seeds]
        traces = [t for t, _, _ in runs]
        gaps = [(best_grid - _best_at(t, budget)) / best_grid if best_grid > 0 else float("nan") for t in traces]
        replayed[name] = {
            "seeds": len(traces),
            "median_gap": statistics.median(gaps),
            "share_within_target": sum(g <= TARGET_GAP for g in gaps) / len(gaps),
            "median_trials": statistics.median(len([u for u, _ in t if u <= budget]) for t in traces),
            "share_stopped": sum(p for _, _, p in runs) / max(sum(n for _, n, _ in runs), 1),
            "median_best_vs_compute": {
                f"{f:.2f}": statistics.median(_best_at(t, f * compute_grid) for t in traces) for f in FRACTIONS
            },
        }
    best_tpe = float(tpe[f"final_{METRIC}"].max())
    trained = None
    if reuse is not None:  # when the reused sweeps were trained: their first and last recorded rows
        import pandas as pd

        ends = pd.concat([grid, tpe])
        trained = f"{ends['started_at'].min():%Y-%m-%d %H:%M} to {ends['finished_at'].max():%H:%M} UTC"
    return {
        "sweeps_trained_at": trained,
        "grid_trials": n_grid,
        "grid_best": best_grid,
        "grid_configs_within_2pct_of_best": int((finals >= best_grid * (1 - TARGET_GAP)).sum()),
        "grid_share_scoring_zero": float((finals <= 0).mean()),
        "grid_quantiles": {str(q): float(finals.quantile(q)) for q in (0.25, 0.5, 0.75)},  # str: JSON keys
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
        "targets": f"gap <= {TARGET_GAP:.0%} at compute ratio <= {TARGET_COMPUTE:.2f} in >= 80% of seeds",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--replays", type=int, default=30)
    p.add_argument("--reuse", type=Path, help="replay on the sweeps of an earlier run (the folder it printed)")
    a = p.parse_args()
    print(json.dumps(run(a.replays, a.reuse), indent=1))


if __name__ == "__main__":
    main()
