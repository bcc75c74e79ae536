"""The Flower deployment engine from the outside: SuperNode keys, the CLI connection, runs.

``flwr`` reads its SuperLink connections from ``$FLWR_HOME/config.toml``; :func:`write_connection`
writes one named connection there. SuperNode authentication uses ECDSA P-384 keys in OpenSSH
format (:func:`make_supernode_key`); the public half is registered at the SuperLink with
``flwr supernode register``. :func:`run_app` submits an app folder with ``flwr run``, polls the
run until it finishes (logging progress), and saves the run's log stream to a file.

A site's SuperNode gets its ClientApp's node config from :func:`site_node_config`: its
private folders, how it reaches the hub's registry (to pull and verify what a query
names), the consortium keyring (:func:`write_consortium_keyring`), its signing key
(audit replies are signed) and its query-policy caps (``site_node.flower.client_app``).
:func:`registered_generator_run_config` names a pulled generator in an ``audit`` run
config by registry id and weights sha256.
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from deployment.processes import service_env, tag_line, tool
from shared.errors import ConfigError, FederationError
from shared.fileio import atomic_write_bytes, atomic_write_text

__all__ = [
    "FlowerConnection",
    "FlowerRun",
    "make_supernode_key",
    "online_node_count",
    "register_supernode",
    "registered_generator_run_config",
    "run_app",
    "site_node_config",
    "write_connection",
    "write_consortium_keyring",
]

log = logging.getLogger("radshare.deployment.flower")

CONNECTION_NAME = "consortium"  # as in the operator guide and the hub verbs' default


@dataclass(frozen=True)
class FlowerConnection:
    """How the ``flwr`` CLI reaches a SuperLink: its FLWR_HOME, address and CA (None: insecure)."""

    flwr_home: Path
    address: str
    root_certificates: Path | None
    name: str = CONNECTION_NAME

    def env(self) -> dict[str, str]:
        """The environment for ``flwr`` commands using this connection."""
        return service_env({"FLWR_HOME": str(self.flwr_home)})


@dataclass(frozen=True)
class FlowerRun:
    """A finished ``flwr run``: its id, final status, seconds, and where its log is."""

    run_id: str
    status: str
    elapsed_s: float
    log_path: Path

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


def write_connection(connection: FlowerConnection) -> Path:
    """Write ``$FLWR_HOME/config.toml`` with ``connection`` as the default; returns its path."""
    connection.flwr_home.mkdir(parents=True, exist_ok=True)
    lines = [
        "[superlink]",
        f'default = "{connection.name}"',
        "",
        f"[superlink.{connection.name}]",
        f'address = "{connection.address}"',
    ]
    if connection.root_certificates is None:
        lines.append("insecure = true")
    else:
        lines.append(f'root-certificates = "{connection.root_certificates.resolve()}"')
    path = connection.flwr_home / "config.toml"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def make_supernode_key(out_dir: Path, site_id: str) -> tuple[Path, Path]:
    """An ECDSA P-384 key pair (OpenSSH format) for a SuperNode; kept if it already exists."""
    private_path = out_dir / f"supernode-{site_id}.key"
    public_path = out_dir / f"supernode-{site_id}.pub"
    if private_path.exists() and public_path.exists():
        return private_path, public_path
    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public_bytes = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    atomic_write_bytes(private_path, private_bytes, mode=0o600)
    public_path.write_bytes(public_bytes + b" radshare-site-" + site_id.encode() + b"\n")
    return private_path, public_path


def _flwr(connection: FlowerConnection, *args: str, timeout_s: float = 60.0) -> str:
    """Run ``flwr ARGS`` with this connection; returns stdout (ConfigError on a failure)."""
    result = subprocess.run(
        [tool("flwr"), *args],
        env=connection.env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise ConfigError(
            f"flwr {' '.join(args[:2])}: exit {result.returncode}: "
            f"{(result.stdout + result.stderr).strip()[-800:]}"
        )
    return result.stdout


def _json_reply(text: str) -> dict[str, object]:
    """The JSON object in ``flwr ... --format json`` output (it may print a banner first)."""
    start = text.find("{")
    reply = json.loads(text[start:]) if start >= 0 else {}
    if not isinstance(reply, dict):
        raise ConfigError(f"flwr: unexpected output {text[-300:]!r}")
    return reply


def register_supernode(connection: FlowerConnection, public_key: Path) -> None:
    """Register a SuperNode's public key at the SuperLink (``flwr supernode register``)."""
    out = _flwr(connection, "supernode", "register", str(public_key), connection.name)
    log.info("registered SuperNode key %s: %s", public_key.name, out.strip().splitlines()[-1:])


def online_node_count(connection: FlowerConnection) -> int:
    """How many SuperNodes the SuperLink lists as online."""
    reply = _json_reply(_flwr(connection, "supernode", "ls", connection.name, "--format", "json"))
    nodes = reply.get("nodes")
    if not isinstance(nodes, list):
        return 0
    return sum(1 for n in nodes if isinstance(n, dict) and n.get("status") == "online")


def _run_config_arg(run_config: Mapping[str, object]) -> list[str]:
    """``--run-config 'k="v" n=3'`` (TOML values) or nothing."""
    if not run_config:
        return []
    pairs = [f"{key}={json.dumps(value)}" for key, value in run_config.items()]
    return ["--run-config", " ".join(pairs)]


def _run_status(connection: FlowerConnection, run_id: str) -> str:
    reply = _json_reply(
        _flwr(connection, "ls", connection.name, "--run-id", run_id, "--format", "json")
    )
    runs = reply.get("runs") or [{}]
    first = runs[0] if isinstance(runs, list) and runs else {}
    return str(first.get("status", "unknown")) if isinstance(first, dict) else "unknown"


def run_app(
    connection: FlowerConnection,
    app_dir: Path,
    *,
    run_config: Mapping[str, object],
    log_path: Path,
    timeout_s: float,
    on_poll: Callable[[float, str], None] | None = None,
) -> FlowerRun:
    """Submit ``app_dir`` with ``flwr run``, wait for it to finish, save its log stream.

    ``on_poll(elapsed_s, status)`` is called every few seconds (progress). Raises
    :class:`FederationError` when the run does not finish within ``timeout_s`` (it is
    stopped) or cannot be submitted.
    """
    started = time.monotonic()
    try:
        submitted = _flwr(
            connection,
            "run",
            str(app_dir),
            connection.name,
            *_run_config_arg(run_config),
            "--format",
            "json",
            timeout_s=120.0,
        )
    except ConfigError as error:
        raise FederationError(f"{app_dir}: flwr run failed: {error}") from error
    run_id = str(_json_reply(submitted).get("run-id", ""))
    if not run_id:
        raise FederationError(f"{app_dir}: flwr run returned no run id: {submitted[-300:]!r}")
    status = _wait_for_run(connection, run_id, started, timeout_s, on_poll)
    _save_run_log(connection, run_id, log_path)
    return FlowerRun(run_id, status, time.monotonic() - started, log_path)


def _wait_for_run(
    connection: FlowerConnection,
    run_id: str,
    started: float,
    timeout_s: float,
    on_poll: Callable[[float, str], None] | None,
) -> str:
    status = "pending"
    while not status.startswith("finished"):
        elapsed_s = time.monotonic() - started
        if elapsed_s > timeout_s:
            _flwr(connection, "stop", run_id, connection.name)
            raise FederationError(f"flwr run {run_id}: not finished after {timeout_s:.0f} s")
        time.sleep(3.0)
        try:
            status = _run_status(connection, run_id)
        except (ConfigError, ValueError) as error:
            log.warning("run %s: status unknown (%s)", run_id, error)
        if on_poll is not None:
            on_poll(time.monotonic() - started, status)
    return status


def _save_run_log(connection: FlowerConnection, run_id: str, log_path: Path) -> None:
    try:
        text = _flwr(connection, "log", run_id, connection.name, "--show", timeout_s=60.0)
    except (ConfigError, subprocess.TimeoutExpired) as error:
        text = f"(log of run {run_id} unavailable: {error})\n"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as sink:
        for line in text.splitlines():
            sink.write(tag_line("serverapp", line))


def site_node_config(
    site_id: str,
    *,
    cache_dir: Path,
    work_dir: Path,
    hub: str,
    tls_dir: Path,
    keyring: Path,
    signing_key: Path,
    policy: Mapping[str, int | bool] | None = None,
    **extra: object,
) -> dict[str, object]:
    """A site ClientApp's node config (``--node-config``); ``policy``: caps by node-config key.

    ``policy`` keys: ``max-audit-samples``, ``max-audit-permutations``,
    ``max-audits-per-artifact-per-day``,
    ``max-evaluations-per-artifact-per-day``, ``max-queries-per-day``,
    ``allow-federated-labeller`` (absent: the site's defaults). ``extra``: e.g.
    ``labeller_dir=...`` becomes ``labeller-dir``.
    """
    config: dict[str, object] = {
        "site": site_id,
        "cache-dir": str(cache_dir),
        "work-dir": str(work_dir),
        "hub": hub,
        "tls-dir": str(tls_dir),
        "keyring": str(keyring),
        "signing-key": str(signing_key),
    }
    config.update({key.replace("_", "-"): value for key, value in extra.items()})
    for key, value in (policy or {}).items():
        config[key] = str(value).lower() if isinstance(value, bool) else int(value)
    return config


def write_consortium_keyring(public_keys: Mapping[str, Path], out: Path) -> Path:
    """Write the consortium keyring file (site id → Ed25519 PEM) from public-key files.

    What ``radshare-hub keyring export`` hands to the sites; rewritten atomically, so a
    launcher may call it again after registering another site.
    """
    from shared.artifacts.keyring import keyring_from_pems

    keyring = keyring_from_pems(
        {site: path.read_bytes() for site, path in public_keys.items()}, source=str(out)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, keyring.to_file_model().model_dump_json(indent=2) + "\n")
    return out


def registered_generator_run_config(bundle_dir: Path) -> dict[str, str]:
    """``generator-id`` and ``weights-sha256`` of a pulled (verified) generator bundle."""
    from shared.artifacts.bundle import SignedManifest
    from shared.artifacts.generator import GENERATOR_FILE

    path = Path(bundle_dir) / "manifest.json"
    manifest = SignedManifest.from_json(path.read_bytes(), where=str(path))
    return {
        "generator-id": manifest.artifact_id,
        "weights-sha256": manifest.model.files[GENERATOR_FILE].sha256,
    }
