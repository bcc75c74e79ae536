"""``radshare-site``: the site node's command line, one verb per command.

Each command is a plain function in its own module; this file only registers
them, so that ``radshare-site --help`` lists every verb with its examples.
Heavy imports (torch, Lightning) happen inside the commands.
"""

from __future__ import annotations

import sys

import typer

from shared.errors import RadshareError
from site_node.commands import keygen, publish, reader_study
from site_node.commands.audit import audit_command
from site_node.commands.ingest import ingest_command
from site_node.commands.phantom import phantom
from site_node.commands.sample import sample_command
from site_node.commands.train import train_command
from site_node.commands.train_labeller import train_labeller_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="radshare-site",
    help="radshare site node: ingest, train, sample, audit and publish inside the hospital.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command registrations (one line per verb; keep sorted by verb).
app.command("audit")(audit_command)
app.command("ingest")(ingest_command)
app.command("keygen")(keygen.keygen)
app.command("phantom")(phantom)
app.command("publish")(publish.publish)
app.command("publish-labeller")(publish.publish_labeller)
app.command("sample")(sample_command)
app.command("train")(train_command)
app.command("train-labeller")(train_labeller_command)
app.add_typer(reader_study.app, name="reader-study")


def main() -> None:
    """Console-script entry point: run the CLI, turning radshare errors into exit code 2."""
    import os

    from shared.logs import configure_logging

    # Structured, component-tagged, identifier-redacted log lines (deployment/docs).
    configure_logging(
        os.environ.get("RADSHARE_LOG_COMPONENT", "site"),
        fmt="json" if os.environ.get("RADSHARE_LOG_FORMAT") == "json" else "kv",
    )
    try:
        app()
    except RadshareError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
