"""The consortium CA's day-to-day work with its key kept offline: issue, renew, revoke.

Each operation needs only the CA folder (``ca.crt`` + ``ca.key``; a USB stick
kept in a safe will do), never the hub's other files:

* ``issue_identity``: a new key and certificate for one identity, written to
  ``--out`` (with a copy of ``ca.crt``); ``renew=True`` replaces an existing pair;
* ``revoke``: adds serial numbers to the CRL (``<ca_dir>/crl.pem`` by default),
  signed by the CA; copy it to the hub's TLS folder if that is elsewhere. The
  hub re-reads it on change, without a restart (``hub.registry.revocation``).

Every certificate the CA issues is kept in ``<ca_dir>/issued/<serial hex>.crt``,
so an identity can be revoked by name (all its certificates that have not
expired) and ``radshare-hub sites`` can show every certificate a site holds.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hub.certs import ISSUED_DIR, issue_certificate, record_issued
from hub.registry.auth import identity_from_certificate, parse_identity
from hub.registry.revocation import crl_number, read_crl
from shared.errors import ConfigError, PermissionDeniedError
from shared.fileio import atomic_write_bytes
from shared.hub_client import identity_file_stem

__all__ = [
    "CRL_FILE",
    "IssuedCertificate",
    "RevocationReason",
    "issue_identity",
    "issued_certificates",
    "load_ca",
    "normalise_identity",
    "parse_serial",
    "revoke",
]

#: The CRL's file name, in the CA folder and in the hub's TLS folder.
CRL_FILE = "crl.pem"

#: How long a CRL is declared fresh (its nextUpdate); the hub applies an older one too.
CRL_DAYS = 365


class RevocationReason(StrEnum):
    """RFC 5280 reasons an operator may give."""

    UNSPECIFIED = "unspecified"
    KEY_COMPROMISE = "key_compromise"
    AFFILIATION_CHANGED = "affiliation_changed"
    SUPERSEDED = "superseded"
    CESSATION_OF_OPERATION = "cessation_of_operation"


@dataclass(frozen=True)
class IssuedCertificate:
    """One certificate the CA issued: serial, identity it names, validity, file."""

    serial: int
    identity: str
    not_after: dt.datetime
    path: Path

    def expired(self, now: dt.datetime) -> bool:
        """Whether ``now`` is past its validity."""
        return now > self.not_after


def load_ca(ca_dir: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The CA key and certificate in ``ca_dir`` (ca.key, ca.crt); ConfigError naming them."""
    ca_dir = Path(ca_dir)
    if not (ca_dir / "ca.key").is_file():
        raise ConfigError(
            f"{ca_dir / 'ca.key'}: missing; pass --ca-dir with the folder that holds the "
            "consortium CA's ca.crt and ca.key (the CA key may be kept offline)"
        )
    try:
        key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    except (OSError, ValueError, TypeError) as error:
        raise ConfigError(f"{ca_dir}: cannot read ca.key/ca.crt: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise ConfigError(f"{ca_dir / 'ca.key'}: not the EC private key of {ca_dir / 'ca.crt'}")
    return key, cert


def normalise_identity(value: str) -> str:
    """``site:a``, or its file stem ``site-a`` → ``site:a``; PermissionDeniedError otherwise."""
    try:
        return parse_identity(value).identity
    except PermissionDeniedError:
        if "-" not in value:
            raise
        return parse_identity(value.replace("-", ":", 1)).identity


def parse_serial(text: str) -> int:
    """A serial number as ``sites`` prints it (hex, optionally ``0x`` or ``aa:bb``); ConfigError."""
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return int(cleaned, 16)
    except ValueError:
        raise ConfigError(f"--serial {text!r}: not a hexadecimal serial number") from None


def _read_certificate(path: Path) -> IssuedCertificate | None:
    try:
        pem = path.read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError):
        return None
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return None
    except x509.ExtensionNotFound:
        pass
    return IssuedCertificate(
        cert.serial_number, identity_from_certificate(pem) or "?", cert.not_valid_after_utc, path
    )


def issued_certificates(folder: Path) -> list[IssuedCertificate]:
    """Certificates in ``<folder>/issued/`` and ``<folder>/*.crt`` (not the CA), by serial."""
    folder = Path(folder)
    found: dict[int, IssuedCertificate] = {}
    for path in sorted(folder.glob("*.crt")) + sorted((folder / ISSUED_DIR).glob("*.crt")):
        issued = _read_certificate(path)
        if issued is not None:
            found.setdefault(issued.serial, issued)
    return sorted(found.values(), key=lambda c: (c.identity, c.not_after, c.serial))


def issue_identity(
    ca_dir: Path, identity: str, out: Path, *, renew: bool = False, days: int = 825
) -> tuple[Path, IssuedCertificate]:
    """Issue ``identity`` a key and certificate in ``out``; returns the .crt path and the record.

    An existing pair in ``out`` is kept (ConfigError) unless ``renew``; the old
    certificate stays valid until it expires or is revoked (``revoke --serial``).
    """
    identity = normalise_identity(identity)
    ca_key, ca_cert = load_ca(ca_dir)
    out = Path(out)
    stem = identity_file_stem(identity)
    crt, key_path = out / f"{stem}.crt", out / f"{stem}.key"
    if crt.exists() and not renew:
        raise ConfigError(f"{crt}: already exists; pass --renew to issue a new certificate")
    out.mkdir(parents=True, exist_ok=True)
    key, cert = issue_certificate(ca_key, ca_cert, identity, days=days)
    record = record_issued(ca_dir, cert)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write_bytes(key_path, key_pem, mode=0o600)
    atomic_write_bytes(crt, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    if not (out / "ca.crt").exists():
        atomic_write_bytes(out / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))
    return crt, IssuedCertificate(cert.serial_number, identity, cert.not_valid_after_utc, record)


def revoke(
    ca_dir: Path,
    serials: list[int],
    *,
    crl_path: Path | None = None,
    reason: RevocationReason = RevocationReason.UNSPECIFIED,
    now: dt.datetime | None = None,
) -> tuple[Path, list[int]]:
    """Add ``serials`` to the CRL and sign it with the CA; returns its path and the new serials.

    The CRL at ``crl_path`` (default ``<ca_dir>/crl.pem``) is extended, never
    shortened; it must itself be signed by this CA. Serials already revoked are skipped.
    """
    ca_key, ca_cert = load_ca(ca_dir)
    crl_path = Path(crl_path or Path(ca_dir) / CRL_FILE)
    now = now or dt.datetime.now(dt.UTC)
    old = read_crl(crl_path, ca_cert) if crl_path.exists() else None
    entries = list(old) if old is not None else []
    known = {entry.serial_number for entry in entries}
    added = [s for s in dict.fromkeys(serials) if s not in known]
    for serial in added:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now)
        if reason is not RevocationReason.UNSPECIFIED:
            flag = x509.ReasonFlags[reason.value]
            entry = entry.add_extension(x509.CRLReason(flag), critical=False)
        entries.append(entry.build())
    number = crl_number(old) + 1
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=CRL_DAYS))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for revoked in entries:
        builder = builder.add_revoked_certificate(revoked)
    crl = builder.sign(ca_key, hashes.SHA256())
    crl_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(crl_path, crl.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return crl_path, added
