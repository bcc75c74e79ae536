"""Fault tolerance: the hub process is SIGKILLed mid-upload and restarted; the client resumes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_registry_grpc import make_bundle, make_consortium, snapshot, staged_uploads

from shared.artifacts.generator import GENERATOR_FILE
from shared.errors import RegistryError
from shared.networks.generator import GeneratorConfig

pytestmark = pytest.mark.integration

MEDIUM = GeneratorConfig(resolution_px=32, z_dim=64, fmap_base=512, fmap_max=128)  # ≈1.6 MB


def free_port() -> int:
    """A free port below the ephemeral range: no outgoing connection can take it mid-restart."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.is_file() else 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below the ephemeral range")


class HubProcess:
    """``radshare-hub serve --config ...`` in a subprocess."""

    def __init__(self, config: Path, log: Path):
        self.config, self.log = config, log
        self.proc: subprocess.Popen | None = None

    def start(self, consortium, port: int, timeout_s: float = 90.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from hub.cli import main; main()",
                    "serve",
                    "--config",
                    str(self.config),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).parents[1],
            )
        deadline = time.monotonic() + timeout_s
        with consortium.client(port, "operator", retries=0) as probe:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, self.log.read_text()[-2000:]
                try:
                    if probe.health() == "SERVING":
                        return
                except RegistryError:
                    time.sleep(0.2)
        raise AssertionError(f"hub did not become healthy: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def test_server_killed_mid_upload_then_client_resumes(tmp_path):
    consortium = make_consortium(tmp_path / "consortium")
    port, root = free_port(), tmp_path / "hub"
    config = tmp_path / "hub.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "root": str(root),
                "port": port,
                "tls_dir": str(consortium.tls),
                "site_keys_dir": str(consortium.base / "site_keys"),
                "limits": {"chunk_bytes": 65536},
            }
        )
    )
    bundle = make_bundle(tmp_path / "bundle", "a", consortium.keys["a"], cfg=MEDIUM)
    weights = (bundle / GENERATOR_FILE).read_bytes()
    hub = HubProcess(config, tmp_path / "hub.log")
    hub.start(consortium, port)
    sent: list[int] = []
    restarts: list[int] = []  # [bytes the hub had staged when killed, len(sent) then]

    def staged_bytes() -> int:
        """Bytes in committed-to staging folders (a ``.staging-*`` one may vanish mid-glob)."""
        total = 0
        for part in (root / "uploads").glob("*/*.part"):
            if not part.parent.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    total += part.stat().st_size
        return total

    def crash_halfway(name: str, offset: int) -> None:
        sent.append(offset)
        if not restarts and offset >= len(weights) // 2:
            deadline = time.monotonic() + 60
            while staged_bytes() < len(weights) // 4 and time.monotonic() < deadline:
                time.sleep(0.05)  # let the hub write part of what was sent, then kill it
            hub.kill()
            restarts.extend([staged_bytes(), len(sent)])
            hub.start(consortium, port)

    try:
        with consortium.client(
            port, "site:a", chunk_bytes=65536, backoff_s=0.2, retries=20
        ) as site:
            result = site.publish_bundle(bundle, on_chunk=crash_halfway)
        # The hub held part of the file when it died; the retry resumed from there, not from 0.
        staged_at_kill, kill_index = restarts
        assert len(weights) // 4 <= staged_at_kill < len(weights)
        assert min(sent[kill_index:]) == staged_at_kill and sent.count(0) == 1
        assert result.created
        assert result.artifact.files[0].sha256 == hashlib.sha256(weights).hexdigest()
        artifacts, files, blobs = snapshot(root)
        assert len(artifacts) == 1 and len(files) == 1 and len(blobs) == 1
        assert (root / blobs[0]).read_bytes() == weights
        assert staged_uploads(root) == []
    finally:
        hub.stop()
