"""What may leave a hospital or the hub, one module per kind, and the generic parts.

Kinds (each: its pydantic models, read/write, verification): ``generator``,
``labeller``, ``classifier`` (signed bundles), ``archive`` (synthetic and pooled
archive manifests), ``audit`` (memorisation audit reports), ``membership``
(membership-inference summaries). ``kinds`` is the one explicit table of bundle
kinds. Generic parts: ``manifest`` (the base manifest model), ``bundle`` (signed
folders, safetensors header checks), ``signing`` (Ed25519, canonical JSON),
``keyring`` (the consortium's keys: what every signature is verified against) and
``records`` (plain records of the hub API). ``docs/trust.md`` tells who signs what.

Import the submodules directly: this package stays import-light, so that the hub
client can use ``signing``, ``keyring`` and ``archive`` without importing torch.
"""

__all__ = [
    "archive",
    "audit",
    "audit_state",
    "bundle",
    "classifier",
    "generator",
    "keyring",
    "kinds",
    "labeller",
    "manifest",
    "membership",
    "records",
    "signing",
]
