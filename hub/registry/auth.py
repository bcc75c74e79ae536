"""Who is calling and what their role allows: identities from client certificates.

Every client certificate names one identity, in a SAN URI ``radshare:<identity>``
(preferred) or else its subject CN:

=====================  ========  ==============================================
identity               role      may
=====================  ========  ==============================================
``site:<id>``          site      publish, only artifacts whose manifest says ``<id>``;
                                 withdraw its own artifacts; read manifests and pull
                                 bundles (to verify what a federated query names; no
                                 archives, no list)
``operator[:<name>]``  operator  list, pull weights, read manifests, read and store audit
                                 reports, run jobs, withdraw any artifact, register the
                                 hub's own signed classifiers
``auditor[:<name>]``   auditor   list, read manifests and audit reports
=====================  ========  ==============================================

Anything else is refused: no identity → UNAUTHENTICATED (at the servicer),
an unknown identity or a role without the action → ``PermissionDeniedError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import NameOID

from shared.errors import PermissionDeniedError

__all__ = [
    "ROLE_ACTIONS",
    "URI_SCHEME",
    "Action",
    "Caller",
    "Role",
    "authorize",
    "caller_from_auth_context",
    "identity_from_certificate",
    "parse_identity",
]

#: Prefix of the SAN URI that carries an identity: ``radshare:site:a``.
URI_SCHEME = "radshare:"

_NAME = r"[a-z0-9][a-z0-9_-]{0,62}"
_IDENTITY = re.compile(rf"^(?:site:(?P<site>{_NAME})|(?P<role>operator|auditor)(?::{_NAME})?)$")


class Role(StrEnum):
    """The three roles of the consortium."""

    SITE = "site"
    OPERATOR = "operator"
    AUDITOR = "auditor"


class Action(StrEnum):
    """What a caller may ask of the hub."""

    PUBLISH = "publish"
    LIST = "list"
    PULL = "pull"
    READ_MANIFEST = "read_manifest"
    READ_REPORT = "read_report"
    WRITE_REPORT = "write_report"
    RUN_JOB = "run_job"
    WITHDRAW = "withdraw"
    PUBLISH_HUB_ARTIFACT = "publish_hub_artifact"


#: Actions each role may take (a site's PUBLISH is further limited to its own site id).
ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    # A site pulls the generator or classifier bundle a federated query names, to verify
    # and use it itself (site_node.flower.registered); pull_archive stays operator-only.
    Role.SITE: frozenset({Action.PUBLISH, Action.WITHDRAW, Action.READ_MANIFEST, Action.PULL}),
    Role.OPERATOR: frozenset(
        {
            Action.LIST,
            Action.PULL,
            Action.READ_MANIFEST,
            Action.READ_REPORT,
            Action.WRITE_REPORT,
            Action.RUN_JOB,
            Action.WITHDRAW,
            Action.PUBLISH_HUB_ARTIFACT,
        }
    ),
    Role.AUDITOR: frozenset({Action.LIST, Action.READ_MANIFEST, Action.READ_REPORT}),
}


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its identity string, role and (for sites) site id."""

    identity: str
    role: Role
    site_id: str | None = None


def parse_identity(identity: str) -> Caller:
    """``site:a`` / ``operator`` / ``auditor:bob`` → Caller; PermissionDeniedError otherwise."""
    match = _IDENTITY.match(identity)
    if match is None:
        raise PermissionDeniedError(
            f"identity {identity!r} has no radshare role "
            "(expected 'site:<id>', 'operator[:<name>]' or 'auditor[:<name>]')"
        )
    if match["site"]:
        return Caller(identity, Role.SITE, match["site"])
    return Caller(identity, Role(match["role"]))


def identity_from_certificate(pem: bytes) -> str | None:
    """The identity a certificate names: SAN URI ``radshare:<identity>``, else the subject CN."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
            if uri.startswith(URI_SCHEME):
                return uri[len(URI_SCHEME) :]
    except x509.ExtensionNotFound:
        pass
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def caller_from_auth_context(auth_context: Mapping[str, Sequence[bytes]]) -> Caller | None:
    """The caller of a gRPC call from its ``context.auth_context()``; None if unauthenticated.

    Only a TLS peer whose certificate chain the server verified against the
    consortium CA has ``x509_pem_cert``; an identity outside the role table
    raises PermissionDeniedError.
    """
    pems = auth_context.get("x509_pem_cert") or ()
    if not pems:
        return None
    identity = identity_from_certificate(pems[0])
    if not identity:
        return None
    return parse_identity(identity)


def authorize(caller: Caller, action: Action, *, site_id: str | None = None) -> None:
    """PermissionDeniedError unless ``caller`` may take ``action`` (for ``site_id``, if given)."""
    if action not in ROLE_ACTIONS[caller.role]:
        raise PermissionDeniedError(f"{caller.identity!r} (role {caller.role}) may not {action}")
    if caller.role is Role.SITE and site_id is not None and site_id != caller.site_id:
        raise PermissionDeniedError(
            f"{caller.identity!r} may {action} only as site {caller.site_id!r}, not {site_id!r}"
        )
