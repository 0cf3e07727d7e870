"""The ``sweeper`` command line.

Heavy imports (torch, Ray, MLflow) happen inside commands so ``--help`` is
instant. User errors end in one ``error: ...`` line per problem and exit code 2;
``--debug`` shows the traceback instead. Exit code 1 means a sweep ran but more
trials failed than its ``allowed_failure_fraction``.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="Hyperparameter sweeps for GAN normalization research (SN, BSSN) on Ray Tune, Optuna and MLflow.",
    pretty_exceptions_enable=False,
)


@dataclass
class Globals:
    results_dir: Path
    tracking_uri: str | None
    address: str | None
    debug: bool


def _state(ctx: typer.Context) -> Globals:
    return ctx.obj


@app.callback()
def main_options(
    ctx: typer.Context,
    results_dir: Annotated[Path, typer.Option(help="Where Parquet results and reports go.")] = Path("results"),
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI (default: sqlite:///./mlflow.db; 'none' disables tracking)."),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start a local Ray on 127.0.0.1).")
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show full tracebacks.")] = False,
) -> None:
    ctx.obj = Globals(results_dir, tracking_uri, address or os.environ.get("SNSWEEP_RAY_ADDRESS"), debug)


def _fail(lines: list[str] | str, code: int = 2) -> None:
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def _guard(g: Globals, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; user errors become one line each and exit code 2."""
    from sweeper.errors import UserError
    from trainers.config import ConfigError

    try:
        return fn()
    except typer.Exit:
        raise
    except UserError as e:
        if g.debug:
            raise
        _fail(e.lines)
    except (ConfigError, FileNotFoundError) as e:
        if g.debug:
            raise
        _fail(str(e))


def _storage(g: Globals):  # -> Storage
    from sweeper.run.storage import default_storage

    storage = default_storage(g.results_dir, None if g.tracking_uri == "none" else g.tracking_uri)
    if g.tracking_uri == "none":
        storage.tracking_uri = None
    return storage


def _say(line: str) -> None:
    typer.echo(line)


# --- sweeps ----------------------------------------------------------------------------------------
SpecArg = Annotated[str | None, typer.Argument(help="A sweep YAML file or a preset name (default: demo).")]


@app.command()
def run(
    ctx: typer.Context,
    spec: SpecArg = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing results of this sweep.")] = False,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for a local Ray (default: all).")] = None,
    dashboard: Annotated[bool, typer.Option(help="Start the Ray dashboard (on 127.0.0.1).")] = False,
    resume_if_exists: Annotated[
        bool, typer.Option(help="Resume the sweep if its state exists (what submitted jobs do).")
    ] = False,
) -> None:
    """Run a sweep: local Ray by default, or on --address."""
    g = _state(ctx)

    def go() -> None:
        from sweeper import spec as specmod
        from sweeper.errors import SweepError
        from sweeper.run.sweep import restorable

        s = specmod.load(spec)
        resume = False
        if resume_if_exists:
            if overwrite:
                raise SweepError("--resume-if-exists and --overwrite contradict each other; pick one")
            resume = restorable(s, g.results_dir)
        _run(g, s, overwrite=overwrite, resume=resume, num_cpus=num_cpus, dashboard=dashboard)

    _guard(g, go)


@app.command()
def resume(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The sweep's name.")]) -> None:
    """Continue a sweep after an interruption (a dead driver): Optuna's state and checkpoints are kept."""
    g = _state(ctx)

    def go() -> None:
        from sweeper import results
        from sweeper import spec as specmod
        from sweeper.spec import SpecError

        meta = results.read_sweep_meta(results.sweep_dir(g.results_dir, name))
        if not meta:
            raise SpecError([f"no sweep {name!r} under {g.results_dir} (no sweep.json); see `sweeper status`"])
        spec = specmod.from_data(meta["spec"], f"{name}/sweep.json")
        if g.tracking_uri is None and meta.get("tracking_uri"):
            g.tracking_uri = meta["tracking_uri"]
        _run(g, spec, overwrite=False, resume=True, num_cpus=None, dashboard=False)

    _guard(g, go)


def _run(g: Globals, spec_arg: Any, *, overwrite: bool, resume: bool, num_cpus: int | None, dashboard: bool) -> None:
    from sweeper import spec as specmod
    from sweeper.run.sweep import run_sweep

    spec = spec_arg if isinstance(spec_arg, specmod.SweepSpec) else specmod.load(spec_arg)
    outcome = run_sweep(
        spec, _storage(g), address=g.address, resume=resume, overwrite=overwrite,
        num_cpus=num_cpus, dashboard=dashboard, progress=_say,
    )  # fmt: skip
    counts = ", ".join(f"{v} {k}" for k, v in sorted(outcome.counts.items()))
    t = outcome.timings
    took = (
        f" in {sum(t.values()):.0f} s (Ray start {t['ray_start']:.1f} s, trials {t['trials']:.0f} s, "
        f"report {t['finish']:.1f} s)"
        if {"ray_start", "trials", "finish"} <= t.keys()
        else ""
    )
    _say(f"\nsweep {outcome.name} finished{took}: {counts}")
    if outcome.best:
        b = outcome.best
        sem = f" ± {b['sem']:.3g}" if math.isfinite(b["sem"]) else ""
        params = ", ".join(f"{k}={_short(v)}" for k, v in b["params"].items())
        _say(f"best configuration: {params}")
        _say(f"  {b['selection']} {b['metric']} = {b['mean']:.4g}{sem} over {b['n_seeds']} seeds")
    if outcome.report_path:
        _say(f"report: {outcome.report_path}")
    _say(f"results: {outcome.sweep_path}/trials/*.parquet  (sweeper.results.load('{outcome.sweep_path}'))")
    if g.tracking_uri != "none":
        _say("browse the trials: sweeper ui")
    if outcome.failed_fraction > spec.allowed_failure_fraction:
        _say(f"{outcome.failed_fraction:.0%} of trials failed (allowed {spec.allowed_failure_fraction:.0%})")
        raise typer.Exit(1)


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def submit(
    ctx: typer.Context,
    spec: Annotated[str, typer.Argument(help="A sweep YAML file or a preset name.")],
    address: Annotated[
        str | None, typer.Option(help="The cluster's Ray dashboard, e.g. http://HEAD:8265.")
    ] = None,
    results_dir: Annotated[
        Path | None, typer.Option(help="Absolute results path on the cluster (shared storage).")
    ] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the job to end and print its logs.")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: seconds to wait.")] = 24 * 3600.0,
) -> None:
    """Submit a sweep to a Ray cluster as a Ray Job (--address http://HEAD:8265).

    --results-dir must be an absolute path on the cluster (shared storage). Extra
    arguments after the spec are passed to `sweeper run` in the job (e.g. --overwrite).
    """
    g = _state(ctx)

    def go() -> None:
        from sweeper.cli import cluster

        target = address or g.address or os.environ.get("RAY_ADDRESS")
        if not target:
            _fail("sweeper submit needs --address http://HEAD:8265 (the Ray dashboard of the cluster)")
        job = cluster.submit(
            spec, target, results_dir=str(results_dir or g.results_dir), tracking_uri=g.tracking_uri,
            extra_args=list(ctx.args),
        )  # fmt: skip
        typer.echo(f"submitted job {job}")
        typer.echo(f"follow it: {cluster.follow_hint(target, job)}")
        typer.echo(f"status:    sweeper --address {target} status --job {job}")
        if wait:
            state = cluster.wait(target, job, timeout_s=timeout)
            typer.echo(cluster.job_logs(target, job))
            typer.echo(f"job {job}: {state}")
            if state != "SUCCEEDED":
                raise typer.Exit(1)

    _guard(g, go)


@app.command()
def validate(
    ctx: typer.Context,
    spec: Annotated[str, typer.Argument(help="A sweep YAML file or a preset name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Check a sweep file without running it: trials, parameters, resources, problems."""
    g = _state(ctx)

    def go() -> None:
        from sweeper import spec as specmod

        s = specmod.load(spec)
        summary = {
            "name": s.name,
            "trials": s.n_trials,
            "configurations": s.n_configurations,
            "seeds": s.seeds,
            "parameters": s.parameters,
            "sampler": s.search.sampler,
            "objective": {"metric": s.objective.metric, "mode": s.metric_mode, "selection": s.objective.selection},
            "resources": s.resources.model_dump(),
        }
        if as_json:
            typer.echo(json.dumps(summary))
            return
        typer.echo(f"{s.name}: ok")
        typer.echo(f"  trials: {s.n_trials} ({s.n_configurations} configurations x {len(s.seeds)} seeds)")
        typer.echo(f"  parameters: {', '.join(s.parameters) or '(none)'}; sampler {s.search.sampler}")
        typer.echo(f"  objective: {s.objective.selection} {s.objective.metric} ({s.metric_mode})")
        r = s.resources
        typer.echo(f"  resources per trial: {r.cpus_per_trial:g} CPU, {r.gpus_per_trial:g} GPU, {r.workers} worker(s)")

    _guard(g, go)


@app.command()
def presets(ctx: typer.Context) -> None:
    """List the built-in sweeps (the paper's, and demo) with their trial counts."""
    g = _state(ctx)

    def go() -> None:
        from sweeper import spec as specmod

        for name in specmod.preset_names():
            s = specmod.load(name)
            cost = s.n_iterations
            what = s.reproduces or s.description
            typer.echo(f"{name:24s} {s.n_trials:5d} trials  {cost:>14,d} iterations  {what}")

    _guard(g, go)


@app.command()
def schema() -> None:
    """Print the JSON Schema of sweep files (for editors)."""
    from sweeper.spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@app.command()
def normalizers() -> None:
    """List the normalizers with a one-line description and the paper section."""
    from trainers.normalizers import METHODS

    for name, info in METHODS.items():
        typer.echo(f"{name:16s} {info.description}  [{info.paper}]")


@app.command()
def report(
    ctx: typer.Context,
    target: Annotated[
        list[str] | None, typer.Argument(help="Sweep names or result paths (default: every sweep).")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <sweep>/report).")] = None,
) -> None:
    """Write the best-scale report (report.md, report.html, best_scales.parquet) from Parquet results."""
    g = _state(ctx)

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

    _guard(g, go)


def _resolve_target(g: Globals, target: str) -> Path:
    p = Path(target)
    if p.exists():
        return p
    if (g.results_dir / target).exists():
        return g.results_dir / target
    raise FileNotFoundError(f"no sweep or results path {target!r} (looked in ./ and {g.results_dir}/)")


@app.command()
def status(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A sweep name (default: all).")] = None,
    job: Annotated[str | None, typer.Option(help="Also show this Ray Job's state (needs --address).")] = None,
) -> None:
    """Show sweeps and their trials: completed, diverged, stopped early, failed."""
    g = _state(ctx)

    def go() -> None:
        from sweeper import results

        if job:
            from sweeper.cli import cluster

            address = g.address or os.environ.get("RAY_ADDRESS")
            if not address:
                _fail("--job needs --address http://HEAD:8265")
            typer.echo(f"job {job}: {cluster.job_status(address, job)} {cluster.job_message(address, job)}".rstrip())
            if name is None:
                return

        root = g.results_dir
        names = [name] if name else sorted(p.name for p in root.glob("*") if (p / "sweep.json").exists())
        if not names:
            typer.echo(f"no sweeps under {root}")
            return
        for n in names:
            path = results.sweep_dir(root, n)
            meta = results.read_sweep_meta(path)
            if not meta:
                raise FileNotFoundError(f"no sweep {n!r} under {root}")
            df = results.latest_attempts(results.load(path)) if (path / "trials").exists() else None
            counts = df["status"].value_counts().to_dict() if df is not None and not df.empty else {}
            done = sum(counts.values())
            shown = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "none finished"
            typer.echo(
                f"{n}: {done}/{meta.get('trials', '?')} trials finished ({shown}); started {meta.get('started_at')}"
            )

    _guard(g, go)


@app.command()
def ui(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to bind; keep 127.0.0.1 unless you mean it.")] = "127.0.0.1",
) -> None:
    """Open the MLflow UI over the sweeps' tracking store."""
    g = _state(ctx)
    storage = _storage(g)
    if storage.tracking_uri is None or storage.tracking_uri.startswith("http"):
        _fail(f"the tracking store is {storage.tracking_uri}: open it in a browser directly")
    cmd = [
        sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", storage.tracking_uri,
        "--default-artifact-root", str(storage.artifact_root.resolve()), "--host", host, "--port", str(port),
    ]  # fmt: skip
    typer.echo(f"MLflow UI on http://{host}:{port} (Ctrl-C to stop)")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.execv(sys.executable, cmd)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
