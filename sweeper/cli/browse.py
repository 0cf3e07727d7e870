"""The commands that show results: ``report`` (the best-scale report) and ``ui`` (the MLflow UI)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from sweeper.cli.context import Globals, fail, guard, state, storage_of


def report(
    ctx: typer.Context,
    target: Annotated[
        list[str] | None, typer.Argument(help="Sweep names or result paths (default: every sweep).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <sweep>/report).")] = None,
) -> None:
    """Write the best-scale report (report.md, report.html, best_scales.parquet) from Parquet results."""
    g = state(ctx)

    def go() -> None:
        from sweeper import results
        from sweeper.analysis.report import write_report
        from sweeper.run.meta import directions_for

        paths = [_resolve_target(g, t) for t in (target or [str(g.results_dir)])]
        trials = results.load(paths)
        if trials.empty:
            raise FileNotFoundError(f"no trial results under {', '.join(map(str, paths))}")
        metas = [results.read_sweep_meta(p) for p in paths]
        metric_names = sorted({c[len("final_") :] for c in trials.columns if c.startswith("final_")})
        directions = directions_for(metric_names)
        for m in metas:
            directions.update(m.get("directions", {}))
        primary = next((m["objective"]["metric"] for m in metas if m.get("objective")), None)
        dest = out or (paths[0] / "report" if len(paths) == 1 and (paths[0] / "trials").is_dir() else
                       g.results_dir / "report")  # fmt: skip
        path = write_report(
            trials, results.load_curves(paths), dest, directions=directions,
            title=", ".join(m.get("name", "") for m in metas if m) or "snsweep report", primary_metric=primary,
        )  # fmt: skip
        typer.echo(f"report: {path}")
        typer.echo(f"        {path.parent / 'report.html'}")
        typer.echo(f"table:  {path.parent / 'best_scales.parquet'}")

    guard(g, go)


def _resolve_target(g: Globals, target: str) -> Path:
    p = Path(target)
    if p.exists():
        return p
    if (g.results_dir / target).exists():
        return g.results_dir / target
    raise FileNotFoundError(f"no sweep or results path {target!r} (looked in ./ and {g.results_dir}/)")


def ui(
    ctx: typer.Context,
    sweep: Annotated[str | None, typer.Argument(help="The sweep to open (default: the latest).")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless you mean it.")] = "127.0.0.1",
) -> None:
    """Open the MLflow UI over the sweeps' tracking store, on a sweep's training-runs table.

    The printed link opens MLflow's model-training view of the sweep's experiment: the runs
    table with the parent run and its nested trials, the swept parameters and the objective as
    columns. One server worker and no GenAI job runner: a local UI for one person."""
    g = state(ctx)
    storage = storage_of(g)
    if storage.tracking_uri is None or storage.tracking_uri.startswith("http"):
        fail(f"the tracking store is {storage.tracking_uri}: open it in a browser directly")
    from sweeper.run.mlflow_layout import ui_url
    from sweeper.run.tracking import sweep_experiments

    found = sweep_experiments(storage.tracking_uri)
    if sweep is not None and sweep not in dict(found):
        known = ", ".join(name for name, _ in found) or "none yet"
        fail(f"no sweep {sweep!r} in the MLflow store {storage.tracking_uri} (sweeps there: {known})")
    base = f"http://{host}:{port}"
    cmd = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", storage.tracking_uri,
        "--default-artifact-root", str(storage.artifact_root.resolve()), "--host", host, "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    typer.echo(f"MLflow UI on {base} (Ctrl-C to stop)")
    if found:
        name, experiment_id = next((f for f in found if f[0] == sweep), found[0])
        typer.echo(f"sweep {name}, its trials: {ui_url(base, experiment_id)}")
    else:
        typer.echo(f"no sweeps in {storage.tracking_uri} yet: `sweeper run` makes one")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # GenAI jobs: 10 processes, 2 GiB
    sys.stdout.flush()
    os.execv(sys.executable, cmd)
