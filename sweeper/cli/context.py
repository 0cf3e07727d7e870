"""What every command shares: the global options, and turning user errors into one line each."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer


@dataclass
class Globals:
    results_dir: Path
    tracking_uri: str | None
    address: str | None
    debug: bool
    optuna_storage: str | None = None


NO_DATA_HELP = (
    "Skip the checks of where the sweep runs: data roots and weights files (and, for validate, this "
    "machine's CPUs/GPUs), for a spec edited away from its data. The rules that need no files still run."
)


def state(ctx: typer.Context) -> Globals:
    return ctx.obj


def _print_version(value: bool) -> None:
    if value:
        from sweeper.about import version_text

        typer.echo(version_text())
        raise typer.Exit()


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
    optuna_storage: Annotated[
        str | None,
        typer.Option(
            help="Where the Optuna study lives: an RDB URL such as postgresql://USER@HOST/DB or sqlite:///PATH "
            "(default: search.storage, else $SNSWEEP_OPTUNA_STORAGE, else optuna.db beside mlflow.db); "
            "'none' keeps no study."
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Show versions and the git commit."),
    ] = False,
) -> None:
    """Global options work before or after the command (``sweeper run demo --results-dir x``)."""
    ctx.obj = Globals(
        results_dir, tracking_uri, address or os.environ.get("SNSWEEP_RAY_ADDRESS"), debug, optuna_storage
    )


def fail(lines: list[str] | str, code: int = 2) -> None:
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def guard(g: Globals, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; user errors become one line each and exit code 2.

    Anything else is a bug, not the user's to read as a traceback: one line with its type and
    message, and the path of a log file holding the full traceback (exit code 1). ``--debug``
    lets every exception through as it is. Ctrl-C ends with one line and exit code 130."""
    from sweeper.errors import UserError, one_line
    from trainers.config import ConfigError

    try:
        return fn()
    except typer.Exit:
        raise
    except UserError as e:
        if g.debug:
            raise
        fail(e.lines)
    except (ConfigError, FileNotFoundError) as e:
        if g.debug:
            raise
        fail(str(e))
    except KeyboardInterrupt:
        if g.debug:
            raise
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except Exception as e:  # noqa: BLE001 - the last line of defence: never a bare traceback
        if g.debug:
            raise
        log = crash_log(g, e)
        message = one_line(str(e).strip().splitlines()[0] if str(e).strip() else "")
        where = f"; the full traceback is in {log}" if log else ""
        typer.echo(f"error: unexpected {type(e).__name__}: {message}{where} (--debug shows it here)", err=True)
        raise typer.Exit(1) from None


def crash_log(g: Globals, exc: BaseException) -> Path | None:
    """Write the traceback of ``exc`` to ``<results dir>/logs/`` (or the temp dir); its path."""
    import sys
    import tempfile
    import traceback
    from datetime import datetime

    text = (
        f"sweeper {' '.join(sys.argv[1:])}\n{datetime.now().isoformat()}  pid {os.getpid()}\n\n"
        + "".join(traceback.format_exception(exc))
    )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for folder in (Path(g.results_dir) / "logs", Path(tempfile.gettempdir()) / "snsweep-logs"):
        try:
            if folder.parent.is_dir():
                folder.mkdir(exist_ok=True)
                path = folder / f"crash-{stamp}-{os.getpid()}.log"
                path.write_text(text)
                return path.resolve()
        except OSError:
            continue
    return None


def storage_of(g: Globals):  # -> Storage
    from sweeper.run.storage import default_storage

    storage = default_storage(
        g.results_dir, None if g.tracking_uri == "none" else g.tracking_uri, optuna_storage=g.optuna_storage
    )
    if g.tracking_uri == "none":
        storage.tracking_uri = None
    return storage


def say(line: str) -> None:
    typer.echo(line)
