"""A consortium's TLS material: one CA, the hub's server certificate, one certificate per identity.

Every client certificate carries its identity twice: as subject CN and as a
SAN URI ``radshare:<identity>`` (what the hub reads). Keys are ECDSA P-256,
written 0600. Files in the output folder are never overwritten: running the
command again reuses the CA and issues only what is missing::

    <out>/ca.crt  ca.key          the consortium CA (keep ca.key offline)
    <out>/server.crt server.key   the hub (SAN: localhost, 127.0.0.1, --server-host ...)
    <out>/site-a.crt site-a.key   identity "site:a" (hand both to site a, with ca.crt)
    <out>/operator.crt ...        identity "operator"
    <out>/issued/<serial>.crt     every certificate the CA issued (for revocation, ``sites``)

Issuing one certificate with only ``ca.crt`` + ``ca.key`` at hand, renewing and
revoking are in ``hub.ca``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.registry.auth import URI_SCHEME, parse_identity
from shared.errors import ConfigError
from shared.fileio import atomic_write_bytes
from shared.hub_client import identity_file_stem
from shared.site_ids import check_site_id

__all__ = [
    "ISSUED_DIR",
    "SERVER_STEM",
    "create_ca",
    "ensure_consortium_certs",
    "issue_certificate",
    "record_issued",
]

#: File stem of the hub's own certificate and key.
SERVER_STEM = "server"

#: Sub-folder of the CA folder that keeps a copy of every certificate issued.
ISSUED_DIR = "issued"

_PrivateKey = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "radshare consortium"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: str, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def create_ca(
    common_name: str = "radshare consortium CA", days: int = 3650
) -> tuple[_PrivateKey, x509.Certificate]:
    """A self-signed CA key and certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _san(identity: str | None, server_hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in server_hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    if identity is not None:
        names.append(x509.UniformResourceIdentifier(f"{URI_SCHEME}{identity}"))
    return x509.SubjectAlternativeName(names)


def issue_certificate(
    ca_key: _PrivateKey,
    ca_cert: x509.Certificate,
    identity: str | None,
    *,
    server_hosts: Iterable[str] = (),
    days: int = 825,
    check_identity: bool = True,
) -> tuple[_PrivateKey, x509.Certificate]:
    """A key and certificate signed by the CA: a client ``identity``, or the server (identity None).

    ``check_identity=False`` lets tests make certificates the hub must refuse.
    """
    if identity is not None and check_identity:
        parse_identity(identity)  # refuse identities the hub would not accept
    hosts = list(server_hosts)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if identity is None else ExtendedKeyUsageOID.CLIENT_AUTH
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(identity or "radshare-hub", ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(identity, hosts), critical=False)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _save(out: Path, stem: str, key: _PrivateKey, cert: x509.Certificate) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    atomic_write_bytes(out / f"{stem}.key", pem, mode=0o600)
    atomic_write_bytes(
        out / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM), mode=0o644
    )


def record_issued(ca_dir: Path, cert: x509.Certificate) -> Path:
    """Keep a copy of ``cert`` as ``<ca_dir>/issued/<serial hex>.crt`` (the CA's ledger)."""
    folder = Path(ca_dir) / ISSUED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{cert.serial_number:x}.crt"
    atomic_write_bytes(path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return path


def _load_ca(out: Path) -> tuple[_PrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key((out / "ca.key").read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{out}: cannot read ca.key/ca.crt: {error}") from error
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{out / 'ca.key'}: expected an EC private key")
    return key, cert


def ensure_consortium_certs(
    out_dir: Path,
    identities: Iterable[str] = (),
    *,
    server_hosts: Iterable[str] = ("localhost", "127.0.0.1"),
) -> list[Path]:
    """Make the CA, the server certificate and one certificate per identity, where missing.

    Returns the certificate files written by this call (existing ones are kept as they are).
    """
    identities = list(identities)
    for name in identities:
        if name.startswith("site:"):  # the one site-id rule (shared.site_ids)
            check_site_id(name.removeprefix("site:"), where=f"identity {name!r}")
        parse_identity(name)  # refuse them all before writing anything
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if not (out / "ca.crt").exists():
        _save(out, "ca", *create_ca())
        written.append(out / "ca.crt")
    ca_key, ca_cert = _load_ca(out)
    wanted: list[tuple[str, str | None]] = [(SERVER_STEM, None)]
    wanted += [(identity_file_stem(i), i) for i in identities]
    for stem, identity in wanted:
        if (out / f"{stem}.crt").exists():
            continue
        hosts = server_hosts if identity is None else ()
        key, cert = issue_certificate(ca_key, ca_cert, identity, server_hosts=hosts)
        _save(out, stem, key, cert)
        record_issued(out, cert)
        written.append(out / f"{stem}.crt")
    return written
