"""Stage 4, analysis: pure statistics over Parquet results, and the best-scale report.

``common`` (names, directions, settings, replicates), ``scales`` (per-scale tables, best scale per
setting), ``compare`` (SN vs BSSN), ``tables`` (failures, Table 1) are pure pandas/numpy/scipy;
``report`` assembles ``sections`` rendered by ``document`` (Markdown + HTML) with ``figures``
(matplotlib). This stage imports no Ray, no torch, no MLflow, and no other stage but
``sweeper.results``, so a report can be rebuilt anywhere the Parquet files are.
"""

from sweeper.analysis.common import (
    CORE_SETTING_COLUMNS,
    COUNTED_STATUSES,
    NON_CONFIG_COLUMNS,
    SELECTIONS,
    STATUSES,
    default_direction,
    format_mean_sem,
    format_modes,
    format_scale,
    latest_attempts,
    metric_column,
    metric_names,
    per_seed_values,
    resolve_directions,
    setting_columns,
    setting_label,
    setting_labels,
)
from sweeper.analysis.compare import compare_sn_bssn, min_sign_test_p, paired_difference, seed_warnings
from sweeper.analysis.report import pick_primary_metric, write_report
from sweeper.analysis.scales import GOOD_SCALE_RULE, best_scales, scale_table
from sweeper.analysis.tables import bin_scales, failure_table, table1, table1_values

__all__ = [
    "CORE_SETTING_COLUMNS",
    "COUNTED_STATUSES",
    "GOOD_SCALE_RULE",
    "NON_CONFIG_COLUMNS",
    "SELECTIONS",
    "STATUSES",
    "best_scales",
    "bin_scales",
    "compare_sn_bssn",
    "default_direction",
    "failure_table",
    "format_mean_sem",
    "format_modes",
    "format_scale",
    "latest_attempts",
    "metric_column",
    "metric_names",
    "min_sign_test_p",
    "paired_difference",
    "per_seed_values",
    "pick_primary_metric",
    "resolve_directions",
    "scale_table",
    "seed_warnings",
    "setting_columns",
    "setting_label",
    "setting_labels",
    "table1",
    "table1_values",
    "write_report",
]
