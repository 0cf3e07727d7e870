"""The search benchmark's replay (benchmarks/bench_search.py) on a planted table: real Optuna, no training."""

from __future__ import annotations

import random

from benchmarks.bench_search import GRID, _best_at, replay


def planted_table(seed: int = 0) -> dict[tuple, list[tuple[int, float]]]:
    rng = random.Random(seed)
    table = {}
    for n in GRID["normalizer"]["grid"]:
        for s in GRID["scale"]["grid"]:
            for lr in GRID["lr_d"]["grid"]:
                q = rng.uniform(0.0, 0.5)
                table[(n, float(s), float(lr))] = [(60 * i, q * i / 4) for i in range(1, 5)]
    table[("bsn", 1.4, 1.0e-3)] = [(60 * i, 0.9 * i / 4) for i in range(1, 5)]  # the one best configuration
    return table


def test_replay_spends_the_budget_and_tracks_the_best_so_far():
    table = planted_table()
    trace = replay(table, 2000, "random", seed=0, prune=False, n_configs=12)
    used = [u for u, _ in trace]
    assert used == sorted(used) and all(b - a == 240 for a, b in zip([0, *used], used, strict=False))
    assert used[-2] < 2000 <= used[-1]
    bests = [b for _, b in trace]
    assert bests == sorted(bests)  # best so far never drops
    assert _best_at(trace, 239) == float("-inf") and _best_at(trace, 240) == bests[0]


def test_asha_stops_weak_trials_early_so_more_fit_in_the_budget():
    table = planted_table()
    plain = replay(table, 3000, "random", seed=1, prune=False, n_configs=12)
    pruned = replay(table, 3000, "random", seed=1, prune=True, n_configs=12)
    assert len(pruned) > len(plain)
    steps = {b - a for a, b in zip([0] + [u for u, _ in pruned], [u for u, _ in pruned], strict=False)}
    assert 120 in steps  # stopped at the grace period (2 evaluations of 60 iterations)


def test_with_the_whole_grid_budget_tpe_finds_the_planted_best():
    table = planted_table()
    compute = sum(c[-1][0] for c in table.values())
    trace = replay(table, compute, "tpe", seed=0, prune=True, n_configs=12)
    assert trace[-1][1] == 0.9
