"""The ``sweeper`` command line.

Heavy imports (torch, Ray, MLflow) happen inside commands so ``--help`` is
instant. User errors end in one ``error: ...`` line per problem and exit code 2;
``--debug`` shows the traceback instead. Exit code 1 means a sweep ran but more
trials failed than its ``allowed_failure_fraction``.
"""

from __future__ import annotations

import sys

import typer

from sweeper.cli import browse, inspect, sweeps
from sweeper.cli.context import main_options

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    help="Hyperparameter sweeps for GAN normalization research (SN, BSSN) on Ray Tune, Optuna and MLflow.",
    pretty_exceptions_enable=False,
)
app.callback()(main_options)
# Every command, registered here in one place (the order is the order of `sweeper --help`).
app.command()(sweeps.run)
app.command()(sweeps.resume)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(sweeps.submit)
app.command()(inspect.status)
app.command()(browse.report)
app.command()(inspect.validate)
app.command()(inspect.presets)
app.command()(inspect.normalizers)
app.command()(inspect.schema)
app.command()(browse.ui)
app.command()(browse.dashboard)


def hoist_global_options(argv: list[str]) -> list[str]:
    """Move global options written after the command to before it, where click expects them.

    ``sweeper run demo --results-dir x`` then means ``sweeper --results-dir x run demo``. An option
    the command defines itself (``submit --address``) stays the command's, and nothing after
    ``--`` moves. Options and their arities come from the click objects, never a second list.
    """
    group = typer.main.get_command(app)
    takes_value = {opt: not p.is_flag for p in group.params for opt in (*p.opts, *p.secondary_opts)}
    i = 0
    while i < len(argv) and argv[i] not in group.commands:  # global options before the command
        i += 2 if takes_value.get(argv[i].split("=", 1)[0]) and "=" not in argv[i] else 1
    if i >= len(argv):
        return argv
    own = {opt for p in group.commands[argv[i]].params for opt in (*p.opts, *p.secondary_opts)}
    head, command, rest = argv[:i], argv[i], argv[i + 1 :]
    moved: list[str] = []
    kept: list[str] = []
    j = 0
    while j < len(rest):
        arg = rest[j]
        name = arg.split("=", 1)[0]
        if arg == "--":
            kept += rest[j:]
            break
        if name in takes_value and name not in own:
            width = 2 if takes_value[name] and "=" not in arg else 1
            moved += rest[j : j + width]
            j += width
            continue
        kept.append(arg)
        j += 1
    return [*head, *moved, command, *kept]


def main() -> None:
    app(args=hoist_global_options(sys.argv[1:]), prog_name="sweeper")


if __name__ == "__main__":
    main()
