"""A consortium on loopback as real processes: the hub's gRPC server, a SuperLink, SuperNodes.

::

    with Consortium(services_dir, tls_dir=tls, hub_root=hub_data, log_dir=logs) as consortium:
        hub_address = consortium.start_hub()
        connection = consortium.start_superlink()
        consortium.start_supernode("a", {"site": "a", "cache-dir": "/.../cache"}, key_dir=...)
        consortium.wait_for_nodes(1)
        ...                                   # flwr runs, publishing, pulling
    # every process is stopped here (SIGTERM, then SIGKILL), also on an exception

Each process gets a free port (ports are chosen just before start), a log file
``<log_dir>/<name>.log`` and a health wait: the hub through the standard gRPC health
service over mTLS, the SuperLink through ``GET /health``, a SuperNode through its gRPC
health server and then the SuperLink's list of online nodes. ``<root>/services.json``
records what runs (name, pid, ports, log); a later launcher on the same root first stops
processes a killed predecessor left behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import ssl
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deployment.flower import (
    FlowerConnection,
    make_supernode_key,
    online_node_count,
    register_supernode,
    write_connection,
)
from deployment.processes import Service, free_port, service_env, start_service, tool, wait_until
from hub.registry.server import SERVICE_NAME
from shared.errors import ConfigError
from shared.fileio import atomic_write_text
from shared.hub_client import ClientTLS, HubClient

__all__ = ["Consortium", "node_config_arg", "stop_leftovers"]

log = logging.getLogger("radshare.deployment.launcher")

SERVICES_FILE = "services.json"


def node_config_arg(values: Mapping[str, object]) -> str:
    """``--node-config`` text: ``key="string" number=3`` (TOML values, space separated)."""
    return " ".join(f"{key}={json.dumps(value)}" for key, value in values.items())


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def stop_leftovers(root: Path) -> list[str]:
    """Stop processes a previous launcher on ``root`` recorded and that still run; their names."""
    path = root / SERVICES_FILE
    if not path.is_file():
        return []
    stopped = []
    for name, entry in json.loads(path.read_text()).items():
        pid, marker = int(entry["pid"]), str(entry["marker"])
        if marker and marker in _cmdline(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, 9)
                stopped.append(name)
    path.unlink()
    if stopped:
        log.info("stopped leftovers of a previous run: %s", ", ".join(stopped))
    return stopped


class Consortium:
    """Start, watch and stop a hub, a SuperLink and SuperNodes on one host (loopback)."""

    def __init__(
        self,
        root: Path,
        *,
        tls_dir: Path,
        hub_root: Path,
        log_dir: Path,
        host: str = "127.0.0.1",
        flower_tls: bool = True,
    ) -> None:
        self.root, self.tls_dir, self.hub_root = root.resolve(), tls_dir.resolve(), hub_root
        self.log_dir, self.host, self.flower_tls = log_dir, host, flower_tls
        self.services: dict[str, Service] = {}
        self.hub_address: str | None = None
        self.connection: FlowerConnection | None = None
        self.root.mkdir(parents=True, exist_ok=True)
        stop_leftovers(self.root)

    def __enter__(self) -> Consortium:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    # ------------------------------------------------------------------ bookkeeping

    def _add(self, service: Service) -> Service:
        self.services[service.name] = service
        self._record()
        return service

    def _record(self) -> None:
        entries = {
            name: {
                "pid": s.pid,
                "ports": s.ports,
                "log": str(s.log_path),
                "marker": str(self.root),
                "alive": s.alive(),
            }
            for name, s in self.services.items()
        }
        atomic_write_text(self.root / SERVICES_FILE, json.dumps(entries, indent=2))

    def stop(self, name: str) -> int | None:
        """Stop one service (SIGTERM, then SIGKILL); its exit code."""
        code = self.services[name].stop()
        self._record()
        return code

    def kill(self, name: str) -> None:
        """SIGKILL one service and everything it spawned (a crashed site)."""
        self.services[name].kill()
        self._record()

    def stop_all(self) -> None:
        """Stop SuperNodes, then the SuperLink, then the hub."""
        order = sorted(self.services, key=lambda n: (not n.startswith("supernode"), n != "hub"))
        for name in order:
            code = self.services[name].stop()
            log.info("stopped %s (exit %s)", name, code)
        with contextlib.suppress(FileNotFoundError):
            (self.root / SERVICES_FILE).unlink()

    # ------------------------------------------------------------------ hub

    def start_hub(self, timeout_s: float = 90.0) -> str:
        """``radshare-hub serve`` on a free port; waits for gRPC health SERVING; its address."""
        port = free_port(self.host)
        argv = [
            tool("radshare-hub"),
            "serve",
            "--root",
            str(self.hub_root),
            "--host",
            self.host,
            "--port",
            str(port),
            "--tls-dir",
            str(self.tls_dir),
        ]
        env = service_env({"RADSHARE_LOG_COMPONENT": "hub"})
        service = self._add(
            start_service("hub", argv, log_dir=self.log_dir, env=env, ports={"grpc": port})
        )
        address = f"{self.host}:{port}"
        wait_until(
            lambda: self._hub_serving(address),
            timeout_s=timeout_s,
            what=f"hub on {address} (log {service.log_path})",
            alive=service.alive,
        )
        self.hub_address = address
        return address

    def _hub_serving(self, address: str) -> bool:
        with HubClient(address, ClientTLS.from_dir(self.tls_dir, "operator"), retries=0) as hub:
            return hub.health(SERVICE_NAME) == "SERVING"

    # ------------------------------------------------------------------ SuperLink

    def start_superlink(self, timeout_s: float = 90.0) -> FlowerConnection:
        """``flower-superlink`` on a free port (TLS + SuperNode auth unless insecure)."""
        port = free_port(self.host)
        home = self.root / "flwr" / "superlink"
        argv = [tool("flower-superlink"), "--host", self.host, "--port", str(port)]
        if self.flower_tls:
            argv += [
                "--ssl-ca-certfile",
                str(self.tls_dir / "ca.crt"),
                "--ssl-certfile",
                str(self.tls_dir / "server.crt"),
                "--ssl-keyfile",
                str(self.tls_dir / "server.key"),
                "--enable-supernode-auth",
            ]
        else:
            argv.append("--insecure")
        argv.append("--disable-runtime-dependency-installation")
        env = service_env({"FLWR_HOME": str(home)})
        service = self._add(
            start_service("superlink", argv, log_dir=self.log_dir, env=env, ports={"http": port})
        )
        wait_until(
            lambda: self._superlink_healthy(port),
            timeout_s=timeout_s,
            what=f"SuperLink on {self.host}:{port} (log {service.log_path})",
            alive=service.alive,
        )
        ca = self.tls_dir / "ca.crt" if self.flower_tls else None
        self.connection = FlowerConnection(self.root / "flwr" / "cli", f"{self.host}:{port}", ca)
        write_connection(self.connection)
        return self.connection

    def _superlink_healthy(self, port: int) -> bool:
        scheme = "https" if self.flower_tls else "http"
        context = (
            ssl.create_default_context(cafile=str(self.tls_dir / "ca.crt"))
            if self.flower_tls
            else None  # --insecure-flower: no CA needed, none read
        )
        url = f"{scheme}://{self.host}:{port}/health"
        with urllib.request.urlopen(url, timeout=2.0, context=context) as reply:
            return bool(reply.status == 200)

    # ------------------------------------------------------------------ SuperNodes

    def start_supernode(
        self,
        site_id: str,
        node_config: Mapping[str, object],
        *,
        key_dir: Path,
        timeout_s: float = 90.0,
    ) -> Service:
        """``flower-supernode`` for ``site_id`` (its key registered first when auth is on)."""
        if self.connection is None:
            raise ConfigError("start the SuperLink before a SuperNode")
        name = f"supernode-{site_id}"
        runtime_port, health_port = free_port(self.host), free_port(self.host)
        argv = [
            tool("flower-supernode"),
            "--superlink",
            self.connection.address,
            "--host",
            self.host,
            "--port",
            str(runtime_port),
            "--health-server-address",
            f"{self.host}:{health_port}",
            "--node-config",
            node_config_arg(node_config),
        ]
        argv += self._supernode_auth_args(site_id, key_dir)
        env = service_env(
            {
                "FLWR_HOME": str(self.root / "flwr" / name),
                "RADSHARE_LOG_COMPONENT": f"site.{site_id}",
            }
        )
        ports = {"runtime": runtime_port, "health": health_port}
        service = self._add(start_service(name, argv, log_dir=self.log_dir, env=env, ports=ports))
        wait_until(
            lambda: _grpc_serving(f"{self.host}:{health_port}"),
            timeout_s=timeout_s,
            what=f"SuperNode {site_id} (log {service.log_path})",
            alive=service.alive,
        )
        return service

    def _supernode_auth_args(self, site_id: str, key_dir: Path) -> list[str]:
        if not self.flower_tls:
            return ["--insecure"]
        assert self.connection is not None
        private_key, public_key = make_supernode_key(key_dir, site_id)
        with contextlib.suppress(ConfigError):  # already registered at this SuperLink
            register_supernode(self.connection, public_key)
        return [
            "--root-certificates",
            str(self.tls_dir / "ca.crt"),
            "--auth-supernode-private-key",
            str(private_key),
        ]

    def wait_for_nodes(self, count: int, timeout_s: float = 90.0) -> None:
        """Wait until the SuperLink lists ``count`` SuperNodes online."""
        assert self.connection is not None
        connection = self.connection
        superlink = self.services["superlink"]
        wait_until(
            lambda: online_node_count(connection) >= count,
            timeout_s=timeout_s,
            what=f"{count} SuperNode(s) online at {connection.address}",
            alive=superlink.alive,
        )


def _grpc_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
