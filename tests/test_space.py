"""``sweeper.spec.space``: sweep spec -> Optuna distributions, grid points, fixed params, Tune space.

Table-driven: each parameter form maps to one expected distribution. The last test drives
the real searcher (OptunaSearch inside Ray's Repeater) without a Ray cluster and checks
that a seeded TPE proposes the same configurations every time.
"""

from __future__ import annotations

from typing import Any

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeper import spec as specmod
from sweeper.spec.space import fixed_params, grid_points, optuna_distribution, optuna_space, tune_space


def _spec(space: Any, **extra: Any) -> specmod.SweepSpec:
    return specmod.SweepSpec.model_validate({"name": "t", "space": space, **extra})


GRID = {"search": {"sampler": "grid"}}

DISTRIBUTIONS = [
    ("uniform", {"scale": {"uniform": [0.5, 3.0]}}, FloatDistribution(0.5, 3.0)),
    ("loguniform", {"lr_d": {"loguniform": [1e-5, 1e-3]}}, FloatDistribution(1e-5, 1e-3, log=True)),
    ("int", {"n_dis": {"int": [1, 5]}}, IntDistribution(1, 5)),
    ("int-log", {"batch_size": {"int": [16, 256], "log": True}}, IntDistribution(16, 256, log=True)),
    ("choice", {"normalizer": {"choice": ["sn", "bsn"]}}, CategoricalDistribution(["sn", "bsn"])),
    (
        "choice-dedupe",
        {"normalizer": {"choice": ["sn", "bsn", "sn"]}},
        CategoricalDistribution(["sn", "bsn"]),
    ),
    ("grid", {"scale": {"grid": [1.0, 1.2]}}, CategoricalDistribution([1.0, 1.2])),
    ("choice-int-as-float", {"scale": {"choice": [1, 2.5]}}, CategoricalDistribution([1.0, 2.5])),
    ("choice-bool", {"grad_through_uv": {"choice": [True, False]}}, CategoricalDistribution([True, False])),
    ("fixed", {"scale": 1.4}, CategoricalDistribution([1.4])),
]


@pytest.mark.parametrize(
    ("space", "expected"), [d[1:] for d in DISTRIBUTIONS], ids=[d[0] for d in DISTRIBUTIONS]
)
def test_param_form_to_optuna_distribution(space: dict[str, Any], expected: Any) -> None:
    s = _spec(space)
    ((key, p),) = s.space.items()  # type: ignore[union-attr]
    assert optuna_distribution(p) == expected
    searched = optuna_space(s)
    if len(getattr(expected, "choices", [0, 1])) > 1:
        assert searched == {key: expected}
    else:  # one value: a constant, not a search dimension
        assert searched == {} and fixed_params(s)[key] == expected.choices[0]


def test_float_distribution_flags() -> None:
    d = optuna_distribution(_spec({"lr_g": {"loguniform": [1e-4, 1e-2]}}).space["lr_g"])  # type: ignore[index]
    assert isinstance(d, FloatDistribution) and d.log and d.step is None
    d = optuna_distribution(_spec({"scale": {"uniform": [1, 2]}}).space["scale"])  # type: ignore[index]
    assert isinstance(d, FloatDistribution) and not d.log


def test_product_space_and_fixed_params() -> None:
    s = _spec(
        {"normalizer": {"choice": ["sn", "bsn"]}, "scale": {"loguniform": [0.5, 3.0]}, "n_dis": 5,
         "lr_g": {"choice": [2e-4]}},
        train={"dataset": "blobs", "iterations": 100},
    )  # fmt: skip
    assert optuna_space(s) == {
        "normalizer": CategoricalDistribution(["sn", "bsn"]),
        "scale": FloatDistribution(0.5, 3.0, log=True),
    }
    assert fixed_params(s) == {"dataset": "blobs", "iterations": 100, "n_dis": 5, "lr_g": 2e-4}


GRID_CASES = [
    (
        "product",
        {"normalizer": {"grid": ["sn", "bsn"]}, "scale": {"grid": [1.0, 2.0]}},
        [{"normalizer": n, "scale": c} for n in ("sn", "bsn") for c in (1.0, 2.0)],
    ),
    (
        "union",
        [{"normalizer": "sn", "scale": {"grid": [1.0, 2.0, 3.0]}},
         {"normalizer": "bsn", "scale": {"grid": [1.0]}}],
        [{"normalizer": "sn", "scale": 1.0}, {"normalizer": "sn", "scale": 2.0},
         {"normalizer": "sn", "scale": 3.0}, {"normalizer": "bsn", "scale": 1.0}],
    ),
    (
        "union-dedupe",  # the paper's blocks 4-6 repeat the default setting of blocks 1-3: run once
        [{"scale": {"grid": [1.0, 1.4]}, "n_dis": 1}, {"scale": 1.0, "n_dis": {"grid": [1, 5]}}],
        [{"scale": 1.0, "n_dis": 1}, {"scale": 1.4, "n_dis": 1}, {"scale": 1.0, "n_dis": 5}],
    ),
    (
        "union-missing-key-takes-default",  # n_dis absent from block 1: TrainConfig's 1, deduped with block 2
        [{"scale": {"grid": [1.0, 2.0]}}, {"scale": 1.0, "n_dis": {"grid": [1, 5]}}],
        [{"scale": 1.0, "n_dis": 1}, {"scale": 2.0, "n_dis": 1}, {"scale": 1.0, "n_dis": 5}],
    ),
    (
        "int-and-float-are-one-value",
        {"scale": {"grid": [1, 1.0, 2]}},
        [{"scale": 1.0}, {"scale": 2.0}],
    ),
    ("empty", {}, [{}]),
]  # fmt: skip


@pytest.mark.parametrize(("space", "expected"), [c[1:] for c in GRID_CASES], ids=[c[0] for c in GRID_CASES])
def test_grid_points(space: Any, expected: list[dict[str, Any]]) -> None:
    s = _spec(space, **GRID)
    assert grid_points(s) == expected
    assert s.n_configurations == len(expected)


def test_union_space_is_categorical_over_all_values_and_constants_are_fixed() -> None:
    s = _spec(
        [{"normalizer": "sn", "scale": {"grid": [1.0, 2.0]}, "n_dis": 1, "beta2": 0.999},
         {"normalizer": "bsn", "scale": {"grid": [2.0, 3.0]}, "n_dis": 1, "beta2": 0.9}],
        train={"iterations": 50},
        **GRID,
    )  # fmt: skip
    assert optuna_space(s) == {
        "normalizer": CategoricalDistribution(["sn", "bsn"]),
        "scale": CategoricalDistribution([1.0, 2.0, 3.0]),
        "beta2": CategoricalDistribution([0.999, 0.9]),
    }
    assert fixed_params(s) == {"iterations": 50, "n_dis": 1}
    assert s.n_trials == 4 and s.parameters == ["normalizer", "scale", "n_dis", "beta2"]


def test_single_block_grid_space() -> None:
    s = _spec({"normalizer": {"grid": ["sn", "bsn"]}, "scale": {"grid": [1.0]}}, **GRID)
    assert optuna_space(s) == {"normalizer": CategoricalDistribution(["sn", "bsn"])}
    assert fixed_params(s) == {"scale": 1.0}


def test_tune_space() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    s = _spec(
        {"scale": {"uniform": [0.5, 3.0]}, "lr_d": {"loguniform": [1e-4, 1e-2]}, "n_dis": {"int": [1, 5]},
         "batch_size": {"int": [16, 64], "log": True}, "normalizer": {"choice": ["sn", "bsn"]},
         "width": {"grid": [0.5, 1.0]}, "latent_dim": 64},
    )  # fmt: skip
    t = tune_space(s)
    assert isinstance(t["scale"], Float) and (t["scale"].lower, t["scale"].upper) == (0.5, 3.0)
    assert type(t["scale"].sampler).__name__ == "_Uniform"
    assert isinstance(t["lr_d"], Float) and type(t["lr_d"].sampler).__name__ == "_LogUniform"
    assert isinstance(t["n_dis"], Integer) and (t["n_dis"].lower, t["n_dis"].upper) == (
        1,
        6,
    )  # upper exclusive
    assert isinstance(t["batch_size"], Integer) and type(t["batch_size"].sampler).__name__ == "_LogUniform"
    assert isinstance(t["normalizer"], Categorical) and t["normalizer"].categories == ["sn", "bsn"]
    assert t["width"] == {"grid_search": [0.5, 1.0]}
    assert t["latent_dim"] == 64
    with pytest.raises(ValueError, match="one mapping"):
        tune_space(_spec([{"scale": 1.0}, {"scale": 2.0}], **GRID))


def _suggestions(spec: specmod.SweepSpec, n: int) -> list[dict[str, Any]]:
    from sweeper.run.reporting import INDEX_KEY, OBJECTIVE
    from sweeper.run.search import make_searcher

    searcher = make_searcher(spec)
    out = []
    for i in range(n):
        config = searcher.suggest(f"trial_{i}")
        assert config is not None
        out.append(config)
        # a deterministic fake metric of the configuration (and of the replicate index)
        value = (config["scale"] - 1.3) ** 2 + config["lr_d"] * 100 + 0.01 * config[INDEX_KEY]
        value += {"none": 1.0, "sn": 0.2, "bsn": 0.0}[config["normalizer"]]
        searcher.on_trial_complete(f"trial_{i}", {OBJECTIVE: -value, INDEX_KEY: config[INDEX_KEY]})
    return out


def test_seeded_tpe_is_reproducible() -> None:
    """Two fresh searchers of one seeded spec propose the same configurations (no Ray cluster needed)."""
    text = specmod.preset_text("demo-search").replace("trials: 10 ", "trials: 12")
    spec = specmod.parse(text, "demo-search")
    assert spec.search.sampler == "tpe" and spec.search.trials == 12
    n = spec.n_trials  # 12 configurations x 2 seeds: past TPE's 6 random start-up trials
    first, second = _suggestions(spec, n), _suggestions(spec, n)
    assert first == second
    configs = [c for c in first if c["__trial_index__"] == 0]
    assert len(configs) == 12 and len({repr(sorted(c.items())) for c in configs}) > 6
    assert all(first[i + 1]["__trial_index__"] == 1 and first[i]["scale"] == first[i + 1]["scale"]
               for i in range(0, n, 2))  # fmt: skip  # each configuration once per seed
    other = specmod.parse(text.replace("seed: 0", "seed: 1"), "demo-search")
    assert _suggestions(other, n) != first


@pytest.mark.parametrize("sampler", ["grid", "tpe"])
def test_a_sweep_with_nothing_to_search_still_gets_suggestions(sampler: str):
    """OptunaSearch refuses an empty space; a constant placeholder keeps one-point sweeps working."""
    from sweeper.run.reporting import TrialContext, trial_config
    from sweeper.run.search import make_searcher

    spec = specmod.SweepSpec.model_validate(
        {"name": "one", "space": {"normalizer": {"grid": ["sn"]}, "scale": 1.2}, "seeds": [0, 1],
         "search": {"sampler": sampler, "trials": 1}}  # fmt: skip
    )
    searcher = make_searcher(spec)
    configs = [searcher.suggest(f"t{i}") for i in range(2)]
    ctx = TrialContext(fixed={"normalizer": "sn", "scale": 1.2}, seeds=[0, 1], metric="m", mode="max",
                       selection="final")  # fmt: skip
    resolved = [trial_config(c, ctx) for c in configs]
    assert [r["seed"] for r in resolved] == [0, 1]
    assert all("__constant__" not in r and r["normalizer"] == "sn" for r in resolved)
