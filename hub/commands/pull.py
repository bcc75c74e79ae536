"""``radshare-hub pull``: download a published bundle, verified, into a new folder."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.commands.options import HUB, TLS_DIR

__all__ = ["pull"]


def pull(
    artifact_id: str = typer.Argument(..., help="artifact id, or a unique prefix of 8+ hex digits"),
    out: Path | None = typer.Option(None, help="new bundle folder (default pulled/<id12>)"),
    hub: str = HUB,
    tls_dir: Path = TLS_DIR,
    identity: str = typer.Option("operator", help="whose certificate to use (operators pull)"),
    keyring: Path | None = typer.Option(
        None, help="consortium keyring JSON (`keyring export`); default: the hub's own keys"
    ),
    hub_root: Path = typer.Option(Path("hub-data"), help="the hub's root (keys when no --keyring)"),
) -> None:
    """Pull a bundle; its signature is verified against the keyring (never the bundle's
    own signer.pub), then its hashes and tensors.

    Example:

    \b
      radshare-hub pull 3f9a1c07 --out generators/site-a --tls-dir certs
      --keyring consortium-keyring.json
    """
    import shutil

    from hub.trust import open_keyring
    from shared.artifacts.bundle import read_bundle
    from shared.errors import RadshareError
    from shared.hub_client import ClientTLS, HubClient

    keys = open_keyring(keyring, hub_root)
    with HubClient(hub, ClientTLS.from_dir(tls_dir, identity)) as client:
        folder = client.pull(artifact_id, out or Path("pulled") / artifact_id[:12], trusted=keys)
    try:  # every file again: sha256, safetensors header, tensors
        signed = read_bundle(folder, keys)
    except RadshareError:
        shutil.rmtree(folder)  # never leave a bundle that does not verify
        raise
    typer.echo(f"pulled {signed.artifact_id} (site {signed.model.site_id}) into {folder}")
