"""The hub's registry service: servicer → pure handlers → ``ArtifactRegistry`` storage.

Modules: ``auth`` (identities and roles), ``handlers`` (the API as plain
functions), ``base`` (the storage interface), ``sqlite_registry`` +
``blobstore`` (the default storage), ``memory_registry``, ``keyring`` (site
signing keys), ``servicer`` (gRPC adapter), ``server`` (start / serve).
"""

__all__ = [
    "auth",
    "base",
    "blobstore",
    "handlers",
    "keyring",
    "memory_registry",
    "server",
    "servicer",
    "sqlite_registry",
]
