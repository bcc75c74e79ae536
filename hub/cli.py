"""``radshare-hub``: the hub's command line, one verb per command.

Each command is a plain function in its own module; this file only registers
them, so that ``radshare-hub --help`` lists every verb with its examples.
Heavy imports (torch, Lightning) happen inside the commands.
"""

from __future__ import annotations

import sys

import typer

from hub.commands import (
    archives,
    audit,
    audit_dp,
    audit_reports,
    backup,
    certs,
    config_check,
    evaluate,
    health,
    keyring,
    list_artifacts,
    pool,
    pull,
    pull_archive,
    quality,
    register_site,
    restore,
    root,
    serve,
    show,
    sites,
    synthesize,
    train_classifier,
    verify,
    withdraw,
)
from shared.cli_main import run_cli

__all__ = ["app", "main"]

app = typer.Typer(
    name="radshare-hub",
    help="radshare hub: serve the registry, synthesize archives, pool, train and evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# --config FILE / $RADSHARE_HUB_CONFIG: the defaults of every verb (hub.config).
app.callback()(root.root_options)

# Command registrations (one line per verb; keep sorted by verb).
app.command("archives")(archives.archives)
app.command("audit")(audit.audit)
app.command("audit-dp")(audit_dp.audit_dp)
app.command("audit-reports")(audit_reports.audit_reports)
app.command("backup")(backup.backup)
app.add_typer(certs.app, name="certs")  # certs / certs issue / certs revoke
app.command("config")(config_check.config_check)
app.command("evaluate")(evaluate.evaluate)
app.command("health")(health.health)
app.add_typer(keyring.app, name="keyring")  # keyring export
app.command("list")(list_artifacts.list_artifacts)
app.command("pool")(pool.pool)
app.command("pull")(pull.pull)
app.command("pull-archive")(pull_archive.pull_archive)
app.command("quality")(quality.quality)
app.command("register-site")(register_site.register_site)
app.command("restore")(restore.restore)
app.command("serve")(serve.serve)
app.command("show")(show.show)
app.command("sites")(sites.sites)
app.command("synthesize")(synthesize.synthesize)
app.command("train-classifier")(train_classifier.train_classifier)
app.command("verify")(verify.verify)
app.command("withdraw")(withdraw.withdraw)


def main() -> None:
    """Console-script entry point: run the CLI; user errors are one line and exit code 2."""
    import os

    from shared.logs import configure_logging

    # Structured, component-tagged, identifier-redacted log lines (deployment/docs).
    configure_logging(
        os.environ.get("RADSHARE_LOG_COMPONENT", "hub"),
        fmt="json" if os.environ.get("RADSHARE_LOG_FORMAT") == "json" else "kv",
    )
    # gRPC's C core logs a refused TLS handshake on stderr at INFO; a client verb says it in
    # its one error line instead (shared.tls_diagnosis). `serve` keeps gRPC's own log.
    if "serve" not in sys.argv[1:]:
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # One-line errors naming the option, value and accepted range; exit code 2 (shared.cli_main).
    sys.exit(run_cli(app, prog="radshare-hub"))
