"""``radshare-site``: the site node's command line, one verb per command.

Each command is a plain function in its own module; this file only registers
them, so that ``radshare-site --help`` lists every verb with its examples.
Heavy imports (torch, Lightning) happen inside the commands.
"""

from __future__ import annotations

import sys

import typer

from shared.cli_main import run_cli
from site_node.commands import config_check, health, keygen, publish, reader_study, root
from site_node.commands.audit import audit_command
from site_node.commands.ingest import ingest_command
from site_node.commands.phantom import phantom
from site_node.commands.query_log import query_log_command
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

# --config FILE / $RADSHARE_SITE_CONFIG: the defaults of every verb (site_node.config).
app.callback()(root.root_options)

# Command registrations (one line per verb; keep sorted by verb).
app.command("audit")(audit_command)
app.command("config")(config_check.config_check)
app.command("health")(health.health)
app.command("ingest")(ingest_command)
app.command("keygen")(keygen.keygen)
app.command("phantom")(phantom)
app.command("publish")(publish.publish)
app.command("publish-labeller")(publish.publish_labeller)
app.command("query-log")(query_log_command)
app.command("sample")(sample_command)
app.command("train")(train_command)
app.command("train-labeller")(train_labeller_command)
app.add_typer(reader_study.app, name="reader-study")


def main() -> None:
    """Console-script entry point: run the CLI; user errors are one line and exit code 2."""
    import os

    from shared.logs import configure_logging

    # Structured, component-tagged, identifier-redacted log lines (deployment/docs).
    configure_logging(
        os.environ.get("RADSHARE_LOG_COMPONENT", "site"),
        fmt="json" if os.environ.get("RADSHARE_LOG_FORMAT") == "json" else "kv",
    )
    # gRPC's C core logs a refused TLS handshake on stderr at INFO; the client says it in its
    # one error line instead (shared.tls_diagnosis).
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # One-line errors naming the option, value and accepted range; exit code 2 (shared.cli_main).
    sys.exit(run_cli(app, prog="radshare-site"))
