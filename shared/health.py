"""Query a standard gRPC health service (``grpc.health.v1.Health/Check``) and name the answer.

Used by ``radshare-hub health`` (the hub's registry over mTLS, the SuperLink's plain
health port) and ``radshare-site health`` (the SuperNode's ``--health-server-address``).
"""

from __future__ import annotations

import grpc

from shared.errors import FederationError

__all__ = ["check_health"]


def check_health(
    address: str,
    credentials: grpc.ChannelCredentials | None = None,
    service: str = "",
    timeout_s: float = 5.0,
) -> str:
    """The serving status of ``service`` at ``address`` (``SERVING``, ``NOT_SERVING``, ...).

    ``credentials`` None: a plaintext channel (Flower's health ports have no TLS; bind
    them to 127.0.0.1). Raises FederationError naming the address when nothing answers.
    """
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = (
        grpc.insecure_channel(address)
        if credentials is None
        else grpc.secure_channel(address, credentials)
    )
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
    except grpc.RpcError as error:
        code = error.code().name if hasattr(error, "code") else "ERROR"
        details = error.details() if hasattr(error, "details") else str(error)
        raise FederationError(f"{address}: no health answer ({code}: {details})") from None
    finally:
        channel.close()
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
