"""Stage 3, results: the Parquet record of a sweep (schema, atomic writes, ``load``).

``sweeper.results.load(path)`` is the public entry point for analysis in a notebook. This
package imports pyarrow (and pandas through ``to_pandas``) only: never Ray, torch, MLflow or
the other stages, so reading results needs none of the training stack.
"""

from sweeper.results.schema import (
    BASE_COLUMNS,
    BASE_FIELDS,
    CURVE_SCHEMA,
    EVAL_FACT_COLUMNS,
    SCHEMA_VERSION,
    STATUSES,
    V1_COLUMNS,
    extractor_identity,
    parse_config,
    trial_schema,
)
from sweeper.results.store import (
    atomic_write_table,
    atomic_write_text,
    latest_attempts,
    load,
    load_curves,
    load_table,
    read_sweep_meta,
    sweep_dir,
    write_curves,
    write_trial,
)

__all__ = [
    "BASE_COLUMNS",
    "BASE_FIELDS",
    "CURVE_SCHEMA",
    "EVAL_FACT_COLUMNS",
    "SCHEMA_VERSION",
    "STATUSES",
    "V1_COLUMNS",
    "atomic_write_table",
    "atomic_write_text",
    "extractor_identity",
    "latest_attempts",
    "load",
    "load_curves",
    "load_table",
    "parse_config",
    "read_sweep_meta",
    "sweep_dir",
    "trial_schema",
    "write_curves",
    "write_trial",
]
