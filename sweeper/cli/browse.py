"""The commands that show results: ``report`` (the best-scale report), ``ui`` (the MLflow UI) and
``dashboard`` (optuna-dashboard over the sweep's Optuna study)."""

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
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless you mean it.")] = "127.0.0.1",
) -> None:
    """Open the MLflow UI over the sweeps' tracking store."""
    g = state(ctx)
    storage = storage_of(g)
    if storage.tracking_uri is None or storage.tracking_uri.startswith("http"):
        fail(f"the tracking store is {storage.tracking_uri}: open it in a browser directly")
    cmd = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", storage.tracking_uri,
        "--default-artifact-root", str(storage.artifact_root.resolve()), "--host", host, "--port", str(port),
    ]  # fmt: skip
    typer.echo(f"MLflow UI on http://{host}:{port} (Ctrl-C to stop)")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.execv(sys.executable, cmd)


def dashboard(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A sweep's name (default: every study in the storage).")] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 8080,
    host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless you mean it.")] = "127.0.0.1",
) -> None:
    """Open optuna-dashboard over the sweep's Optuna study: history, importance, parallel coordinates.

    Needs the optional extra: pip install -e '.\\[dashboard]'. NAME opens the storage its
    sweep.json names; without NAME, the storage a sweep started here would use.
    """
    g = state(ctx)

    def go() -> None:
        from sweeper import results
        from sweeper.errors import SweepError
        from sweeper.run.study import dashboard_target

        meta = results.read_sweep_meta(results.sweep_dir(g.results_dir, name)) if name else None
        target = dashboard_target(meta, storage_of(g), name)
        try:
            import optuna_dashboard
        except ImportError:
            raise SweepError(
                "optuna-dashboard is not installed: pip install -e '.[dashboard]' (or pip install optuna-dashboard)"
            ) from None
        if target.url.startswith("sqlite:///") and not Path(target.url[len("sqlite:///") :]).is_file():
            raise SweepError(f"no Optuna study database at {target.url[len('sqlite:///') :]} yet: run a sweep first")
        import optuna

        storage = optuna.storages.RDBStorage(target.url)
        page = f"http://{host}:{port}/dashboard"
        if target.name:
            try:
                page += f"/studies/{storage.get_study_id_from_name(target.name)}"
            except KeyError:
                raise SweepError(f"no study {target.name!r} in {target.shown} (deleted?)") from None
        typer.echo(f"optuna-dashboard on {page} over {target.shown} (Ctrl-C to stop)")
        try:
            optuna_dashboard.run_server(storage, host=host, port=port)
        except KeyboardInterrupt:
            pass

    guard(g, go)
