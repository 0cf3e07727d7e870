"""Stage 1, spec: what a sweep is. Sweep files and presets, validated before anything starts.

``load(path_or_preset)`` returns a :class:`SweepSpec` or raises :class:`SpecError` with one line
per problem. ``sweeper.spec.space`` translates a spec into what the search backends take. This
stage may import pydantic, PyYAML and ``trainers.config``/the trainers' catalogues; never Ray,
MLflow, pyarrow or the later stages (``run``, ``results``, ``analysis``, ``cli``).
"""

from sweeper.errors import SpecError
from sweeper.spec.loading import from_data, json_schema, load, parse, preset_names, preset_text, resolve_source
from sweeper.spec.params import Choice, Grid, IntRange, LogUniform, Param, Uniform, bounds_of, values_of
from sweeper.spec.points import grid_points
from sweeper.spec.schema import SAMPLERS, SECTIONS, Objective, Resources, Scheduler, Search, SweepSpec
from sweeper.spec.text import is_finite_number

__all__ = [
    "SAMPLERS",
    "SECTIONS",
    "Choice",
    "Grid",
    "IntRange",
    "LogUniform",
    "Objective",
    "Param",
    "Resources",
    "Scheduler",
    "Search",
    "SpecError",
    "SweepSpec",
    "Uniform",
    "bounds_of",
    "from_data",
    "grid_points",
    "is_finite_number",
    "json_schema",
    "load",
    "parse",
    "preset_names",
    "preset_text",
    "resolve_source",
    "values_of",
]
