"""What a sweep looks like in MLflow: experiment tags, run names, standard tags, the runs-table view.

Pure functions (no MLflow import), so the layout is table-tested and the recorder, the parent
run and ``sweeper ui`` agree on it. The tag names and values are MLflow 3.17's, read from its UI
bundle (``mlflow/server/js/build``):

- ``mlflow.experimentKind = custom_model_development`` marks a model-training experiment (the
  UI's "Machine learning" kind). 3.17's UI navigates by a per-browser workflow switch
  (GenAI vs Machine learning, kept in localStorage, default GenAI) and reads the kind from it,
  not from the tag; the tag is what earlier 3.x UIs and the experiment's kind selector read.
  The switch also follows the URL's ``workflowType`` parameter: ``ui_url`` sets it, so the
  link ``sweeper ui`` prints opens on the training-runs table in any browser.
- ``mlflow.sharedViewState.<key>``: a runs-table view (columns, sort) stored in the experiment;
  the URL parameter ``viewStateShareKey=<key>`` applies it. It is the only runs-table setting
  MLflow keeps in the store (column choices otherwise live in each browser's localStorage).
- ``mlflow.note.content``: the description shown on the experiment and run pages.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"
VIEW_KEY = "snsweep-trials"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
SAMPLES_KEY = "samples"
"""``log_image`` key of the sample grids: one image series per trial, stepped by iteration."""
MODEL_NAME = "generator"
MIN_IMAGE_SIDE = 256
"""Sample grids are enlarged (nearest neighbour) to at least this many pixels a side."""

RUN_NAME_LIMIT = 48
"""Varied parameters join the run name while it stays this short (the runs table's name column)."""
SCALE_IGNORED = frozenset({"none"})
"""Normalizers whose ``scale`` changes nothing (trainers.normalizers: "scale is ignored")."""
TABLE_PARAMS = ("normalizer", "scale", "lr_g", "lr_d", "n_dis", "seed")
"""Runs-table columns first, in this order, when the sweep varies them (``seed`` always)."""


def objective_column(metric: str, selection: str) -> str:
    """The per-trial objective as an MLflow metric: the metric itself when the objective is its final
    value (the runs table shows a metric's last value), ``best_M`` (the Parquet name) otherwise."""
    return metric if selection == "final" else f"best_{metric}"


def spec_hash(spec_json: dict[str, Any]) -> str:
    """12 hex digits of the resolved spec: equal hashes, equal sweeps."""
    text = json.dumps(spec_json, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def experiment_description(description: str, reproduces: str, objective: str, mode: str) -> str:
    """Markdown for the experiment page: what the sweep asks and where its answer is."""
    lines = [description.strip() or "An snsweep sweep."]
    if reproduces.strip():
        lines.append(f"Reproduces {reproduces.strip()}.")
    lines.append(
        f"Objective: `{objective}` ({mode}). One parent run per sweep (its `report/report.html` is the "
        "best-scale report); one nested run per trial attempt, named `<normalizer> c=<scale> s<seed>`, "
        "with its curves, sample grids (`samples`) and, when it completed, its generator (`generator`)."
    )
    return "\n\n".join(lines)


def experiment_tags(
    *, description: str, preset: str, spec_digest: str, version: str, objective: str, mode: str, view: dict
) -> dict[str, str]:
    return {
        EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND,
        DESCRIPTION_TAG: description,
        "snsweep.preset": preset,
        "snsweep.spec_hash": spec_digest,
        "snsweep.version": version,
        "snsweep.objective": f"{objective} ({mode})",
        VIEW_TAG: json.dumps(view, separators=(",", ":")),
    }


def _column(kind: str, key: str) -> str:
    """A runs-table column id as MLflow's UI writes it: ``params.`lr_d```."""
    return f"{kind}.`{key}`"


def table_params(varied: list[str]) -> list[str]:
    """The params worth a column: the varied ones, the paper's knobs first, and always the seed."""
    first = [k for k in TABLE_PARAMS if k in varied or k == "seed"]
    return first + [k for k in varied if k not in first]


def runs_view(varied: list[str], objective: str) -> dict[str, Any]:
    """The runs-table view: the varied params, the seed, the objective, the status, the model.

    Keys are the UI's (``selectedColumns``, ...); anything left out keeps the UI's default, and
    a user's own changes stay local to their browser. The sort stays the UI's (newest first):
    MLflow nests trials under their parent only while runs are sorted by time and unfiltered,
    so sorting by the objective (one click on its column) shows a flat list."""
    columns = [_column("params", k) for k in table_params(varied)]
    columns += [_column("metrics", objective), _column("tags", "status"), _column("attributes", "Models")]
    return {"selectedColumns": columns}


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if math.isfinite(v) else str(v)
    return str(v)


def trial_run_name(params: dict[str, Any], varied: list[str], attempt: int = 1) -> str:
    """``bsn c=2 s1``: what the trial is, then the other varied parameters while the name stays short.

    ``c=`` is left out for normalizers that ignore the scale; a retried or resumed attempt ends
    in ``a<N>``. The Tune trial id is the ``trial_id`` tag."""
    normalizer = str(params.get("normalizer", ""))
    head = [normalizer]
    if normalizer not in SCALE_IGNORED:
        head.append(f"c={_short(params.get('scale'))}")
    tail = [f"s{params.get('seed')}"] + ([f"a{attempt}"] if attempt > 1 else [])
    extras = [f"{k}={_short(params[k])}" for k in varied if k not in ("normalizer", "scale", "seed") and k in params]
    for extra in extras:
        if len(" ".join([*head, extra, *tail])) > RUN_NAME_LIMIT:
            break
        head.append(extra)
    return " ".join(head + tail)


def trial_description(
    sweep: str, number: int, trial_id: str, attempt: int, params: dict[str, Any], varied: list[str]
) -> str:
    """The run page's description: which trial of which sweep, and every varied value in full."""
    shown = [k for k in table_params(varied) if k in params]
    values = ", ".join(f"`{k}` = {params[k]}" for k in shown)
    return f"Trial {number} of sweep `{sweep}` (Tune trial `{trial_id}`, attempt {attempt}): {values}."


def source_name(argv: list[str] | None = None) -> str:
    """What ran (``mlflow.source.name``): the command line, ``sweeper run demo`` for the CLI."""
    argv = list(sys.argv if argv is None else argv)
    prog = Path(argv[0]).name if argv and argv[0] else "python"
    if prog in ("__main__.py", "sweeper", "-m"):
        prog = "sweeper"
    return " ".join([prog, *argv[1:]])[:500]


def user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers) and no USER/LOGNAME
        return os.environ.get("USER", "unknown")


def standard_tags(git_commit: str | None) -> dict[str, str]:
    """The tags MLflow's fluent API sets on its own runs; ``MlflowClient.create_run`` sets none."""
    tags = {"mlflow.user": user_name(), "mlflow.source.name": source_name(), "mlflow.source.type": "LOCAL"}
    if git_commit:
        tags["mlflow.source.git.commit"] = git_commit
    return tags


def ui_url(base: str, experiment_id: str | None, with_view: bool = True) -> str:
    """The runs table of one experiment in the model-training workflow (with the sweep's view)."""
    base = base.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    query = "workflowType=machine_learning" + (f"&viewStateShareKey={VIEW_KEY}" if with_view else "")
    return f"{base}/#/experiments/{experiment_id}/runs?{query}"
