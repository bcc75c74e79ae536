"""The consortium's sites as the hub sees them: signing key, certificates, state.

A site appears if it has a registered signing key (``<site_keys_dir>/<id>.pub``)
or a certificate naming ``site:<id>`` in the CA's ledger. Its state:

============  =====================================================================
active        a registered key and at least one certificate that is neither
              revoked nor expired
revoked       every certificate it holds is on the CRL
cert expired  no usable certificate, and at least one expired one (not revoked)
no cert       no certificate was issued (or the ledger is elsewhere: ``--ca-dir``)
key missing   no signing key registered: its manifests are refused
============  =====================================================================

Several problems are joined (``revoked, key missing``).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from hub.ca import IssuedCertificate, issued_certificates
from hub.registry.revocation import read_crl
from shared.artifacts.signing import key_id, load_public_key
from shared.errors import ConfigError, SignatureError

__all__ = ["SiteCertificate", "SiteStatus", "site_statuses"]

_SITE_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class SiteCertificate:
    """One certificate of a site and its state (active / revoked / expired)."""

    serial_hex: str
    not_after: str
    state: str
    revoked_at: str | None = None


@dataclass(frozen=True)
class SiteStatus:
    """A site's signing-key fingerprint (sha256 of the raw key), certificates and state."""

    site_id: str
    key_id: str | None
    certificates: tuple[SiteCertificate, ...]
    state: str


def _revocations(crl_path: Path, ca_crt: Path) -> dict[int, dt.datetime]:
    if not crl_path.exists():
        return {}
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{ca_crt}: cannot read the CA certificate: {error}") from error
    return {r.serial_number: r.revocation_date_utc for r in read_crl(crl_path, ca_cert)}


def _keys(keys_dir: Path) -> dict[str, str | None]:
    keys: dict[str, str | None] = {}
    for path in sorted(Path(keys_dir).glob("*.pub")):
        if _SITE_KEY.match(path.stem):
            try:
                keys[path.stem] = key_id(load_public_key(path))
            except SignatureError:
                keys[path.stem] = None  # unreadable: reported as missing
    return keys


def _certificate(
    cert: IssuedCertificate, revoked: dict[int, dt.datetime], now: dt.datetime
) -> SiteCertificate:
    when = revoked.get(cert.serial)
    state = "revoked" if when else ("expired" if cert.expired(now) else "active")
    return SiteCertificate(
        f"{cert.serial:x}",
        cert.not_after.isoformat(timespec="seconds"),
        state,
        when.isoformat(timespec="seconds") if when else None,
    )


def _state(key: str | None, certificates: tuple[SiteCertificate, ...]) -> str:
    states = {c.state for c in certificates}
    problems = []
    if "active" not in states:
        if not certificates:
            problems.append("no cert")
        elif "expired" in states:
            problems.append("cert expired")
        else:
            problems.append("revoked")
    if key is None:
        problems.append("key missing")
    return ", ".join(problems) or "active"


def site_statuses(
    keys_dir: Path,
    cert_dirs: list[Path],
    crl_path: Path,
    ca_crt: Path,
    *,
    now: dt.datetime | None = None,
) -> list[SiteStatus]:
    """Every site with a key or a certificate, sorted by id (see the module docstring).

    ``cert_dirs``: folders whose ``issued/`` and ``*.crt`` hold certificates (the
    hub's TLS folder, the CA folder); ``crl_path`` the CRL (absent: nothing revoked),
    verified against ``ca_crt``. ConfigError for a bad CRL.
    """
    now = now or dt.datetime.now(dt.UTC)
    revoked = _revocations(Path(crl_path), Path(ca_crt))
    keys = _keys(keys_dir)
    unique = {c.serial: c for d in cert_dirs for c in issued_certificates(d)}
    by_site: dict[str, list[IssuedCertificate]] = {}
    for cert in sorted(unique.values(), key=lambda c: (c.not_after, c.serial)):
        if cert.identity.startswith("site:"):
            by_site.setdefault(cert.identity.removeprefix("site:"), []).append(cert)
    statuses = []
    for site in sorted(set(keys) | set(by_site)):
        certificates = tuple(_certificate(c, revoked, now) for c in by_site.get(site, []))
        key = keys.get(site)
        statuses.append(SiteStatus(site, key, certificates, _state(key, certificates)))
    return statuses
