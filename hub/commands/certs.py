"""``radshare-hub certs``: the consortium CA, the hub's certificate, one per identity.

``certs`` alone makes (or extends) a whole TLS folder; ``certs issue`` and
``certs revoke`` work with the CA folder alone, so ca.key can stay offline.
"""

from __future__ import annotations

from pathlib import Path

import typer

from hub.commands import certs_issue, certs_revoke

__all__ = ["app", "certs"]

app = typer.Typer(no_args_is_help=False, add_completion=False, pretty_exceptions_enable=False)


@app.callback(invoke_without_command=True)
def certs(
    ctx: typer.Context,
    out: Path = typer.Option(Path("hub-data/tls"), help="folder for ca.*, server.*, <identity>.*"),
    identity: list[str] = typer.Option(
        [], "--identity", "-i", help="site:<id>, operator[:<name>] or auditor[:<name>]; repeatable"
    ),
    server_host: list[str] = typer.Option(
        ["localhost", "127.0.0.1"],
        help="host names / IPs the hub and SuperLink are reached at; repeatable "
        "(localhost and 127.0.0.1 are always added)",
    ),
) -> None:
    """Make (or extend) a consortium's TLS material; existing files are kept.

    Example:

    \b
      radshare-hub certs --out hub-data/tls -i site:a -i site:b -i operator -i auditor

    Give each site ca.crt + site-<id>.crt + site-<id>.key; keep ca.key offline.
    With ca.key offline: `certs issue` (a new or renewed certificate) and
    `certs revoke` (the CRL) need only the CA folder.
    """
    if ctx.invoked_subcommand is not None:
        return
    from click.core import ParameterSource

    from hub.certs import ensure_consortium_certs

    config = (ctx.obj or {}).get("config")  # radshare-hub --config FILE: its TLS folder
    if config is not None and ctx.get_parameter_source("out") is ParameterSource.DEFAULT:
        out = config.tls_folder

    # Always loopback too: hub commands and the HEALTHCHECK on the hub machine use 127.0.0.1.
    hosts = list(dict.fromkeys([*server_host, "localhost", "127.0.0.1"]))
    written = ensure_consortium_certs(out, identity, server_hosts=hosts)
    for path in written:
        typer.echo(f"wrote {path}")
    if not written:
        typer.echo(f"{out}: everything asked for already exists")


# Sub-verbs (one module each).
app.command("issue")(certs_issue.issue)
app.command("revoke")(certs_revoke.revoke)
