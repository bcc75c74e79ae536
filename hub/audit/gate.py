"""Where ``synthesize`` and ``pool`` ask the audit policy: the hub over gRPC, or a local registry.

Both gates apply :func:`hub.registry.audit_policy.clear_for_synthesis`:

* :class:`RemoteAuditGate` (``--hub HOST:PORT``): the server decides
  (``AuthorizeSynthesis``) and records an override as given by the caller's
  certificate identity;
* :class:`LocalAuditGate` (``--hub-root DIR``, on the hub machine): the same function on
  the registry's SQLite file and the hub's site-key folder; an override is recorded as
  given by ``<identity> (local, user <login>)``.

:func:`open_gate` picks one; with neither a hub nor an existing registry it refuses
(ConfigError): a generator is never used for synthesis unchecked, and an override is
always recorded in the registry.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Protocol

from shared.artifacts.audit_state import AuditDecision
from shared.errors import ConfigError

__all__ = ["AuditGate", "LocalAuditGate", "RemoteAuditGate", "open_gate"]

_DB_FILE = "registry.sqlite3"


class AuditGate(Protocol):
    """Clears a generator for synthesis (AuditPolicyError / RegistryError when refused)."""

    where: str

    def clear(self, generator_ref: str, override_reason: str | None = None) -> AuditDecision:
        """The policy's decision for ``generator_ref`` (an override is recorded)."""
        ...


class LocalAuditGate:
    """The policy on a hub root's registry and site keys (the hub machine)."""

    def __init__(self, hub_root: Path, identity: str = "operator", site_keys: Path | None = None):
        from hub.registry.keyring import DirectoryKeyring
        from hub.registry.sqlite_registry import SqliteRegistry

        hub_root = Path(hub_root)
        if not (hub_root / _DB_FILE).is_file():
            raise ConfigError(
                f"--hub-root {hub_root}: no registry ({hub_root / _DB_FILE} is missing); the "
                "audit policy needs the hub's registry: pass --hub-root of the hub, or --hub"
            )
        self.registry = SqliteRegistry(hub_root)
        self.keyring = DirectoryKeyring(site_keys or hub_root / "site_keys")
        self.caller = f"{identity} (local, user {getpass.getuser()})"
        self.where = f"registry {hub_root.resolve()}"

    def clear(self, generator_ref: str, override_reason: str | None = None) -> AuditDecision:
        from hub.registry.audit_policy import clear_for_synthesis

        return clear_for_synthesis(
            self.registry,
            self.keyring,
            generator_ref,
            caller=self.caller,
            override_reason=override_reason,
            checked_by=self.where,
        )


class RemoteAuditGate:
    """The policy as the hub server applies it (``AuthorizeSynthesis``)."""

    def __init__(self, hub: str, tls_dir: Path, identity: str = "operator"):
        self.hub, self.tls_dir, self.identity = hub, Path(tls_dir), identity
        self.where = f"hub {hub}"

    def clear(self, generator_ref: str, override_reason: str | None = None) -> AuditDecision:
        from shared.hub_client import ClientTLS, HubClient

        with HubClient(self.hub, ClientTLS.from_dir(self.tls_dir, self.identity)) as client:
            decision = client.authorize_synthesis(generator_ref, override_reason)
        return decision.model_copy(update={"checked_by": self.where})


def open_gate(
    hub: str | None,
    hub_root: Path | None,
    tls_dir: Path,
    identity: str = "operator",
    site_keys: Path | None = None,
) -> AuditGate:
    """The hub's gate when ``hub`` is given, else the local registry under ``hub_root``.

    ``site_keys``: the hub's site-key folder (default ``<hub_root>/site_keys``).
    """
    if hub:
        return RemoteAuditGate(hub, tls_dir, identity)
    if hub_root is None:
        raise ConfigError("the audit policy needs the registry: pass --hub or --hub-root")
    return LocalAuditGate(hub_root, identity, site_keys)
