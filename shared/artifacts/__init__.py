"""Artifact formats: manifest models, signed safetensors bundles, Ed25519 signing.

Import the submodules directly (``shared.artifacts.bundle``, ``.manifest``,
``.signing``, ``.records``): this package stays import-light so that the hub
client can use ``signing`` without importing torch.
"""

__all__ = ["bundle", "manifest", "records", "signing"]
