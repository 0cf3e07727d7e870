"""Which searched parameters matter for the objective: Optuna's importance evaluators over Parquet rows.

Why from the Parquet rows and not from the sweep's Optuna study: the rows exist for every sweep
(grid, packed, sampled, several sweeps reported together, files copied off a cluster), while a
study may be absent (``--optuna-storage none``) or on a database this machine cannot reach. The
rows are turned into an in-memory study (one trial per configuration, valued at the mean over its
seeds) and handed to Optuna's own evaluators, so the numbers are the ones ``optuna-dashboard`` and
``optuna.importance`` give for the same trials:

- **fANOVA** (Optuna's default; Hutter et al. 2014): the share of the objective's variance over
  the searched space that each parameter explains alone, from a random forest (scikit-learn,
  seeded). Up to :data:`MAX_FANOVA_CONFIGURATIONS` configurations (the forest grows slow beyond).
- **PED-ANOVA** (Watanabe et al. 2023): how differently the top 10% of configurations are spread
  over each parameter than all of them; quick at any size.

The parameters are the training-configuration fields that vary among the rows analysed (the
setting columns of :mod:`sweeper.analysis.settings`, plus ``scale``); numbers are floats or ints
over their observed range (on a log axis when positive and spanning a factor of 10 or more),
anything else is categorical. Optuna is imported here only when an importance is computed, so
``import sweeper.analysis`` stays free of it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from sweeper.analysis.common import group_ids, metric_values
from sweeper.analysis.settings import latest_attempts, setting_columns

MIN_CONFIGURATIONS = 4
"""Fewer configurations with a value than this give no importance (a forest of 3 points is noise)."""
MAX_FANOVA_CONFIGURATIONS = 500
"""fANOVA's forest took about 1 s at 100 configurations and 45 s at 2,000 on 2 shared cores."""
LOG_SPAN = 10.0

IMPORTANCE_RULE = (
    "one point per configuration (its parameters, the mean over seeds of the counted values of the "
    "objective); importance = Optuna's fANOVA (share of the objective's variance each parameter explains; "
    "seeded forest) and PED-ANOVA (how the top 10% of configurations differ from all), over the "
    "training-configuration fields that vary, numbers on a log axis when positive and spanning 10x"
)


@dataclass
class Importance:
    """The inputs and the answer; ``note`` says why there is no answer (then ``table`` is empty)."""

    metric: str
    selection: str
    direction: str
    parameters: list[str]
    points: pd.DataFrame
    """One row per configuration: the parameters, ``value`` (mean over seeds) and ``n_seeds``."""
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    """parameter, fanova, ped_anova (NaN where not computed), most important first."""
    note: str = ""


def searched_parameters(df: pd.DataFrame) -> list[str]:
    """Configuration fields (setting columns and ``scale``) that take more than one value in ``df``."""
    rows = latest_attempts(df)
    candidates = [c for c in [*setting_columns(rows), "scale"] if c in rows.columns and c != "dataset"]
    return [c for c in dict.fromkeys(candidates) if rows[c].nunique(dropna=True) > 1]


def configuration_points(df: pd.DataFrame, metric: str, selection: str, parameters: list[str]) -> pd.DataFrame:
    """Mean over seeds of the counted values per configuration of ``parameters`` (NaN-free rows only)."""
    rows = latest_attempts(df)
    values = metric_values(rows, metric, selection)
    rows = rows.assign(_value=values)[values.notna()]
    rows = rows.dropna(subset=parameters)
    if rows.empty:
        return pd.DataFrame(columns=[*parameters, "value", "n_seeds"])
    gid = group_ids(rows, parameters)
    grouped = rows.groupby(gid.to_numpy())
    out = grouped[parameters].first()
    out["value"] = grouped["_value"].mean()
    out["n_seeds"] = grouped["_value"].size()
    return out.reset_index(drop=True)


def _distribution(values: pd.Series) -> Any:
    import optuna

    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return optuna.distributions.CategoricalDistribution(sorted(values.astype(str).unique()))
    low, high = float(values.min()), float(values.max())
    log = low > 0 and high / low >= LOG_SPAN
    if pd.api.types.is_integer_dtype(values):
        return optuna.distributions.IntDistribution(int(low), int(high), log=log)
    return optuna.distributions.FloatDistribution(low, high, log=log)


def _study(points: pd.DataFrame, parameters: list[str], direction: str) -> Any:
    """An in-memory Optuna study: one COMPLETE trial per configuration."""
    import optuna

    dists = {p: _distribution(points[p]) for p in parameters}
    study = optuna.create_study(direction="maximize" if direction == "max" else "minimize")
    trials = []
    for row in points.itertuples(index=False):
        values = row._asdict()
        params = {
            p: str(values[p]) if isinstance(dists[p], optuna.distributions.CategoricalDistribution)
            else (int(values[p]) if isinstance(dists[p], optuna.distributions.IntDistribution) else float(values[p]))
            for p in parameters
        }  # fmt: skip
        trials.append(optuna.trial.create_trial(params=params, distributions=dists, value=float(values["value"])))
    study.add_trials(trials)
    return study


def parameter_importance(df: pd.DataFrame, metric: str, selection: str, direction: str) -> Importance:
    """Importance of each varying parameter for ``selection_metric`` (``direction``: max/min)."""
    parameters = searched_parameters(df)
    points = configuration_points(df, metric, selection, parameters) if parameters else pd.DataFrame()
    result = Importance(metric, selection, direction, parameters, points)
    if len(parameters) < 2:
        varied = f"only `{parameters[0]}` varies" if parameters else "no configuration field varies"
        result.note = f"Parameter importance: skipped, {varied} (it needs two or more searched parameters)."
        return result
    if len(points) < MIN_CONFIGURATIONS:
        result.note = (
            f"Parameter importance: skipped, {len(points)} configuration(s) with a value of `{selection}_{metric}` "
            f"(it needs {MIN_CONFIGURATIONS} or more)."
        )
        return result
    if not np.ptp(points["value"].to_numpy(dtype=float)) > 0:
        result.note = (
            f"Parameter importance: every one of the {len(points)} configurations scored "
            f"{points['value'].iloc[0]:.4g} on `{selection}_{metric}`; no parameter explains anything."
        )
        return result
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study(points, parameters, direction)
    evaluators: dict[str, Any] = {"ped_anova": optuna.importance.PedAnovaImportanceEvaluator()}
    if len(points) <= MAX_FANOVA_CONFIGURATIONS:
        evaluators = {"fanova": optuna.importance.FanovaImportanceEvaluator(seed=0), **evaluators}
    columns: dict[str, dict[str, float]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-API warnings, not news for a report reader
        for name, evaluator in evaluators.items():
            got = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
            columns[name] = {k: float(v) for k, v in got.items()}
    table = pd.DataFrame({"parameter": parameters})
    for name in ("fanova", "ped_anova"):
        table[name] = [columns.get(name, {}).get(p, math.nan) for p in parameters]
    key = "fanova" if "fanova" in columns else "ped_anova"
    result.table = table.sort_values(key, ascending=False, kind="stable").reset_index(drop=True)
    if "fanova" not in columns:
        result.note = (
            f"fANOVA skipped: {len(points)} configurations (its forest is slow beyond {MAX_FANOVA_CONFIGURATIONS})."
        )
    return result
