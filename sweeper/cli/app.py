"""The ``sweeper`` command line.

Heavy imports (torch, Ray, MLflow) happen inside commands so ``--help`` is
instant. User errors end in one ``error: ...`` line per problem and exit code 2;
``--debug`` shows the traceback instead. Exit code 1 means a sweep ran but more
trials failed than its ``allowed_failure_fraction``.
"""

from __future__ import annotations

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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
