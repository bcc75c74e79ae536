"""``radshare-site keygen``: make the site's Ed25519 signing key pair."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["keygen"]


def keygen(
    site: str = typer.Option(..., help="this site's id, as in its certificate (site:<id>)"),
    out: Path = typer.Option(Path("keys"), help="folder for site-<id>.ed25519 and .pub"),
) -> None:
    """Make the key that signs every bundle this site publishes.

    Example:

    \b
      radshare-site keygen --site a --out keys

    Keep the private key at the site; give the .pub file to the hub operator, who
    registers it with `radshare-hub register-site a --public-key site-a.ed25519.pub`.
    """
    from site_node.keys import generate_site_key

    paths = generate_site_key(out, site)
    typer.echo(f"private key: {paths.private_key} (mode 0600; never leaves the site)")
    typer.echo(f"public key:  {paths.public_key}")
    typer.echo(f"key id:      {paths.key_id}")
    typer.echo(
        f"operator:    radshare-hub register-site {site} --public-key {paths.public_key.name}"
    )
