"""Stage 5, cli: the ``sweeper`` command (typer) and Ray Jobs submission (``cluster``).

The only stage that prints: user errors (``sweeper.errors.UserError``) become ``error:`` lines
and exit code 2. Heavy imports (torch, Ray, MLflow) happen inside commands, so ``--help`` and
the inspecting commands answer at once. May import every other stage.
"""

from sweeper.cli.app import app, main

__all__ = ["app", "main"]
