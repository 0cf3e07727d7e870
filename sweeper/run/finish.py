"""The end of a session: the ledger check, the report, the MLflow parent run, sweep.json's state.

Every finish checks the ledger: a sweep is ``finished`` in sweep.json only when every trial of
its spec is recorded; otherwise the outcome lists what is missing (the CLI prints it and exits 1)
and ``sweeper resume`` continues it. The report is written either way (it says what it has).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweeper import results
from sweeper.run import faults
from sweeper.run.ledger import Ledger
from sweeper.run.meta import directions_for, end_session
from sweeper.spec import SweepSpec


@dataclass
class SweepOutcome:
    name: str
    sweep_path: Path
    counts: dict[str, int]
    report_path: Path | None
    best: dict[str, Any] | None
    parent_run_id: str | None
    failed_fraction: float
    timings: dict[str, float] = field(default_factory=dict)
    """Wall seconds per phase: ray_start, tracking_setup, trials, finish (report + MLflow drain)."""
    expected: int = 0
    recorded: int = 0
    missing: list[str] = field(default_factory=list)
    """What the ledger lacks, one line per trial (empty when the sweep is complete)."""
    study: str | None = None
    """How to open the sweep's Optuna study (None: it keeps none)."""

    @property
    def complete(self) -> bool:
        return not self.missing


def finish_sweep(
    spec: SweepSpec,
    sweep_path: Path,
    tracker: Any,
    parent: Any,
    ledger: Ledger,
    progress: Callable[[str], None],
    relink: Callable[[], int] | None = None,
) -> SweepOutcome:
    df = results.latest_attempts(results.load(sweep_path)) if (sweep_path / "trials").is_dir() else None
    counts = df["status"].value_counts().to_dict() if df is not None and not df.empty else {}
    n = max(sum(counts.values()), 1)
    failed_fraction = counts.get("failed", 0) / n
    report_path = None
    if df is not None and not df.empty:
        try:
            from sweeper.analysis.report import write_report

            report_path = write_report(
                results.load(sweep_path),
                results.load_curves(sweep_path),
                sweep_path / "report",
                directions=directions_for(spec.train_metrics),
                title=f"Sweep {spec.name}",
                primary_metric=spec.objective.metric,
                selection=spec.objective.selection,
            )
        except Exception as e:  # noqa: BLE001 - the results are safe on disk; the report can be re-run
            progress(f"report failed ({type(e).__name__}: {e}); rerun `sweeper report {spec.name}`")
    faults.point("report")  # the report is written; MLflow and sweep.json are not final yet
    best = best_configuration(df, spec) if df is not None else None
    if tracker is not None and parent is not None:
        if report_path is not None:
            tracker.log_artifact(parent, report_path.parent, "report")
        status = "failed" if failed_fraction > spec.allowed_failure_fraction else "completed"
        tracker.set_tags(parent, {"status": status if ledger.complete else "incomplete"})
        tracker.log_metrics(parent, {f"trials_{k}": float(v) for k, v in counts.items()}, step=0)
        tracker.log_text(parent, json.dumps(trial_runs(df), indent=2), "trials.json")
        tracker.end_run(parent, "FINISHED" if ledger.complete else "KILLED")
        tracker.close("KILLED")
        if not tracker.drain(timeout_s=120, progress=progress):
            progress(f"warning: {tracker.pending} MLflow calls could not be delivered ({tracker.last_error})")
        if relink is not None:
            relink()
        meta = results.read_sweep_meta(sweep_path)
        if parent.run_id and meta.get("mlflow_parent_run_id") != parent.run_id:
            meta["mlflow_parent_run_id"] = parent.run_id  # MLflow was down when the sweep started
            results.atomic_write_text(json.dumps(meta, indent=2, default=str), sweep_path / "sweep.json")
    end_session(sweep_path, ledger)
    return SweepOutcome(
        name=spec.name,
        sweep_path=sweep_path,
        counts=counts,
        report_path=report_path,
        best=best,
        parent_run_id=parent.run_id if parent else None,
        failed_fraction=failed_fraction,
        expected=ledger.spec_trials,
        recorded=ledger.recorded,
        missing=[] if ledger.complete else ledger.missing_lines(),
    )


def trial_runs(df: Any) -> dict[str, dict[str, Any]]:
    """trial id -> the MLflow run of its latest attempt (the one the parent run links to)."""
    if df is None or df.empty:
        return {}
    return {
        str(r["trial_id"]): {"run_id": r.get("mlflow_run_id"), "attempt": int(r["attempt"]), "status": r["status"]}
        for r in df.to_dict("records")
    }


def best_configuration(df: Any, spec: SweepSpec) -> dict[str, Any] | None:
    """The searched configuration with the best mean objective over its seeds."""
    col = f"{spec.objective.selection}_{spec.objective.metric}"
    if df.empty or col not in df:
        return None
    ok = df[df["status"].isin(["completed", "stopped_early"]) & df[col].notna()]
    if ok.empty:
        return None
    keys = [k for k in spec.parameters if k in ok.columns] or ["normalizer"]
    stats = ok.groupby(keys, dropna=False)[col].agg(["mean", "sem", "count"]).reset_index()
    stats = stats.sort_values("mean", ascending=spec.metric_mode == "min")
    top = stats.iloc[0]
    return {
        "params": {k: _plain(top[k]) for k in keys},
        "metric": spec.objective.metric,
        "selection": spec.objective.selection,
        "mean": float(top["mean"]),
        "sem": float(top["sem"]) if top["count"] > 1 else float("nan"),
        "n_seeds": int(top["count"]),
    }


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v
