"""The hub's registry service: servicer → pure handlers → ``ArtifactRegistry`` storage.

Modules: ``auth`` (identities and roles), ``handlers`` (the API as plain
functions), ``base`` (the storage interface), ``sqlite_registry`` +
``blobstore`` (the default storage), ``memory_registry``, ``keyring`` (site
signing keys), ``servicer`` (gRPC adapter), ``server`` (start / serve).
Durability: ``database`` (SQLite errors that name the file), ``integrity``
(lost-database guard, verify, safe pulls), ``backup`` (backup / restore),
``manifest_checks`` (header bounds before any upload byte). ``audit_policy``: whether a
generator may be used for synthesis (one function; overrides and withdrawals).
"""

__all__ = [
    "audit_policy",
    "auth",
    "backup",
    "base",
    "blobstore",
    "database",
    "handlers",
    "integrity",
    "keyring",
    "manifest_checks",
    "memory_registry",
    "server",
    "servicer",
    "sqlite_registry",
]
