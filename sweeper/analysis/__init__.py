"""Stage 4, analysis: pure statistics over Parquet results, and the best-scale report.

``settings`` (latest attempts; settings keyed on the training configuration alone), ``common``
(names, directions, formatting, replicates), ``scales`` (per-scale tables with lost seeds, best
scale per setting under the survivorship rule, how often the choice repeats), ``compare`` (SN vs
BSSN: paired at c = 1, tuned on held-out seeds), ``headline`` (the report's first screen, as
data), ``tables`` (failures, Table 1) are pure pandas/numpy/scipy; ``report`` assembles
``sections`` rendered by ``document`` (Markdown + HTML) with ``figures`` (matplotlib). This stage
imports no Ray, no torch, no MLflow, and no other stage but ``sweeper.results``, so a report can be
rebuilt anywhere the Parquet files are.
"""

from sweeper.analysis.common import (
    COUNTED_STATUSES,
    SELECTIONS,
    STATUSES,
    default_direction,
    format_mean_sem,
    format_modes,
    format_scale,
    metric_column,
    metric_names,
    resolve_directions,
)
from sweeper.analysis.compare import (
    HELDOUT_RULE,
    compare_sn_bssn,
    heldout_difference,
    min_sign_test_p,
    paired_difference,
    seed_warnings,
)
from sweeper.analysis.headline import headline, headline_lines, read_headline, report_headline_lines
from sweeper.analysis.report import pick_primary_metric, write_report
from sweeper.analysis.scales import (
    GOOD_SCALE_RULE,
    REPEAT_RULE,
    SURVIVOR_RULE,
    best_scales,
    per_seed_values,
    scale_table,
)
from sweeper.analysis.settings import (
    CORE_SETTING_COLUMNS,
    NOT_SETTING_FIELDS,
    SETTING_RULE,
    latest_attempts,
    setting_columns,
    setting_label,
    setting_labels,
)
from sweeper.analysis.tables import bin_scales, failure_table, table1, table1_values

__all__ = [
    "CORE_SETTING_COLUMNS",
    "COUNTED_STATUSES",
    "GOOD_SCALE_RULE",
    "HELDOUT_RULE",
    "NOT_SETTING_FIELDS",
    "REPEAT_RULE",
    "SELECTIONS",
    "SETTING_RULE",
    "STATUSES",
    "SURVIVOR_RULE",
    "best_scales",
    "bin_scales",
    "compare_sn_bssn",
    "default_direction",
    "failure_table",
    "format_mean_sem",
    "format_modes",
    "format_scale",
    "headline",
    "headline_lines",
    "heldout_difference",
    "latest_attempts",
    "metric_column",
    "metric_names",
    "min_sign_test_p",
    "paired_difference",
    "per_seed_values",
    "pick_primary_metric",
    "read_headline",
    "report_headline_lines",
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
