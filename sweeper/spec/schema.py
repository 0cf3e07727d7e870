"""The sweep-file schema: sections and ``SweepSpec`` with its cross-field rules.

A sweep file says what to train (``train``: fixed TrainConfig fields), what to search
(``space``: per parameter a fixed value, ``choice``, ``uniform``, ``loguniform``, ``int`` or an
explicit ``grid``), how (``search``, ``scheduler``), with which replicate seeds (``seeds``) and
on what resources. Field validators check values against the trainer (``sweeper.spec.fields``);
cross-field rules (a key in both ``train`` and ``space``, sampler limits, metrics that need a
kind of dataset or Inception weights, model/resolution consistency of every grid point) run
after the fields are valid, and every problem is collected so one pass reports them all.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from sweeper.spec.fields import check_param, check_value, field_kinds, raise_errors
from sweeper.spec.params import Param, Space, Strict, bounds_of, values_of
from sweeper.spec.text import unknown

MAX_GRID_POINTS = 100_000
"""Configurations a grid (or a union of blocks) may have; the paper's largest sweep has 82."""
MAX_GRID_CHECK = 20_000
"""Grids up to this size are checked point by point for model/resolution/data_root consistency."""

Direction = Literal["max", "min"]
Selection = Literal["final", "best"]
SAMPLERS = ("tpe", "random", "grid", "cmaes")
SEED_LIMIT = 2**31
"""Seeds (replicate and sampler) are in [0, 2**31): valid for torch, numpy and Optuna alike."""


class Objective(Strict):
    metric: str = "mode_coverage"
    mode: Direction | None = None
    """Defaults to the metric's own direction."""
    selection: Selection = "final"
    """What the searcher sees: the value at the end of training, or the best during it."""

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        from trainers.metrics import METRICS

        if v not in METRICS:
            raise ValueError(unknown("metric", v, METRICS))
        return v


class Search(Strict):
    sampler: str = "tpe"
    seed: Annotated[int, Field(ge=0, lt=SEED_LIMIT)] = 0
    trials: Annotated[int, Field(ge=1, le=1_000_000)] = 8
    """Configurations to sample (each runs once per seed); ignored by ``grid``."""
    time_budget_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    storage: str | None = None
    """Where the Optuna study lives (an RDB URL, or ``none``). ``--optuna-storage`` overrides it;
    unset: ``$SNSWEEP_OPTUNA_STORAGE``, else ``optuna.db`` beside the MLflow SQLite store."""

    @field_validator("sampler")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in SAMPLERS:
            raise ValueError(unknown("sampler", v, SAMPLERS))
        return v

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, v: str | None) -> str | None:
        from sweeper.spec.study_url import url_problem

        problem = None if v is None else url_problem(v)
        if problem:
            raise ValueError(problem)
        return None if v is None else v.strip()


class Scheduler(Strict):
    type: Literal["fifo", "asha"] = "fifo"
    grace_period: Annotated[int, Field(ge=1)] = 1
    """ASHA: evaluations a trial gets before it may be stopped."""
    reduction_factor: Annotated[float, Field(gt=1, allow_inf_nan=False)] = 3.0
    stop_on_divergence: bool = False
    """End a run as ``diverged`` once |loss| > ``train.divergence_threshold`` (default 1e4). Off by
    default, so only a NaN/Inf loss ends a run early: the paper trains every scale to the end, and
    at c >= 5 the early hinge loss passes 1e4 within a step or two (it grows roughly like c^8)."""


class Resources(Strict):
    cpus_per_trial: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    gpus_per_trial: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    workers: Annotated[int, Field(ge=1)] = 1
    """DDP workers per trial (multi-GPU trials)."""
    max_concurrent: Annotated[int, Field(ge=1)] | None = None
    """None = as many as the cluster's resources allow."""
    max_failures: Annotated[int, Field(ge=0)] = 1
    """Retries of a trial from its last checkpoint after a worker/node failure."""


SECTIONS: dict[str, type[Strict]] = {
    "objective": Objective, "search": Search, "scheduler": Scheduler, "resources": Resources,
}  # fmt: skip


class SweepSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")]
    description: str = ""
    reproduces: str = ""
    """The paper table/figure this sweep reproduces."""
    train: dict[str, Any] = Field(default_factory=dict)
    space: Space = Field(default_factory=dict)
    """One mapping (a product space) or a list of mappings (a union of grids, like the paper's configs)."""
    seeds: Annotated[list[Annotated[int, Field(ge=0, lt=SEED_LIMIT)]], Field(min_length=1)] = [0]
    objective: Objective = Objective()
    search: Search = Search()
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    allowed_failure_fraction: Annotated[float, Field(ge=0, le=1)] = 0.0
    pack: Annotated[int, Field(ge=1, le=256)] = 1
    """Train this many trainings together as one vectorized model per Tune trial (trainers.packed)."""

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds must be distinct, got {v}")
        return v

    @field_validator("train")
    @classmethod
    def _check_train(cls, train: dict[str, Any]) -> dict[str, Any]:
        fields = field_kinds()
        out: dict[str, Any] = {}
        errors: list[tuple[tuple, str]] = []
        for key, value in train.items():
            if key == "seed":
                errors.append(((key,), "seeds are a replicate axis: use the top-level `seeds` list"))
            elif key not in fields:
                errors.append(((key,), unknown("config key", key, sorted(fields), shown=False)))
            else:
                value, problems = check_value(key, value)
                if problems:
                    errors.append(((key,), "; ".join(problems)))
                out[key] = value
        raise_errors(errors)
        return out

    @field_validator("space")
    @classmethod
    def _check_space(cls, space: dict[str, Param] | list[dict[str, Param]]) -> Any:
        fields = field_kinds()
        blocks = [space] if isinstance(space, dict) else space
        errors: list[tuple[tuple, str]] = []
        new_blocks: list[dict[str, Param]] = []
        for b, block in enumerate(blocks):
            where: tuple = () if isinstance(space, dict) else (b,)
            new: dict[str, Param] = {}
            for key, p in block.items():
                if key == "seed":
                    errors.append(
                        ((*where, key), "seeds are a replicate axis: use the top-level `seeds` list")
                    )
                elif key not in fields:
                    errors.append(((*where, key), unknown("parameter", key, sorted(fields), shown=False)))
                else:
                    p, problems = check_param(key, p)
                    if problems:
                        errors.append(((*where, key), "; ".join(problems)))
                    new[key] = p
            new_blocks.append(new)
        raise_errors(errors)
        return new_blocks[0] if isinstance(space, dict) else new_blocks

    @model_validator(mode="after")
    def _check_semantics(self) -> SweepSpec:
        errors: list[tuple[tuple, str]] = []
        multi = not isinstance(self.space, dict)
        for b, block in enumerate(self.blocks):
            where: tuple = ("space", b) if multi else ("space",)
            for key, p in block.items():
                if key in self.train:
                    errors.append(((*where, key), "also fixed in `train`; keep it in one place"))
                finite = values_of(p)
                if self.search.sampler == "grid" and finite is None:
                    errors.append(
                        ((*where, key), "the grid sampler needs finite values (a value, choice or grid)")
                    )
                elif multi and len(self.blocks) > 1 and finite is None:
                    errors.append(
                        (
                            (*where, key),
                            "a union of blocks needs finite values (a value, choice or grid) in every block",
                        )
                    )
                if self.search.sampler == "cmaes" and finite is not None and len(set(map(repr, finite))) > 1:
                    errors.append(
                        ((*where, key), "the cmaes sampler handles continuous parameters only "
                                        "(uniform, loguniform, int); use tpe or random for categorical ones")
                    )  # fmt: skip
        if len(self.blocks) > 1 and self.search.sampler != "grid":
            errors.append(
                (("search", "sampler"), "a union of blocks (`space` as a list) runs every point: "
                                        f"use `grid`, not {self.search.sampler!r} "
                                        "(it would mix values across blocks)")
            )  # fmt: skip
        if self.pack > 1:
            if self.scheduler.type != "fifo":
                errors.append((("pack",), "packed trials run to the end together: use `scheduler: {type: fifo}`"))
            if self.resources.workers > 1:
                errors.append((("pack",), "a pack is one process: use `resources.workers: 1`"))
        errors += self._metric_problems()
        errors += self._device_problems()
        errors += self._divergence_problems()
        if not errors:
            errors += self._point_problems()
        raise_errors(errors)
        return self

    def _values(self, key: str) -> list[Any]:
        """Every value ``key`` takes anywhere in this sweep (train, blocks, else the default)."""
        from trainers.config import TrainConfig

        if key in self.train:
            return [self.train[key]]
        out: list[Any] = []
        for block in self.blocks:
            vals = values_of(block[key]) if key in block else [getattr(TrainConfig(), key)]
            out += [v for v in (vals or []) if v not in out]
        return out

    def _metric_problems(self) -> list[tuple[tuple, str]]:
        from trainers.data import PROCEDURAL
        from trainers.metrics import IMAGE_METRICS, MODE_METRICS

        errors: list[tuple[tuple, str]] = []
        datasets = [d for d in self._values("dataset") if isinstance(d, str)]
        metrics = self.train_metrics
        where = ("train", "metrics") if "metrics" in self.train else ("objective", "metric")
        image_data = [d for d in datasets if d not in PROCEDURAL]
        modes = [m for m in metrics if m in MODE_METRICS]
        if modes and image_data:
            errors.append(
                (where, f"{', '.join(modes)} need a dataset with known modes (blobs, ring, grid), not "
                        f"{', '.join(map(repr, image_data))}; use fid/is (Inception) or fid_small/is_small")
            )  # fmt: skip
        toy = [d for d in datasets if d in ("ring", "grid")]
        images = [m for m in metrics if m in IMAGE_METRICS]
        if images and toy:
            errors.append(
                (where, f"{', '.join(images)} need image data, not the 2D toy {', '.join(map(repr, toy))}; "
                        "use mode metrics (mode_coverage, modes_captured, hq_fraction, mode_kl)")
            )  # fmt: skip
        inception = [m for m in metrics if m in ("fid", "kid", "is")]
        if inception and "inception_weights" in field_kinds() and not any(self._values("inception_weights")):
            errors.append(
                (("train", "inception_weights"), f"metrics {', '.join(inception)} use the real Inception "
                 "network: set `inception_weights` to a local pt_inception-2015-12-05-6726825d.pth "
                 "(never downloaded), or use fid_small/is_small")
            )  # fmt: skip
        return errors

    def _divergence_problems(self) -> list[tuple[tuple, str]]:
        """A threshold that the sweep would silently replace by infinity is an error."""
        if self.scheduler.stop_on_divergence:
            return []
        where = [("train", "divergence_threshold")] if "divergence_threshold" in self.train else []
        where += [("space", "divergence_threshold")] if "divergence_threshold" in self.parameters else []
        return [
            (loc, "has no effect while `scheduler.stop_on_divergence` is false (only NaN/Inf end a run): "
                  "set `scheduler: {stop_on_divergence: true}` to stop runs at this |loss|")
            for loc in where
        ]  # fmt: skip

    def _device_problems(self) -> list[tuple[tuple, str]]:
        devices = [d for d in self._values("device") if isinstance(d, str)]
        if any(d.startswith("cuda") for d in devices) and self.resources.gpus_per_trial == 0:
            return [
                (("resources", "gpus_per_trial"), "must be > 0 when `device` is cuda: Ray hides GPUs from "
                 "trials that do not request one")
            ]  # fmt: skip
        return []

    def _grid_size(self) -> int:
        """Configurations of the finite blocks before de-duplication (no points are built)."""
        total = 0
        for block in self.blocks:
            size = 1
            for p in block.values():
                size *= len(values_of(p) or [])
            total += size
        return total

    def _point_problems(self) -> list[tuple[tuple, str]]:
        """Grid size, model/resolution and dataset/data_root consistency of every finite configuration."""
        if any(values_of(p) is None for block in self.blocks for p in block.values()):
            return []
        size = self._grid_size()
        if size > MAX_GRID_POINTS:
            if not self.is_grid and len(self.blocks) == 1:
                return []  # sampled: only `search.trials` points are drawn
            return [(("space",), f"the grid has {size:,} configurations (more than {MAX_GRID_POINTS:,}); "
                                 "sample it with tpe/random and `search.trials`")]  # fmt: skip
        if size > MAX_GRID_CHECK:
            return []  # too many to check one by one; the trials report such problems themselves
        from sweeper.spec.points import grid_points
        from trainers.config import TrainConfig
        from trainers.data import IMAGE_DATASETS

        base = TrainConfig()
        where = ("space",) if any(self.blocks) else ("train",)
        seen: dict[tuple[tuple, str], None] = {}
        for point in grid_points(self):
            cfg = {**self.train, **point}

            def get(k: str, cfg: dict[str, Any] = cfg) -> Any:
                return cfg.get(k, getattr(base, k))

            def at(*keys: str) -> tuple:
                return where if any(k in self.parameters for k in keys) else ("train", keys[0])

            model, res, dataset = get("model"), get("resolution"), get("dataset")
            if model == "sngan_cnn" and isinstance(res, int) and res % 8:
                msg = (
                    f"resolution {res} with model sngan_cnn: must be a multiple of 8 (32/48/64 in the paper)"
                )
                seen[(at("resolution", "model"), msg)] = None
            if model == "sngan_resnet" and isinstance(res, int) and (res < 8 or res & (res - 1)):
                msg = (
                    f"resolution {res} with model sngan_resnet: must be a power of two >= 8 (the paper: 128)"
                )
                seen[(at("resolution", "model"), msg)] = None
            if dataset in IMAGE_DATASETS and not get("data_root"):
                msg = f"dataset {dataset!r} needs `data_root` (a local folder; nothing is downloaded)"
                seen[(at("dataset"), msg)] = None
        return list(seen)

    # --- derived views ----------------------------------------------------------------
    @property
    def blocks(self) -> list[dict[str, Param]]:
        return [self.space] if isinstance(self.space, dict) else list(self.space)

    @property
    def metric_mode(self) -> Direction:
        from trainers.metrics import METRICS

        return self.objective.mode or METRICS[self.objective.metric]  # type: ignore[return-value]

    @property
    def train_metrics(self) -> list[str]:
        """Metrics computed by every trial: the configured ones plus the objective."""
        from trainers.config import TrainConfig

        metrics = list(self.train.get("metrics", TrainConfig().metrics))
        if self.objective.metric not in metrics:
            metrics.insert(0, self.objective.metric)
        return metrics

    @cached_property
    def is_grid(self) -> bool:
        return self.search.sampler == "grid"

    @property
    def n_configurations(self) -> int:
        if not self.is_grid:
            return self.search.trials
        from sweeper.spec.points import grid_points

        return len(grid_points(self))

    @property
    def n_trials(self) -> int:
        """Tune trials = configurations x seeds."""
        return self.n_configurations * len(self.seeds)

    @property
    def n_iterations(self) -> int:
        """Total training iterations of the sweep (each trial's ``iterations``, summed over trials).

        Exact for grids, where ``iterations`` may differ per block; for sampled sweeps
        it assumes the largest value ``iterations`` can take.
        """
        from trainers.config import TrainConfig

        default = TrainConfig().iterations
        fixed = self.train.get("iterations")
        if self.is_grid:
            from sweeper.spec.points import grid_points

            per_seed = sum(int(pt.get("iterations", fixed or default)) for pt in grid_points(self))
            return per_seed * len(self.seeds)
        tops: list[Any] = [fixed] if fixed is not None else []
        for block in self.blocks if fixed is None else []:
            p = block.get("iterations", default)
            tops += [bounds_of(p)[1]] if bounds_of(p) else values_of(p) or []  # type: ignore[index]
        return int(max(tops, default=default)) * self.n_trials

    @property
    def parameters(self) -> list[str]:
        seen: dict[str, None] = {}
        for block in self.blocks:
            seen.update(dict.fromkeys(block))
        return list(seen)
