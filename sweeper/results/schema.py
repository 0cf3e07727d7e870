"""The Parquet schemas (contract): trial-summary rows and long-format curves, versions 1 and 2.

Column types never change between files: floats are float64 even when a value happens to be
integral, so ``load`` can concatenate any files of any sweep. Metric columns (``final_M``,
``best_M``, ``best_M_step``) follow the fixed columns, one triple per metric the sweep computes.

Version 2 (this one) differs from version 1 in three ways, and ``sweeper.results.load`` upgrades
v1 files on read so analyses never see the difference:

* ``error`` is null when there is none (v1 wrote ``""``);
* the evaluation protocol is stated per row (:data:`EVAL_FACT_COLUMNS`): how many generated and
  real images the metrics used, the IS sample count and split count, and which feature extractor
  produced the numbers. Why columns and not only ``config_json``: FIDs computed with different
  sample counts or extractors are not comparable, and a reader must be able to see (and filter on)
  that without parsing JSON;
* curves carry ``sweep`` and ``attempt`` next to ``trial_id``, so curves of several sweeps or of
  retried attempts can be concatenated without losing which run a point belongs to.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 2
SCHEMA_KEY = b"snsweep_schema"
"""Parquet key-value metadata naming the schema version a file was written with."""
STATUSES = ("completed", "diverged", "stopped_early", "failed")

_V1_FIELDS: list[pa.Field] = [
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
V1_COLUMNS = [f.name for f in _V1_FIELDS]

EVAL_FACT_FIELDS: list[pa.Field] = [
    pa.field("eval_samples", pa.int64()),
    pa.field("eval_real_samples", pa.int64()),
    pa.field("is_samples", pa.int64()),
    pa.field("is_splits", pa.int64()),
    pa.field("feature_extractor", pa.string()),
]
"""Per-row evaluation protocol (v2). ``eval_samples``: generated images for FID/KID and mode
metrics; ``eval_real_samples``: real images for FID/KID statistics (the configured count; a
dataset with fewer images uses all of them); ``is_samples``/``is_splits``: the Inception Score's
generated images and splits (null when no IS is computed); ``feature_extractor``: which network
produced the image metrics (``seeded-small-v1``, ``inception-v3-tf-2015-12-05@6726825d``, both
joined by ``+``, or null for mode metrics only)."""
EVAL_FACT_COLUMNS = [f.name for f in EVAL_FACT_FIELDS]

# The fixed v2 columns, in order: v1's up to steps_done, the evaluation facts, then bookkeeping.
_SPLIT = V1_COLUMNS.index("steps_done") + 1
BASE_FIELDS: list[pa.Field] = [*_V1_FIELDS[:_SPLIT], *EVAL_FACT_FIELDS, *_V1_FIELDS[_SPLIT:]]
BASE_COLUMNS = [f.name for f in BASE_FIELDS]

CURVE_SCHEMA = pa.schema(
    [
        pa.field("sweep", pa.string()),
        pa.field("trial_id", pa.string()),
        pa.field("attempt", pa.int64()),
        pa.field("step", pa.int64()),
        pa.field("metric", pa.string()),
        pa.field("value", pa.float64()),
    ],
    metadata={SCHEMA_KEY: str(SCHEMA_VERSION).encode()},
)
V1_CURVE_COLUMNS = ["trial_id", "step", "metric", "value"]

SMALL_EXTRACTOR = "seeded-small-v1"
INCEPTION_EXTRACTOR = "inception-v3-tf-2015-12-05@6726825d"
"""Inception's identity: the graph's name and its weights' sha256 prefix, which the trainer
checks before it computes anything (other weights are refused)."""
V1_IS_SPLITS = 10
"""Version-1 trainers always split the Inception Score 10 ways, over ``eval_samples`` images."""


def trial_schema(metrics: Iterable[str]) -> pa.Schema:
    fields = list(BASE_FIELDS)
    for m in metrics:
        fields += [
            pa.field(f"final_{m}", pa.float64()),
            pa.field(f"best_{m}", pa.float64()),
            pa.field(f"best_{m}_step", pa.int64()),
        ]
    return pa.schema(fields, metadata={SCHEMA_KEY: str(SCHEMA_VERSION).encode()})


def file_version(schema: pa.Schema) -> int:
    """The schema version a file was written with: its metadata, else what its columns say."""
    meta = schema.metadata or {}
    if SCHEMA_KEY in meta:
        try:
            return int(meta[SCHEMA_KEY])
        except ValueError:
            pass
    names = set(schema.names)
    if {"trial_id", "step", "metric", "value"} <= names:  # a curves file
        return 2 if {"sweep", "attempt"} <= names else 1
    return 2 if set(EVAL_FACT_COLUMNS) <= names else 1


def v1_eval_facts(config: Mapping[str, Any]) -> dict[str, Any]:
    """The evaluation facts of a version-1 row, from its resolved config (``config_json``).

    Why this lives here and not in ``trainers``: it describes what the v1 trainers did (IS over
    ``eval_samples`` images in 10 splits), which is frozen history, and the results stage must
    read old files without importing the training stack.
    """
    metrics = [str(m) for m in config.get("metrics") or []]
    facts: dict[str, Any] = dict.fromkeys(EVAL_FACT_COLUMNS)
    n = config.get("eval_samples")
    if n is None:
        return facts
    facts["eval_samples"] = int(n)
    if any(m.startswith(("fid", "kid")) for m in metrics):
        facts["eval_real_samples"] = int(config.get("eval_real_samples") or n)
    if any(m.startswith("is") for m in metrics):
        facts["is_samples"], facts["is_splits"] = int(n), V1_IS_SPLITS
    facts["feature_extractor"] = extractor_identity(metrics)
    return facts


def extractor_identity(metrics: Iterable[str]) -> str | None:
    """Which feature extractor(s) the image metrics among ``metrics`` come from, or None."""
    names = set()
    for m in metrics:
        base = m.removesuffix("_std")
        if base in ("fid_small", "kid_small", "is_small"):
            names.add(SMALL_EXTRACTOR)
        elif base in ("fid", "kid", "is"):
            names.add(INCEPTION_EXTRACTOR)
    return "+".join(sorted(names)) or None


def parse_config(text: Any) -> dict[str, Any]:
    """``config_json`` as a dict; ``{}`` for a missing or unreadable one (never raises)."""
    if not isinstance(text, str) or not text:
        return {}
    try:
        out = json.loads(text)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}
