"""``radshare-hub``: the hub's command line, one verb per command.

Each command is a plain function in its own module; this file only registers
them, so that ``radshare-hub --help`` lists every verb with its examples.
Heavy imports (torch, Lightning) happen inside the commands.
"""

from __future__ import annotations

import sys

import typer

from hub.commands import (
    audit,
    audit_dp,
    audit_reports,
    certs,
    evaluate,
    list_artifacts,
    pool,
    pull,
    pull_archive,
    quality,
    register_site,
    serve,
    synthesize,
    train_classifier,
)
from shared.errors import RadshareError

__all__ = ["app", "main"]

app = typer.Typer(
    name="radshare-hub",
    help="radshare hub: serve the registry, synthesize archives, pool, train and evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Command registrations (one line per verb; keep sorted by verb).
app.command("audit")(audit.audit)
app.command("audit-dp")(audit_dp.audit_dp)
app.command("audit-reports")(audit_reports.audit_reports)
app.command("certs")(certs.certs)
app.command("evaluate")(evaluate.evaluate)
app.command("list")(list_artifacts.list_artifacts)
app.command("pool")(pool.pool)
app.command("pull")(pull.pull)
app.command("pull-archive")(pull_archive.pull_archive)
app.command("quality")(quality.quality)
app.command("register-site")(register_site.register_site)
app.command("serve")(serve.serve)
app.command("synthesize")(synthesize.synthesize)
app.command("train-classifier")(train_classifier.train_classifier)


def main() -> None:
    """Console-script entry point: run the CLI, turning radshare errors into exit code 2."""
    import os

    from shared.logs import configure_logging

    # Structured, component-tagged, identifier-redacted log lines (deployment/docs).
    configure_logging(
        os.environ.get("RADSHARE_LOG_COMPONENT", "hub"),
        fmt="json" if os.environ.get("RADSHARE_LOG_FORMAT") == "json" else "kv",
    )
    try:
        app()
    except RadshareError as error:
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(2)
