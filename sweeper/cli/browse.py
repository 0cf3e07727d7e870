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
        from sweeper.analysis.headline import report_headline_lines
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
        selection = next((m["objective"].get("selection", "final") for m in metas if m.get("objective")), "final")
        dest = out or (paths[0] / "report" if len(paths) == 1 and (paths[0] / "trials").is_dir() else
                       g.results_dir / "report")  # fmt: skip
        path = write_report(
            trials, results.load_curves(paths), dest, directions=directions,
            title=", ".join(m.get("name", "") for m in metas if m) or "snsweep report", primary_metric=primary,
            selection=selection,
        )  # fmt: skip
        typer.echo(f"report: {path}")
        typer.echo(f"        {path.parent / 'report.html'}")
        typer.echo(f"table:  {path.parent / 'best_scales.parquet'}")
        for line in report_headline_lines(path.parent):
            typer.echo(line)

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
    if not 0 < port < 65536:
        fail(f"--port must be between 1 and 65535, got {port}")
    uri, artifacts = find_store(g)
    if uri.startswith("http"):
        fail(f"the tracking store is the MLflow server {uri}: open it in a browser directly")
    from sweeper.run.mlflow_layout import ui_url
    from sweeper.run.tracking import sweep_experiments

    found = sweep_experiments(uri)
    if sweep is not None and sweep not in dict(found):
        known = ", ".join(name for name, _ in found) or "none yet"
        fail(f"no sweep {sweep!r} in the MLflow store {uri} (sweeps there: {known})")
    base = f"http://{host}:{port}"
    cmd = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
        "--default-artifact-root", str(artifacts), "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    typer.echo(f"MLflow UI over {uri} on {base} (Ctrl-C to stop)")
    if found:
        name, experiment_id = next((f for f in found if f[0] == sweep), found[0])
        typer.echo(f"sweep {name}, its trials: {ui_url(base, experiment_id)}")
    else:
        typer.echo(f"no sweeps in {uri} yet: `sweeper run` makes one")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # GenAI jobs: 10 processes, 2 GiB
    sys.stdout.flush()
    os.execv(sys.executable, cmd)


def find_store(g: Globals) -> tuple[str, Path]:
    """The MLflow store to show: --tracking-uri, $MLFLOW_TRACKING_URI, ./mlflow.db, or the one the
    sweeps under --results-dir recorded. Never an empty new one (``mlflow ui`` would create it)."""
    from sweeper import results
    from sweeper.run.storage import default_storage

    if g.tracking_uri == "none":
        fail("--tracking-uri none disables tracking: there is no MLflow store to show")
    given = g.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if given:
        storage = default_storage(g.results_dir, given)
        if given.startswith("sqlite:///") and not Path(given[len("sqlite:///") :]).is_file():
            source = "--tracking-uri" if g.tracking_uri else "$MLFLOW_TRACKING_URI"
            fail(f"no MLflow store at {given} ({source}): the file does not exist; run a sweep with it first")
        return given, storage.artifact_root.resolve()
    local = Path("mlflow.db").resolve()
    if local.is_file():
        return f"sqlite:///{local}", default_storage(g.results_dir, f"sqlite:///{local}").artifact_root.resolve()
    found: dict[str, Path] = {}
    for meta_path in sorted(Path(g.results_dir).glob("*/sweep.json")):
        meta = results.read_sweep_meta(meta_path.parent)
        uri = meta.get("tracking_uri")
        if uri and (not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///") :]).is_file()):
            found.setdefault(uri, Path(meta.get("artifact_root") or default_storage(None, uri).artifact_root))
    if len(found) == 1:
        return next(iter(found.items()))
    if len(found) > 1:
        fail(
            f"the sweeps under {g.results_dir} use {len(found)} MLflow stores ({', '.join(found)}); "
            "pick one with `sweeper --tracking-uri URI ui`"
        )
    fail(
        f"no MLflow store found: looked for {local}, $MLFLOW_TRACKING_URI (unset) and the stores recorded by "
        f"sweeps under {Path(g.results_dir).resolve()} (none); run a sweep first, or point at a store with "
        "`sweeper --tracking-uri sqlite:///PATH/mlflow.db ui` (or `sweeper --results-dir DIR ui`)"
    )
    raise AssertionError  # fail() exits


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
