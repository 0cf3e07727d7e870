"""The Parquet schemas (contract): trial-summary rows and long-format curves.

Column types never change between files: floats are float64 even when a value happens to be
integral, so ``load`` can concatenate any files of any sweep. Metric columns (``final_M``,
``best_M``, ``best_M_step``) follow the fixed columns, one triple per metric the sweep computes.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

SCHEMA_VERSION = 1
STATUSES = ("completed", "diverged", "stopped_early", "failed")

# The fixed v1 columns, in order. Metric columns (final_M, best_M, best_M_step) follow.
BASE_FIELDS: list[pa.Field] = [
    pa.field("sweep", pa.string()),
    pa.field("trial_id", pa.string()),
    pa.field("attempt", pa.int64()),
    pa.field("status", pa.string()),
    pa.field("error", pa.string()),
    pa.field("error_log", pa.string()),  # the failed attempt's traceback file, relative to the sweep dir
    pa.field("dataset", pa.string()),
    pa.field("model", pa.string()),
    pa.field("normalizer", pa.string()),
    pa.field("scale", pa.float64()),
    pa.field("lr_g", pa.float64()),
    pa.field("lr_d", pa.float64()),
    pa.field("beta1", pa.float64()),
    pa.field("beta2", pa.float64()),
    pa.field("n_dis", pa.int64()),
    pa.field("batch_size", pa.int64()),
    pa.field("seed", pa.int64()),
    pa.field("iterations", pa.int64()),
    pa.field("steps_done", pa.int64()),
    pa.field("wall_seconds", pa.float64()),
    pa.field("started_at", pa.timestamp("us", tz="UTC")),
    pa.field("finished_at", pa.timestamp("us", tz="UTC")),
    pa.field("host", pa.string()),
    pa.field("mlflow_run_id", pa.string()),
    pa.field("config_json", pa.string()),
]
BASE_COLUMNS = [f.name for f in BASE_FIELDS]
CURVE_SCHEMA = pa.schema(
    [
        pa.field("trial_id", pa.string()),
        pa.field("step", pa.int64()),
        pa.field("metric", pa.string()),
        pa.field("value", pa.float64()),
    ]
)


def trial_schema(metrics: Iterable[str]) -> pa.Schema:
    fields = list(BASE_FIELDS)
    for m in metrics:
        fields += [
            pa.field(f"final_{m}", pa.float64()),
            pa.field(f"best_{m}", pa.float64()),
            pa.field(f"best_{m}_step", pa.int64()),
        ]
    return pa.schema(fields, metadata={"snsweep_schema": str(SCHEMA_VERSION)})
