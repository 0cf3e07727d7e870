"""Search efficiency: how close TPE + ASHA gets to the full grid's best, for what share of its compute.

    python -m benchmarks.bench_search

The problem is the demo's question on the cheap 2D ring (PacGAN's 8 Gaussians, MLP GAN): normalizer x
scale x lr_d on a grid. The grid runs every point to the end; TPE (seeded) samples a third as many
configurations from the same finite space and ASHA stops the weak ones early. Compute = generator
iterations actually trained (``steps_done`` summed over trials). Target: TPE+ASHA's best within 2% of
the grid's best with at most a third of its compute. The score is noisy at this size: the figure is
what one seeded run gives, not a claim about TPE in general.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

TRAIN = {
    "dataset": "ring", "model": "mlp", "width": 0.5, "latent_dim": 8, "batch_size": 64, "iterations": 400,
    "eval_every": 50, "eval_samples": 1000, "metrics": ["mode_coverage"], "diagnostics": False,
}  # fmt: skip
GRID = {
    "normalizer": {"grid": ["none", "sn", "bsn"]},
    "scale": {"grid": [0.5, 1.0, 2.0, 4.0]},
    "lr_d": {"grid": [1.0e-4, 5.0e-4, 2.0e-3]},
}


def _run(spec_data: dict[str, Any], work: Path) -> Any:
    from sweeper import results
    from sweeper.spec import SweepSpec
    from sweeper.tuning import Storage, run_sweep

    spec = SweepSpec.model_validate(spec_data)
    run_sweep(spec, Storage(work / "results", None, work / "art"), progress=lambda _: None)
    return results.latest_attempts(results.load(work / "results" / spec.name))


def run() -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="snsweep-bench-search-"))
    base = {"train": TRAIN, "seeds": [0], "objective": {"metric": "mode_coverage"}}
    grid = _run({**base, "name": "grid", "space": GRID, "search": {"sampler": "grid"}}, work)
    n_grid = len(grid)
    choice = {k: {"choice": v["grid"]} for k, v in GRID.items()}
    tpe = _run(
        {**base, "name": "tpe", "space": choice, "search": {"sampler": "tpe", "seed": 0, "trials": n_grid // 3},
         "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 3}},  # fmt: skip
        work,
    )
    best_grid = float(grid["final_mode_coverage"].max())
    best_tpe = float(tpe["final_mode_coverage"].max())
    compute_grid = int(grid["steps_done"].sum())
    compute_tpe = int(tpe["steps_done"].sum())
    return {
        "grid_trials": n_grid,
        "tpe_trials": len(tpe),
        "best_grid": best_grid,
        "best_tpe": best_tpe,
        "gap": (best_grid - best_tpe) / best_grid if best_grid else float("nan"),
        "compute_ratio": compute_tpe / compute_grid,
        "targets": "gap <= 2%, compute ratio <= 1/3",
    }


def main() -> None:
    r = run()
    print(
        f"grid: {r['grid_trials']} trials, best mode_coverage {r['best_grid']:.3f}; TPE+ASHA: {r['tpe_trials']} "
        f"trials, best {r['best_tpe']:.3f} (gap {r['gap']:.1%}) with {r['compute_ratio']:.2f}x the grid's compute"
    )


if __name__ == "__main__":
    main()
