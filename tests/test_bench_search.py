"""The search benchmark's replay (benchmarks/bench_search.py) on a planted table: real Optuna, no training."""

from __future__ import annotations

import itertools
import random

from benchmarks.bench_search import KEYS, _best_at, _problem, replay

GRID = {
    "normalizer": {"grid": ["sn", "bsn"]},
    "scale": {"grid": [0.7, 1.0, 1.4]},
    "lr_d": {"grid": [1.0e-4, 1.0e-3]},
    "n_dis": {"grid": [1, 2]},
}
ASHA = (2, 3.0)  # grace period (evaluations), reduction factor: a float, as the sweep file gives it


def planted_table(seed: int = 0) -> dict[tuple, list[tuple[int, float]]]:
    rng = random.Random(seed)
    table = {}
    for n, s, lr, nd in itertools.product(*(GRID[k]["grid"] for k in KEYS)):
        q = rng.uniform(0.0, 0.5)
        table[(n, float(s), float(lr), int(nd))] = [(60 * i, q * i / 4) for i in range(1, 5)]
    table[("bsn", 1.4, 1.0e-3, 2)] = [(60 * i, 0.9 * i / 4) for i in range(1, 5)]  # the one best configuration
    return table


def test_the_benchmark_problem_is_demo_search_discretized():
    train, grid, grace, factor = _problem()
    assert train["dataset"] == "blobs" and train["metrics"] == ["mode_coverage"]
    assert set(grid) == set(KEYS) and len(list(itertools.product(*(v["grid"] for v in grid.values())))) == 72
    assert (grace, factor) == (2, 3)


def test_replay_spends_the_budget_and_tracks_the_best_so_far():
    table = planted_table()
    trace, n, pruned = replay(table, GRID, 2000, "random", 0, 8, ASHA)
    used = [u for u, _ in trace]
    assert n == len(trace) and pruned == 0
    assert used == sorted(used) and all(b - a == 240 for a, b in zip([0, *used], used, strict=False))
    assert used[-2] < 2000 <= used[-1]
    bests = [b for _, b in trace]
    assert bests == sorted(bests)  # best so far never drops
    assert _best_at(trace, 239) == float("-inf") and _best_at(trace, 240) == bests[0]


def test_asha_stops_weak_trials_early_so_more_fit_in_the_budget():
    table = planted_table()
    plain, _, _ = replay(table, GRID, 3000, "random", 1, 8, ASHA)
    pruned, n, n_pruned = replay(table, GRID, 3000, "random+asha", 1, 8, ASHA)
    assert len(pruned) > len(plain) and 0 < n_pruned < n
    steps = {b - a for a, b in zip([0] + [u for u, _ in pruned], [u for u, _ in pruned], strict=False)}
    assert 120 in steps  # stopped at the grace period (2 evaluations of 60 iterations)


def test_with_the_whole_grid_budget_tpe_finds_the_planted_best():
    table = planted_table()
    compute = sum(c[-1][0] for c in table.values())
    trace, _, _ = replay(table, GRID, compute, "tpe+asha", 0, 8, ASHA)
    assert trace[-1][1] == 0.9


def test_the_grid_in_its_order_reaches_the_best_only_when_it_gets_there():
    table = planted_table()
    compute = sum(c[-1][0] for c in table.values())
    trace, n, pruned = replay(table, GRID, compute, "grid", 0, 8, ASHA)
    assert n == len(table) and pruned == 0 and trace[-1][1] == 0.9
    position = list(table).index(("bsn", 1.4, 1.0e-3, 2))
    assert trace[position - 1][1] < 0.9 <= trace[position][1]
