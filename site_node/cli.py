"""``radshare-site``: the site node's command line, one verb per command.

Each command is a plain function in its own module; this file only registers
them, so that ``radshare-site --help`` lists every verb with its examples.
Heavy imports (torch, Lightning) happen inside the commands.
"""

from __future__ import annotations

import sys

import typer

from shared.errors import RadshareError

__all__ = ["app", "main"]

app = typer.Typer(
    name="radshare-site",
    help="radshare site node: ingest, train, sample, audit and publish inside the hospital.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command registrations (one line per verb; keep sorted by verb).


def main() -> None:
    """Console-script entry point: run the CLI, turning radshare errors into exit code 2."""
    try:
        app()
    except RadshareError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
