"""The commands that look without training: ``validate``, ``presets``, ``normalizers``, ``schema``, ``status``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from sweeper.cli.context import NO_DATA_HELP, fail, guard, state


def validate(
    ctx: typer.Context,
    spec: Annotated[str, typer.Argument(help="A sweep YAML file or a preset name.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    no_data: Annotated[bool, typer.Option("--no-data", help=NO_DATA_HELP)] = False,
) -> None:
    """Check a sweep file without running it: trials, parameters, resources, inputs, problems.

    Inputs are checked as `sweeper run` checks them before it starts: every data root the
    sweep can use holds its dataset, weights files match their hash, every resolution fits its
    model, every metric fits its dataset.
    """
    g = state(ctx)

    def go() -> None:
        from sweeper import spec as specmod
        from sweeper.spec import SpecError, preflight

        label, text = specmod.resolve_source(spec)
        s = specmod.parse(text, label)
        lines, inputs = preflight.problems(s, label, files=not no_data)
        if not no_data and not (g.address or os.environ.get("RAY_ADDRESS")):  # a cluster's: when connected
            from sweeper.run.capacity import capacity_problems, local_capacity

            lines += [f"{label}: {line}" for line in capacity_problems(s.resources, local_capacity())]
        if lines:
            raise SpecError(lines)  # the inputs and this machine, every problem at once
        summary = {
            "name": s.name,
            "trials": s.n_trials,
            "configurations": s.n_configurations,
            "seeds": s.seeds,
            "parameters": s.parameters,
            "sampler": s.search.sampler,
            "objective": {"metric": s.objective.metric, "mode": s.metric_mode, "selection": s.objective.selection},
            "resources": s.resources.model_dump(),
            "inputs": {
                "files_checked": inputs.files, "combinations": inputs.combinations,
                "data_roots": len(inputs.data_roots), "weights_files": len(inputs.weights),
                "seconds": round(inputs.seconds, 4),
            },  # fmt: skip
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
        typer.echo(f"  inputs: {inputs.text()}")

    guard(g, go)


def presets(ctx: typer.Context) -> None:
    """List the built-in sweeps (the paper's, and demo) with their trial counts."""
    g = state(ctx)

    def go() -> None:
        from sweeper import spec as specmod

        for name in specmod.preset_names():
            s = specmod.load(name)
            cost = s.n_iterations
            what = s.reproduces or s.description
            typer.echo(f"{name:24s} {s.n_trials:5d} trials  {cost:>14,d} iterations  {what}")

    guard(g, go)


def schema() -> None:
    """Print the JSON Schema of sweep files (for editors)."""
    from sweeper.spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


def normalizers() -> None:
    """List the normalizers with a one-line description and the paper section."""
    from trainers.normalizers import METHODS

    for name, info in METHODS.items():
        typer.echo(f"{name:16s} {info.description}  [{info.paper}]")


def status(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="A sweep name (default: all).")] = None,
    job: Annotated[str | None, typer.Option(help="Also show this Ray Job's state (needs --address).")] = None,
) -> None:
    """Show sweeps and their trials: completed, diverged, stopped early, failed."""
    g = state(ctx)

    def go() -> None:

        if job:
            from sweeper.cli import cluster

            address = g.address or os.environ.get("RAY_ADDRESS")
            if not address:
                fail("--job needs --address http://HEAD:8265")
            typer.echo(f"job {job}: {cluster.job_status(address, job)} {cluster.job_message(address, job)}".rstrip())
            if name is None:
                return

        root = g.results_dir
        names = [name] if name else sorted(p.name for p in root.glob("*") if (p / "sweep.json").exists())
        if not names:
            typer.echo(f"no sweeps under {root}")
            return
        bad = []
        for n in names:
            line = sweep_status(root, n)
            if line is None:
                bad.append(n)
                continue
            typer.echo(line)
        if bad:
            fail(f"no sweep {bad[0]!r} under {root} (no sweep.json); `sweeper status` lists the sweeps there")

    guard(g, go)


def sweep_status(root: Path, name: str) -> str | None:
    """One line: finished, incomplete (what `resume` would run) or running (and by whom)."""
    from sweeper import results
    from sweeper import spec as specmod
    from sweeper.run import ledger
    from sweeper.run.meta import ABORTED, FINISHED
    from sweeper.run.session import lock_holder

    path = results.sweep_dir(root, name)
    meta = results.read_sweep_meta(path)
    if not meta:
        return None
    try:
        book = ledger.read(specmod.from_data(meta["spec"], f"{name}/sweep.json"), path)
    except Exception as e:  # noqa: BLE001 - a sweep.json this version cannot read: say so, list the rest
        return f"{name}: cannot read its spec ({type(e).__name__}: {e})"
    counts = ", ".join(f"{v} {k}" for k, v in sorted(book.counts().items())) or "none recorded"
    done = f"{book.recorded}/{book.spec_trials} trials finished ({counts})"
    who = lock_holder(path)
    if who:
        return f"{name}: running (driver pid {who.get('pid')} on {who.get('host')} since {who.get('since')}): {done}"
    aborted = meta.get("aborted") if meta.get("state") == ABORTED else None
    if aborted:
        return (
            f"{name}: ABORTED by trial {aborted['trial_id']}: {aborted['message']}; {done}; fix it, then "
            f"`sweeper run ... --overwrite`"
        )
    if book.complete and meta.get("state", FINISHED) == FINISHED:  # no state: written before states existed
        return f"{name}: finished, {done}; started {meta.get('started_at')}, finished {meta.get('finished_at')}"
    why = "its driver died" if meta.get("state") == "running" else "stopped"
    return (
        f"{name}: incomplete ({why}), {done}, {book.missing} missing; `sweeper resume {name}` continues it; "
        f"started {meta.get('started_at')}"
    )
