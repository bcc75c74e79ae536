"""Real child processes with a component tag: start, log, wait for health, stop.

Every service the launcher starts is a :class:`Service`: its own session (so a stop
reaches the process and everything it spawned), killed with its parent on Linux
(``PR_SET_PDEATHSIG``), and its stdout/stderr pumped line by line into
``<logs>/<name>.log`` as structured lines (``component=<name>``), with identifiers
redacted (:func:`shared.logs.redact`). Lines a radshare process already wrote as
``ts=... component=...`` pass through unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from shared.errors import ConfigError
from shared.logs import redact

__all__ = [
    "Service",
    "die_with_parent",
    "free_port",
    "service_env",
    "start_service",
    "tag_line",
    "tool",
    "wait_until",
]

log = logging.getLogger("radshare.deployment")

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_PR_SET_PDEATHSIG = 1


def tool(name: str) -> str:
    """The path of console script ``name`` next to this interpreter (the venv), else ``name``."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def service_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every child: this venv first on PATH, Flower quiet and offline."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        {
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
        }
    )
    env.update(extra or {})
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], bool], *, timeout_s: float, what: str, alive: Callable[[], bool]
) -> None:
    """Poll ``check`` every 0.5 s until true; ConfigError if ``alive`` turns false or time ends."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise ConfigError(f"{what}: the process exited before it became healthy")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.5)
    raise ConfigError(f"{what}: not healthy after {timeout_s:.0f} s")


def die_with_parent() -> None:
    """In the child, before exec: receive SIGTERM when the parent dies (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Service:
    """A running child process, its component name, its log file and its ports."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)
    _pump: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the whole session, wait ``timeout_s``, then SIGKILL; returns the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout_s)
        if self._pump is not None:
            self._pump.join(timeout=2.0)
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL the whole session at once (what a crash or a pulled cable looks like)."""
        self.stop(timeout_s=5.0, sig=signal.SIGKILL)


def tag_line(component: str, line: str) -> str:
    """One output line as a structured, redacted log line tagged ``component``."""
    text = redact(_ANSI.sub("", line.rstrip("\n")))
    if text.startswith("ts=") and " component=" in text:
        return text + "\n"
    ts = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
    return f"ts={ts} component={component} msg={_quote(text)}\n"


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _pump_lines(component: str, stream: IO[bytes], log_path: Path) -> None:
    with log_path.open("a", encoding="utf-8") as sink:
        for raw in iter(stream.readline, b""):
            sink.write(tag_line(component, raw.decode("utf-8", errors="replace")))
            sink.flush()


def start_service(
    name: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ports: Mapping[str, int] | None = None,
) -> Service:
    """Start ``argv`` as component ``name`` in its own session, logging to ``log_dir/name.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else service_env(),
        cwd=cwd,
        start_new_session=True,
        preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
    )
    assert process.stdout is not None
    pump = threading.Thread(
        target=_pump_lines, args=(name, process.stdout, log_path), name=f"log-{name}", daemon=True
    )
    pump.start()
    log.info("started %s, log %s", name, log_path)
    return Service(name, list(argv), process, log_path, dict(ports or {}), pump)
