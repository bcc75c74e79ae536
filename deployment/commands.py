"""Run one demo step as a separate process: the CLI verb a person would type, logged and timed.

:func:`run_command` starts ``argv`` with the component's tag in its environment, pumps
its output into ``<logs>/<component>.log`` (structured, redacted), logs a heartbeat with
the child's latest line every ``heartbeat_s`` (progress of long jobs), and raises
:class:`StepFailedError` with the tail of the output when it exits non-zero.
:func:`has_verb` tells whether ``radshare-site`` / ``radshare-hub`` offers a verb yet.
Steps of different sites may run in threads at once; :func:`stop_running` (the demo is
being stopped) terminates every running step and refuses new ones.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from deployment.processes import die_with_parent, service_env, tag_line, tool
from shared.errors import RadshareError

__all__ = ["StepFailedError", "has_verb", "run_command", "run_concurrently", "stop_running"]

log = logging.getLogger("radshare.deployment.demo")

_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()
_stopping = threading.Event()


class StepFailedError(RadshareError):
    """A step's process exited non-zero; the message holds the command and its last lines."""


@functools.cache
def has_verb(program: str, verb: str) -> bool:
    """Whether ``program`` (radshare-site / radshare-hub) registers ``verb``."""
    if program == "radshare-site":
        from site_node.cli import app
    elif program == "radshare-hub":
        from hub.cli import app
    else:
        return False
    names = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    return verb in names


def stop_running() -> None:
    """SIGTERM every running step (each saves what it can) and start no new one."""
    _stopping.set()
    with _running_lock:
        processes = list(_running)
    for process in processes:
        if process.poll() is None:
            process.terminate()


def run_concurrently(jobs: Sequence[Callable[[], object]], threads_per_step: int) -> None:
    """Run ``jobs`` (each runs steps) in threads, as many at once as the cores allow.

    Each step is a process with ``threads_per_step`` OMP threads, so two cores run two
    one-thread steps side by side; 0 (torch's default: every core) runs one job at a
    time. A job's exception is raised after the other jobs finish; Ctrl+C or SIGTERM
    stops every running step and starts no new one.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = 1 if threads_per_step == 0 else (cores or 1) // threads_per_step
    workers = max(1, min(len(jobs), workers))
    if workers == 1:
        for job in jobs:
            job()
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="demo-step") as pool:
        futures = [pool.submit(job) for job in jobs]
        try:
            for future in futures:
                future.result()  # a job's error is raised once the others have finished
        except Exception:
            raise
        except BaseException:  # Ctrl+C, SIGTERM (SystemExit): stop the others too
            stop_running()
            raise


def _pump(stream, sink, component: str, tail: deque[str]) -> None:
    for raw in iter(stream.readline, b""):
        line = tag_line(component, raw.decode("utf-8", errors="replace"))
        sink.write(line)
        sink.flush()
        tail.append(line.rstrip("\n"))


def run_command(
    component: str,
    argv: Sequence[str],
    *,
    log_dir: Path,
    what: str,
    timeout_s: float = 3600.0,
    heartbeat_s: float = 30.0,
) -> list[str]:
    """Run ``argv`` (first item a console-script name or a path) as ``component``.

    Returns the last output lines. Raises :class:`StepFailedError` on a non-zero exit or
    after ``timeout_s`` (the process is killed).
    """
    if _stopping.is_set():
        raise StepFailedError(f"{what}: not started, the demo is stopping")
    log_dir.mkdir(parents=True, exist_ok=True)
    argv = [tool(argv[0]) if "/" not in argv[0] else argv[0], *argv[1:]]
    env = service_env({"RADSHARE_LOG_COMPONENT": component})
    tail: deque[str] = deque(maxlen=25)
    started = time.monotonic()
    log.info("%s: %s", what, " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv)))
    with (log_dir / f"{component}.log").open("a", encoding="utf-8") as sink:
        process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=die_with_parent,  # a stopped demo stops its step
        )
        pump = threading.Thread(
            target=_pump, args=(process.stdout, sink, component, tail), daemon=True
        )
        pump.start()
        with _running_lock:
            _running.add(process)
        try:
            code = _wait(process, what, started, timeout_s, heartbeat_s, tail)
        finally:
            _stop(process)  # interrupted (Ctrl+C, SIGTERM): stop the step, let it checkpoint
            pump.join(timeout=10.0)
            with _running_lock:
                _running.discard(process)
    elapsed_s = time.monotonic() - started
    if code != 0:
        lines = [_message_of(line) for line in list(tail)[-12:]]
        raise StepFailedError(
            f"{what}: exit {code} after {elapsed_s:.0f} s: {_likely_cause(lines)}\n"
            + "last output:\n"
            + "\n".join(lines)
        )
    log.info("%s: done in %.1f s", what, elapsed_s)
    return list(tail)


def _stop(process: subprocess.Popen[bytes], grace_s: float = 60.0) -> None:
    """SIGTERM a still-running step, wait ``grace_s`` for it to save its state, then SIGKILL."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait(
    process: subprocess.Popen[bytes],
    what: str,
    started: float,
    timeout_s: float,
    heartbeat_s: float,
    tail: deque[str],
) -> int:
    next_beat = started + heartbeat_s
    while True:
        try:
            return process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if now - started > timeout_s:
                process.kill()
                process.wait()
                raise StepFailedError(f"{what}: killed after {timeout_s:.0f} s") from None
            if now >= next_beat:
                latest = _message_of(tail[-1]) if tail else "(no output yet)"
                log.info("%s: running %.0f s; latest: %s", what, now - started, latest[:160])
                next_beat = now + heartbeat_s


def _likely_cause(lines: list[str]) -> str:
    """The last line that names an error, else the last line."""
    for line in reversed(lines):
        if "Error" in line or "error:" in line or ("│" in line and line.strip("│ ─╰╭╮╯")):
            return line.strip("│ ").strip()
    return lines[-1] if lines else "(no output)"


def _message_of(line: str) -> str:
    """The msg part of a structured line (the whole line if it has none)."""
    marker = " msg="
    index = line.find(marker)
    message = line[index + len(marker) :].strip('"') if index >= 0 else line
    # A progress bar rewrites its line with carriage returns: keep the latest state.
    parts = [p.strip() for p in message.replace("\\r", "\r").split("\r") if p.strip()]
    return parts[-1] if parts else message
