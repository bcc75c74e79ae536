"""Revoked client certificates: a CRL signed by the consortium CA, checked on every call.

gRPC Python cannot consult a CRL during the TLS handshake, so the hub checks
the peer certificate's serial number on every call instead, in a server
interceptor that runs before any service (the registry and the health service
alike). A revoked certificate is refused with UNAUTHENTICATED, naming its
serial, even on a connection that was opened before the revocation.

The CRL file (``<tls_dir>/crl.pem`` by default, written by ``radshare-hub certs
revoke``) is re-read when it changes (mtime, size, inode), without a restart.
A CRL that is unreadable or not signed by the consortium CA stops the hub at
start (ConfigError); while running, such a file is ignored with an error in
the log and the last good list stays in force, as it does when the file is
deleted or replaced by an older CRL (a lower CRL number): a revocation is never
undone by removing a file or restoring an old one while the hub runs.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from hub.registry.auth import identity_from_certificate
from shared.errors import ConfigError

__all__ = ["RevocationInterceptor", "RevocationList", "crl_number", "read_crl"]

log = logging.getLogger("radshare.hub.registry")


def read_crl(path: Path, ca_cert: x509.Certificate) -> x509.CertificateRevocationList:
    """The CRL at ``path`` (PEM or DER), checked to be issued and signed by ``ca_cert``.

    Raises ConfigError naming the file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the CRL: {error}") from error
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_crl(data)
        )
    except ValueError as error:
        raise ConfigError(f"{path}: not a certificate revocation list: {error}") from error
    ca_name = ca_cert.subject.rfc4514_string()
    signed = crl.is_signature_valid(ca_cert.public_key())  # type: ignore[arg-type]
    if crl.issuer != ca_cert.subject or not signed:
        raise ConfigError(f"{path}: the CRL is not signed by the consortium CA ({ca_name})")
    return crl


def crl_number(crl: x509.CertificateRevocationList | None) -> int:
    """The CRL's sequence number (its CRLNumber extension; 0 without one or without a CRL)."""
    if crl is None:
        return 0
    try:
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        return 0


@functools.lru_cache(maxsize=1024)
def _peer(pem: bytes) -> tuple[int, str]:
    """Serial number and identity of a peer certificate (cached: parsed once per certificate)."""
    cert = x509.load_pem_x509_certificate(pem)
    return cert.serial_number, identity_from_certificate(pem) or "?"


class RevocationList:
    """The revoked serial numbers of a CRL file, reloaded when the file changes."""

    def __init__(self, path: Path, ca_cert: x509.Certificate):
        self.path = Path(path)
        self.ca_cert = ca_cert
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._revoked: dict[int, dt.datetime] = {}
        self._number = -1  # CRL number of the list in force
        if self.path.exists():
            self._load(self._stat())  # a bad CRL at start is a ConfigError

    @classmethod
    def for_tls_dir(cls, tls_dir: Path, crl_path: Path) -> RevocationList:
        """The CRL at ``crl_path``, verified against ``<tls_dir>/ca.crt``."""
        try:
            ca_cert = x509.load_pem_x509_certificate((Path(tls_dir) / "ca.crt").read_bytes())
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"{tls_dir}/ca.crt: cannot read the CA certificate: {error}"
            ) from error
        return cls(crl_path, ca_cert)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _load(self, stamp: tuple[int, int, int] | None) -> None:
        crl = read_crl(self.path, self.ca_cert)
        number = crl_number(crl)
        if number < self._number:
            raise ConfigError(
                f"{self.path}: CRL number {number} is older than the one in force ({self._number})"
            )
        self._revoked = {r.serial_number: r.revocation_date_utc for r in crl}
        self._stamp, self._number = stamp, number
        log.info("CRL %s: %d revoked certificate(s)", self.path, len(self._revoked))

    def refresh(self) -> None:
        """Re-read the file if it changed; keep the last good list if it is bad or gone."""
        stamp = self._stat()
        if stamp == self._stamp or stamp is None:
            return
        with self._lock:
            if stamp == self._stamp:
                return
            try:
                self._load(stamp)
            except ConfigError as error:
                self._stamp = stamp  # do not retry (and log) on every call
                log.error("%s; keeping the previous list (%d revoked)", error, len(self._revoked))

    def revoked_at(self, serial: int) -> dt.datetime | None:
        """When the certificate with this serial number was revoked, or None."""
        self.refresh()
        return self._revoked.get(serial)


class RevocationInterceptor(grpc.ServerInterceptor):
    """Refuses every call whose client certificate is on the revocation list."""

    def __init__(self, revocations: RevocationList):
        self.revocations = revocations

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: Any
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        return _guarded(handler, self._check)

    def _check(self, context: grpc.ServicerContext) -> None:
        pems = context.auth_context().get("x509_pem_cert") or ()
        if not pems:
            return  # the servicer refuses callers without a certificate
        serial, identity = _peer(pems[0])
        revoked_at = self.revocations.revoked_at(serial)
        if revoked_at is None:
            return
        log.warning("refused revoked certificate serial %x (%s)", serial, identity)
        context.abort(
            grpc.StatusCode.UNAUTHENTICATED,
            f"certificate serial {serial:x} ({identity}) was revoked on "
            f"{revoked_at.isoformat(timespec='seconds')}; ask the consortium operator for a "
            "new certificate",
        )


def _guarded(handler: Any, check: Callable[[grpc.ServicerContext], None]) -> Any:
    """The same method handler, with ``check(context)`` run before its behaviour."""
    factories = {
        "unary_unary": grpc.unary_unary_rpc_method_handler,
        "unary_stream": grpc.unary_stream_rpc_method_handler,
        "stream_unary": grpc.stream_unary_rpc_method_handler,
        "stream_stream": grpc.stream_stream_rpc_method_handler,
    }
    kind = next((k for k in factories if getattr(handler, k) is not None), None)
    if kind is None:
        return handler
    behaviour, factory = getattr(handler, kind), factories[kind]

    def checked(request: Any, context: grpc.ServicerContext) -> Any:
        check(context)
        return behaviour(request, context)

    return factory(
        checked,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
