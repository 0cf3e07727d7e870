"""The commands that run sweeps: ``run``, ``resume``, ``submit`` (a Ray Job on a cluster)."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from sweeper.cli.context import NO_DATA_HELP, Globals, fail, guard, say, state, storage_of

SpecArg = Annotated[str | None, typer.Argument(help="A sweep YAML file or a preset name (default: demo).")]


# Parsed here, not by click: a bad value must be one `error:` line, not a usage box.
CpusOpt = Annotated[str | None, typer.Option(metavar="N", help="CPUs for a local Ray (default: all).")]
DashboardOpt = Annotated[bool, typer.Option(help="Start the Ray dashboard (on 127.0.0.1).")]


def run(
    ctx: typer.Context,
    spec: SpecArg = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing results of this sweep.")] = False,
    num_cpus: CpusOpt = None,
    dashboard: DashboardOpt = False,
    resume_if_exists: Annotated[
        bool, typer.Option(help="Resume the sweep if its state exists (what submitted jobs do).")
    ] = False,
    no_data: Annotated[bool, typer.Option("--no-data", help=NO_DATA_HELP)] = False,
) -> None:
    """Run a sweep: local Ray by default, or on --address.

    Before Ray starts or anything is written, every input the sweep can give a trial is checked
    (as `sweeper validate` does); a problem ends the command with one line per problem.
    """
    g = state(ctx)

    def go() -> None:
        from sweeper import spec as specmod
        from sweeper.errors import SweepError

        cpus = _check_cpus(num_cpus)
        if resume_if_exists and overwrite:
            raise SweepError("--resume-if-exists and --overwrite contradict each other; pick one")
        label, text = specmod.resolve_source(spec)
        s = specmod.parse(text, label)
        _preflight(s, label, no_data)
        from sweeper.run.sweep import existing_sweep  # imports Ray: only once the inputs are known good

        resume = resume_if_exists and existing_sweep(s, g.results_dir)
        if resume and _already_finished(g, s):
            return
        _run(g, s, overwrite=overwrite, resume=resume, num_cpus=cpus, dashboard=dashboard)

    guard(g, go)


def resume(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The sweep's name.")],
    num_cpus: CpusOpt = None,
    dashboard: DashboardOpt = False,
    retry_failed: Annotated[
        bool, typer.Option(help="Also run the failed trials again (after fixing what made them fail).")
    ] = False,
    no_data: Annotated[bool, typer.Option("--no-data", help=NO_DATA_HELP)] = False,
) -> None:
    """Continue a sweep after an interruption (a dead driver) until every trial of its spec is recorded."""
    g = state(ctx)

    def go() -> None:
        from sweeper import results
        from sweeper import spec as specmod
        from sweeper.spec import SpecError

        cpus = _check_cpus(num_cpus)
        if not NAME.fullmatch(name):
            raise SpecError([f"no sweep named {name!r}: sweep names are letters, digits, '_', '.', '-'"])
        meta = results.read_sweep_meta(results.sweep_dir(g.results_dir, name))
        if not meta:
            raise SpecError([f"no sweep {name!r} under {g.results_dir} (no sweep.json); see `sweeper status`"])
        spec = specmod.from_data(meta["spec"], f"{name}/sweep.json")
        if g.tracking_uri is None and meta.get("tracking_uri"):
            g.tracking_uri = meta["tracking_uri"]
        if _already_finished(g, spec, retry_failed):
            return
        _preflight(spec, f"{name}/sweep.json", no_data)  # the data may have moved since the sweep started
        _run(g, spec, overwrite=False, resume=True, num_cpus=cpus, dashboard=dashboard, retry_failed=retry_failed)

    guard(g, go)


def _preflight(spec: Any, label: str, no_data: bool) -> None:
    """Every input the sweep can give a trial, checked before Ray starts or anything is written."""
    from sweeper.spec import preflight

    preflight.check(spec, label, files=not no_data)  # silent when the inputs are good
    if no_data:
        say("inputs: file checks skipped (--no-data); a trial that finds bad data stops the sweep")


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")


def _check_cpus(num_cpus: str | None) -> int | None:
    from sweeper.errors import SweepError

    if num_cpus is None:
        return None
    try:
        n = int(num_cpus)
    except ValueError:
        n = 0
    if n < 1 or str(n) != num_cpus.strip().lstrip("+"):
        raise SweepError(f"--num-cpus must be a whole number of at least 1, got {num_cpus!r}; leave it out to use "
                         "every CPU")  # fmt: skip
    return n


def _already_finished(g: Globals, spec: Any, retry_failed: bool = False) -> bool:
    """A finished sweep (every trial recorded, and with ``retry_failed`` none failed): say so, start nothing."""
    from sweeper import results
    from sweeper.run import ledger
    from sweeper.run.meta import FINISHED

    path = results.sweep_dir(g.results_dir, spec.name)
    meta = results.read_sweep_meta(path)
    if meta.get("state") != FINISHED:
        return False
    book = ledger.read(spec, path, retry_failed=retry_failed)
    if not book.complete:
        return False
    counts = ", ".join(f"{v} {k}" for k, v in sorted(book.counts().items()))
    say(f"sweep {spec.name} is already finished ({book.summary()}: {counts}; finished {meta.get('finished_at')})")
    say(f"nothing to resume; `sweeper report {spec.name}` rebuilds its report, `sweeper run --overwrite` reruns it")
    if book.counts().get("failed"):
        n = book.counts()["failed"]
        say(f"`sweeper resume {spec.name} --retry-failed` runs its {n} failed trial{'s' if n > 1 else ''} again")
    return True


def _run(
    g: Globals, spec_arg: Any, *, overwrite: bool, resume: bool, num_cpus: int | None, dashboard: bool,
    retry_failed: bool = False,
) -> None:  # fmt: skip
    from sweeper import spec as specmod
    from sweeper.analysis.headline import report_headline_lines
    from sweeper.run.sweep import run_sweep

    spec = spec_arg if isinstance(spec_arg, specmod.SweepSpec) else specmod.load(spec_arg)
    outcome = run_sweep(
        spec, storage_of(g), address=g.address, resume=resume, overwrite=overwrite,
        num_cpus=num_cpus, dashboard=dashboard, progress=say, retry_failed=retry_failed,
    )  # fmt: skip
    counts = ", ".join(f"{v} {k}" for k, v in sorted(outcome.counts.items())) or "no trials recorded"
    t = outcome.timings
    took = (
        f" in {sum(t.values()):.0f} s (Ray start {t['ray_start']:.1f} s, trials {t['trials']:.0f} s, "
        f"report {t['finish']:.1f} s)"
        if {"ray_start", "trials", "finish"} <= t.keys()
        else ""
    )
    if outcome.complete:
        say(f"\nsweep {outcome.name} finished{took}: {counts}")
    else:
        recorded = f"{outcome.recorded}/{outcome.expected} trials recorded"
        say(f"\nsweep {outcome.name} is incomplete{took}: {recorded} ({counts})")
    headline = report_headline_lines(outcome.report_path.parent) if outcome.report_path else []
    for line in headline:  # the answer: best scale per normalizer, tuned BSN vs SN (the report's first lines)
        say(line)
    if outcome.best and (not headline or set(spec.parameters) - {"normalizer", "scale"}):
        b = outcome.best
        sem = f" ± {b['sem']:.3g}" if math.isfinite(b["sem"]) else ""
        params = ", ".join(f"{k}={_short(v)}" for k, v in b["params"].items())
        say(f"best configuration: {params}")
        say(f"  {b['selection']} {b['metric']} = {b['mean']:.4g}{sem} over {b['n_seeds']} seeds")
    if outcome.report_path:
        say(f"report: {outcome.report_path}")
    say(f"results: {outcome.sweep_path}/trials/*.parquet  (sweeper.results.load('{outcome.sweep_path}'))")
    if g.tracking_uri != "none":
        say("browse the trials: sweeper ui")
    if outcome.study:
        say(f"Optuna study: {outcome.study}")
    if outcome.counts.get("failed") and (outcome.sweep_path / "logs" / "tune.log").is_file():
        say(f"failed trials' tracebacks: {outcome.sweep_path / 'logs' / 'tune.log'}")
    if not outcome.complete:
        say(f"missing ({outcome.expected - outcome.recorded} of {outcome.expected} trials):")
        for line in outcome.missing:
            say(f"  - {line}")
        say(f"`sweeper resume {outcome.name}` runs them")
        raise typer.Exit(1)
    if outcome.failed_fraction > spec.allowed_failure_fraction:
        say(f"{outcome.failed_fraction:.0%} of trials failed (allowed {spec.allowed_failure_fraction:.0%})")
        raise typer.Exit(1)


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


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
    g = state(ctx)

    def go() -> None:
        from sweeper.cli import cluster

        target = address or g.address or os.environ.get("RAY_ADDRESS")
        if not target:
            fail("sweeper submit needs --address http://HEAD:8265 (the Ray dashboard of the cluster)")
        job = cluster.submit(
            spec, target, results_dir=str(results_dir or g.results_dir), tracking_uri=g.tracking_uri,
            extra_args=list(ctx.args), optuna_storage=g.optuna_storage,
        )  # fmt: skip
        typer.echo(f"submitted job {job}")
        typer.echo("inputs: checked here without files; the job checks data roots and weights first, on the cluster")
        typer.echo(f"follow it: {cluster.follow_hint(target, job)}")
        typer.echo(f"status:    sweeper --address {target} status --job {job}")
        if wait:
            state = cluster.wait(target, job, timeout_s=timeout)
            typer.echo(cluster.job_logs(target, job))
            typer.echo(f"job {job}: {state}")
            if state != "SUCCEEDED":
                raise typer.Exit(1)

    guard(g, go)
