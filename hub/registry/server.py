"""Start the hub's gRPC server: mTLS, the registry service, the standard health service.

``start_server(config)`` returns a running ``HubServer`` (tests, embedding);
``serve(config)`` runs until SIGINT/SIGTERM (``radshare-hub serve``). One
server per registry root: the server holds ``<root>/.lock`` while it runs.
On start it purges staged uploads older than ``limits.upload_ttl_s`` and
removes orphan blobs a crash may have left. Every call passes the revocation
interceptor first: a certificate on the CRL is refused (``hub.registry.revocation``).
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from hub.archives.store import ArchiveStore
from hub.config import HubConfig
from hub.registry.base import ArtifactRegistry
from hub.registry.handlers import HubState
from hub.registry.keyring import Keyring
from hub.registry.revocation import RevocationInterceptor, RevocationList
from hub.registry.servicer import HubServicer
from hub.registry.sqlite_registry import SqliteRegistry
from hub.trust import HubKeyring
from shared.errors import ConfigError
from shared.locks import hold_exclusive_lock
from shared.proto import radshare_hub_pb2_grpc as pb_grpc

__all__ = [
    "SERVICE_NAME",
    "HubServer",
    "check_port_free",
    "serve",
    "server_credentials",
    "start_server",
]

log = logging.getLogger("radshare.hub.registry")

#: The full name of the registry service (for health checks).
SERVICE_NAME = "radshare.hub.v1.RadshareHub"


@dataclass
class HubServer:
    """A running hub: the gRPC server, its bound port, its state, and the root lock."""

    server: grpc.Server
    port: int
    state: HubState
    health: health.HealthServicer
    lock: IO[Any] | None

    def stop(self, grace_s: float | None = 1.0) -> None:
        """Mark NOT_SERVING, stop, release the root lock."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()
        if self.lock is not None:
            self.lock.close()

    def wait(self) -> None:
        """Block until the server stops."""
        self.server.wait_for_termination()


def server_credentials(tls_dir: Path) -> grpc.ServerCredentials:
    """mTLS credentials from ``ca.crt``, ``server.crt``, ``server.key``: client certs required."""
    try:
        ca = (tls_dir / "ca.crt").read_bytes()
        pair = ((tls_dir / "server.key").read_bytes(), (tls_dir / "server.crt").read_bytes())
    except OSError as error:
        raise ConfigError(
            f"{tls_dir}: missing TLS material ({error.filename}); make it with "
            f"`radshare-hub certs --out {tls_dir}`"
        ) from error
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=True)


def check_port_free(host: str, port: int) -> None:
    """ConfigError naming ``host:port`` if it cannot be bound (e.g. another hub listens there)."""
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as error:
        raise ConfigError(f"cannot bind {host}:{port}: {error.strerror} (--host)") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        try:
            probe.bind(address)
        except OSError as error:
            raise ConfigError(
                f"cannot bind {host}:{port}: {error.strerror}; another process is listening "
                "there: stop it or choose another --port"
            ) from None


def _lock_root(root: Path) -> IO[Any]:
    return hold_exclusive_lock(
        root / ".lock", f"{root}: another hub server is using this registry root"
    )


def _default_registry(config: HubConfig) -> tuple[ArtifactRegistry, IO[Any]]:
    lock = _lock_root(config.root)
    try:  # refuses a lost or corrupt database (RegistryUnavailableError), never empties it
        registry = SqliteRegistry(config.root)
        registry.collect_garbage()
    except BaseException:
        lock.close()
        raise
    return registry, lock


def _warm_up() -> None:
    """Pay the one-off cost of torch's meta device (≈2 s) at start, not in the first publish."""
    from shared.artifacts.generator import generator_tensor_spec
    from shared.networks.generator import GeneratorConfig

    tiny = {"resolution_px": 4, "z_dim": 1, "fmap_base": 1, "fmap_max": 1}
    generator_tensor_spec(GeneratorConfig.model_validate(tiny))


def start_server(
    config: HubConfig,
    *,
    registry: ArtifactRegistry | None = None,
    keyring: Keyring | None = None,
) -> HubServer:
    """Build and start the server (default: SQLite under ``config.root``, its key folder)."""
    credentials = server_credentials(config.tls_folder)
    check_port_free(config.host, config.port)
    revocations = RevocationList.for_tls_dir(config.tls_folder, config.crl_path)
    _warm_up()
    lock = None
    if registry is None:
        registry, lock = _default_registry(config)
    state = HubState(
        registry,
        keyring or HubKeyring.at_root(config.root, config.site_keys_folder),
        config.limits.to_limits(),
        archives=ArchiveStore(config.root / "archives"),
    )
    purged = registry.purge_stale(state.clock() - state.limits.upload_ttl_s)
    if purged:
        log.info("purged %d stale staged upload(s)", len(purged))
    message_bytes = max(8 * 2**20, 2 * state.limits.chunk_bytes + 2**20)
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=max(config.max_workers, state.limits.max_concurrent_uploads + 4)
        ),
        options=[
            ("grpc.max_receive_message_length", message_bytes),
            ("grpc.max_send_message_length", message_bytes),
            ("grpc.so_reuseport", 0),
        ],
        interceptors=[RevocationInterceptor(revocations)],  # revoked certificates, every call
    )
    pb_grpc.add_RadshareHubServicer_to_server(HubServicer(state), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    try:
        port = server.add_secure_port(config.address, credentials)
    except RuntimeError:  # grpc's "Failed to bind to address" (taken since the check below)
        port = 0
    if port == 0:
        if lock is not None:
            lock.close()
        raise ConfigError(f"cannot bind {config.address}: the address is in use or not local")
    server.start()
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    log.info("hub serving on %s:%d (registry %s)", config.host, port, type(registry).__name__)
    return HubServer(server, port, state, health_servicer, lock)


def serve(config: HubConfig) -> None:
    """Run the hub until SIGINT or SIGTERM."""
    hub = start_server(config)
    stopped = threading.Event()

    def _stop(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stopped.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"radshare hub listening on {config.host}:{hub.port}", flush=True)
    stopped.wait()
    hub.stop(grace_s=5.0)
