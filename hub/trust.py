"""The keys the hub verifies with, and the consortium keyring file it exports.

At the hub, a signed artifact is verified against the hub's keyring folder
(``<root>/site_keys/<site>.pub``, ``radshare-hub register-site``) and, for what
the hub signs itself (classifier bundles), against the public half of
``<root>/hub_signing.key`` under the reserved id ``hub``. Elsewhere (a site, an
operator's laptop) the same keys come from the consortium keyring file that
``radshare-hub keyring export`` writes (``shared.artifacts.keyring``). Every hub
verb that verifies takes ``--keyring FILE``; without it, the hub's own keys
under ``--hub-root`` are used.
"""

from __future__ import annotations

from pathlib import Path

from hub.registry.keyring import DirectoryKeyring
from shared.artifacts.keyring import ConsortiumKeyring, SignerKeys, keyring_from_pems
from shared.artifacts.manifest import HUB_SITE_ID
from shared.artifacts.signing import load_private_key, public_key_pem
from shared.errors import ConfigError, SignatureError

__all__ = ["HUB_SIGNING_KEY_FILE", "HubKeyring", "export_keyring", "open_keyring"]

#: The hub's own Ed25519 signing key under its root (``train-classifier --hub-key``).
HUB_SIGNING_KEY_FILE = "hub_signing.key"


class HubKeyring:
    """The hub's keys: ``<site_keys>/<site>.pub`` per site, its own key under ``hub``."""

    def __init__(self, site_keys: Path, hub_key: Path):
        self.sites = DirectoryKeyring(site_keys)
        self.hub_key = Path(hub_key)

    @classmethod
    def at_root(cls, hub_root: Path, site_keys: Path | None = None) -> HubKeyring:
        """The keyring of the hub at ``hub_root`` (site keys default to ``<root>/site_keys``)."""
        root = Path(hub_root)
        return cls(site_keys or root / "site_keys", root / HUB_SIGNING_KEY_FILE)

    def public_key_pem(self, site_id: str) -> bytes:
        """The PEM key of ``site_id``; SignatureError naming the site and the missing file."""
        if site_id != HUB_SITE_ID:
            return self.sites.public_key_pem(site_id)
        if self.hub_key.is_file():
            return public_key_pem(load_private_key(self.hub_key).public_key())
        if (self.sites.folder / f"{HUB_SITE_ID}.pub").is_file():  # registered public half
            return self.sites.public_key_pem(HUB_SITE_ID)
        raise SignatureError(
            f"no key for site {HUB_SITE_ID!r}: the hub's signing key {self.hub_key} is missing"
        )

    def site_ids(self) -> list[str]:
        """Every site with a registered key (the ``hub`` id not included)."""
        folder = self.sites.folder
        return sorted(p.stem for p in folder.glob("*.pub")) if folder.is_dir() else []


def open_keyring(keyring: Path | None, hub_root: Path) -> SignerKeys:
    """The keys a hub verb verifies with: ``--keyring FILE``, or the hub's own at ``hub_root``."""
    if keyring is not None:
        return ConsortiumKeyring.load(keyring)
    return HubKeyring.at_root(hub_root)


def export_keyring(hub: HubKeyring, out: Path) -> ConsortiumKeyring:
    """Write the consortium keyring file (every site key, and the hub's) to ``out``.

    Raises:
        ConfigError: no key to export, a key that is not Ed25519, or ``out`` exists.
    """
    pems = {site: hub.public_key_pem(site) for site in hub.site_ids()}
    if HUB_SITE_ID in pems:
        raise ConfigError(
            f"{hub.sites.folder}/{HUB_SITE_ID}.pub: {HUB_SITE_ID!r} is reserved for the hub's "
            "own key; register that site under another id"
        )
    if hub.hub_key.is_file():
        pems[HUB_SITE_ID] = hub.public_key_pem(HUB_SITE_ID)
    if not pems:
        raise ConfigError(
            f"{hub.sites.folder}: no site keys and no {hub.hub_key}; nothing to export "
            "(register sites with `radshare-hub register-site`)"
        )
    keyring = keyring_from_pems(pems, source=str(out))
    keyring.write(out)
    return keyring
