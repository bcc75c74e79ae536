"""One-line explanations of TLS failures between a client and the hub.

gRPC reports a failed mTLS handshake as ``UNAVAILABLE`` with a long
``failed to connect to all addresses; last error: ...`` text, and it retries it
as if the network were down. ``tls_failure`` recognises such a text and turns
it into what went wrong and what to do, keeping gRPC's own reason (the part
after ``last error:``, which carries the server's TLS alert where gRPC passes
it on). ``check_issued_by`` catches the commonest mistake before any
connection: a client certificate that the consortium CA did not issue.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from shared.errors import ConfigError

__all__ = ["check_issued_by", "tls_failure"]

#: (text in gRPC's details, what it means): the first match explains the failure.
_CAUSES = (
    (
        "Hostname Verification",
        "the hub's certificate does not name the address dialled; connect by a name in its "
        "certificate, or reissue it with `radshare-hub certs --server-host NAME`",
    ),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the hub's certificate was not issued by the CA in this client's ca.crt "
        "(another consortium's hub, or the wrong ca.crt)",
    ),
    *(
        (
            closed,
            "the hub closed the connection during the TLS handshake: it did not accept this "
            "client's certificate (issued by another CA, expired or revoked)",
        )
        for closed in ("Socket closed", "Connection reset", "Broken pipe", "End of TCP stream")
    ),
    ("andshake", "the TLS handshake failed"),
    ("SSL_ERROR", "the TLS handshake failed"),
)


def tls_failure(details: str) -> str | None:
    """What a failed connection's gRPC ``details`` say about TLS, or None if not a TLS failure."""
    if "failed to connect" not in details and "andshake" not in details:
        return None
    for needle, meaning in _CAUSES:
        if needle in details:
            reason = details.split("last error:", 1)[-1].strip()
            return f"{meaning} (gRPC: {reason})"
    return None


def _common_name(name: x509.Name) -> str:
    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(found[0].value) if found else name.rfc4514_string()


def check_issued_by(ca_pem: bytes, cert_pem: bytes, *, ca_path: Path, cert_path: Path) -> None:
    """ConfigError unless the first certificate in ``cert_pem`` was issued by a CA in ``ca_pem``.

    Also accepts a certificate whose chain file holds the intermediate that issued it.
    """
    try:
        authorities = x509.load_pem_x509_certificates(ca_pem)
    except ValueError as error:
        raise ConfigError(f"{ca_path}: not a PEM CA certificate ({error})") from None
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as error:
        raise ConfigError(f"{cert_path}: not a PEM certificate ({error})") from None
    leaf = chain[0]
    for issuer in [*authorities, *chain[1:]]:
        try:
            leaf.verify_directly_issued_by(issuer)
            return
        except (ValueError, TypeError, InvalidSignature):  # wrong name, key type, signature
            continue
    raise ConfigError(
        f"{cert_path}: issued by {_common_name(leaf.issuer)!r}, not by the consortium CA in "
        f"{ca_path} ({_common_name(authorities[0].subject)!r}); the hub will refuse it: ask "
        "the operator for a certificate (`radshare-hub certs`)"
    )
