"""Run both deployment guides, block by block, as a new user would: on loopback, tiny sizes.

Every ```bash block of ``deployment/docs/operator-guide.md`` and ``site-node-guide.md``
carries a marker comment (``<!-- guide-test: KIND [UNIT] phase=N -->``):

* ``run``: executed with bash (``set -euo pipefail``), in the role's own folder outside
  the source tree, with the shell variables of the role's earlier blocks;
* ``service UNIT``: the block installs a systemd unit; the test starts the unit's own
  ``ExecStart`` (with its ``Environment``/``EnvironmentFile``) instead and waits for its port;
* ``root`` / ``check``: need root, systemd or Docker, or repeat a step the other guide
  runs; every radshare verb and repository file they name must exist;
* ``skip``: not run (a verb that does not exist yet); listed in the test's output.

Blocks run phase by phase (operator first within a phase: it issues what the site
installs), in document order within a phase. The operator and the site are two
"machines": each gets its own ``/etc/radshare`` and state, and they exchange files only
through ``/media/exchange`` as the guides say. Paths and ports are mapped into a temp
folder and free loopback ports (:data:`_PATHS`, :func:`_ports`); sizes are made tiny by
the substitutions in :data:`TINY` (each must match, so the table cannot rot). A failing
block fails the test with its text and output.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer

from hub.cli import app as hub_app
from site_node.cli import app as site_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "deployment" / "docs"
GUIDES = {"hub": DOCS / "operator-guide.md", "site": DOCS / "site-node-guide.md"}
UNITS = ROOT / "deployment" / "systemd"
BIN = Path(sys.executable).parent
MARKER = re.compile(
    r"<!-- guide-test: (?P<kind>run|root|check|service|skip)(?: (?P<unit>[\w@.-]+))?"
    r" phase=(?P<phase>\d+)(?: \((?P<why>[^)]*)\))? -->\n```bash\n(?P<body>.*?)```",
    re.DOTALL,
)

# Production sizes in the guides -> tiny sizes for this test (pattern, replacement).
TINY: list[tuple[str, str]] = [
    (r"--num-images 2000 --resolution 256", "--num-images 80 --resolution 32"),
    (r"train_profile: gpu", "train_profile: tiny"),
    (r"max_resolution_px: 256", "max_resolution_px: 32"),
    (r"radshare-site train$", "radshare-site train --kimg-per-phase 0.02 --no-progress-bar"),
    (r"radshare-site train-labeller$", "radshare-site train-labeller --max-epochs 1"),
    (r"--labeller /var/lib/radshare-site/runs/labeller/export$",
     "\\g<0> --num-samples 100 --num-permutations 99"),
    (r'--out "/var/lib/radshare-hub/audits/\$GEN"$', "\\g<0> --num-samples 100"),
    # Class optimisation with the DenseNet-121 labeller takes minutes per image on 2 loaded
    # cores (a barely trained labeller: most starts give up); the test samples unlabelled.
    (r"--size 1000", "--size 16 --unlabelled"),
    (r"--out /var/lib/radshare-hub/runs/pooled$", "\\g<0> --small-network --max-epochs 1"),
    (r"--epochs 10$", "--epochs 1 --resamples 200"),
]  # fmt: skip


@dataclass(frozen=True)
class Block:
    """One marked ```bash block of a guide."""

    role: str  # "hub" (operator guide) or "site"
    kind: str
    unit: str | None
    phase: int
    body: str
    line: int


def _blocks(role: str) -> list[Block]:
    text = GUIDES[role].read_text()
    blocks = [
        Block(
            role,
            m["kind"],
            m["unit"],
            int(m["phase"]),
            m["body"],
            text[: m.start()].count("\n") + 1,
        )
        for m in MARKER.finditer(text)
    ]
    assert len(blocks) == text.count("```bash"), f"{GUIDES[role].name}: a bash block has no marker"
    return blocks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ports() -> dict[str, int]:
    """The guides' ports -> free loopback ports (hub, SuperLink, its health, SuperNode's two)."""
    return {str(p): _free_port() for p in (50051, 9092, 9098, 9094, 9095)}


_PATHS = ("/etc/radshare", "/var/lib/radshare-hub", "/var/lib/radshare-site", "/var/backups",
          "/data/cxr", "/media/", "/opt/radshare/bin")  # fmt: skip


class Guide:
    """Maps a guide's paths, hosts and ports onto the test's folder and loopback ports."""

    def __init__(self, tmp: Path, ports: dict[str, int]):
        self.tmp, self.ports = tmp, ports
        self.tiny_hits = dict.fromkeys(pattern for pattern, _ in TINY)

    def path(self, role: str, guide_path: str) -> str:
        if guide_path == "/opt/radshare/bin":
            return str(BIN)
        if guide_path == "/media/":
            return f"{self.tmp}/media/"
        owner = "site" if "radshare-site" in guide_path or guide_path == "/data/cxr" else role
        owner = "hub" if "radshare-hub" in guide_path or "backups" in guide_path else owner
        return f"{self.tmp}/{owner}{guide_path}"

    def localise(self, role: str, text: str, tiny: bool = True) -> str:
        if tiny:
            for pattern, replacement in TINY:
                text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
                self.tiny_hits[pattern] = (self.tiny_hits[pattern] or 0) + count
        paths = "|".join(re.escape(p) for p in _PATHS)
        text = re.sub(paths, lambda m: self.path(role, m.group(0)), text)
        text = re.sub(r"[\w.-]+\.consortium\.example:(\d+)", r"127.0.0.1:\1", text)
        return re.sub(r"\b(50051|9092|9098|9094|9095)\b", lambda m: str(self.ports[m[1]]), text)


def _verbs_named(body: str) -> Iterator[tuple[str, list[str]]]:
    for line in body.replace("\\\n", " ").splitlines():
        for program in ("radshare-hub", "radshare-site"):
            for match in re.finditer(rf"(?<![\w/-]){program} ([^|;&]*)", line):
                yield program, shlex.split(match.group(1), comments=True)


def _assert_verb_exists(program: str, argv: list[str]) -> None:
    command: click.Command = typer.main.get_command(
        hub_app if program == "radshare-hub" else site_app
    )
    args = [a for a in argv]
    while args and args[0].startswith("--"):
        args = args[2:]
    while isinstance(command, click.Group) and args and args[0] in command.commands:
        command = command.commands[args.pop(0)]
    assert not (isinstance(command, click.Group) and not command.invoke_without_command), (
        f"{program} {' '.join(argv)}: no such verb"
    )


def _check_block(block: Block) -> None:
    for program, argv in _verbs_named(block.body):
        _assert_verb_exists(program, argv)
    for name in re.findall(r"deployment/[\w/@.-]+", block.body):
        assert (ROOT / name).exists(), f"{block.role} guide line {block.line}: {name} missing"


class Services:
    """The systemd units the guides start, run from their ExecStart lines."""

    def __init__(self, guide: Guide, logs: Path):
        self.guide, self.logs = guide, logs
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, block: Block) -> None:
        assert block.unit is not None
        name, _, instance = block.unit.partition("@")
        unit_file = UNITS / (f"{name}@.service" if instance else f"{name}.service")
        text = unit_file.read_text().replace("\\\n", " ").replace("%i", instance)
        env = dict(os.environ, PATH=f"{BIN}:/usr/bin:/bin")
        for value in re.findall(r"^Environment=(\S+)$", text, re.MULTILINE):
            key, _, val = self.guide.localise(block.role, value, tiny=False).partition("=")
            env[key] = val
        for path in re.findall(r"^EnvironmentFile=(\S+)$", text, re.MULTILINE):
            local = Path(self.guide.localise(block.role, path, tiny=False))
            for line in local.read_text().splitlines():
                key, _, val = line.partition("=")
                env[key.strip()] = val.strip()
        exec_start = re.search(r"^ExecStart=(.*)$", text, re.MULTILINE)
        assert exec_start, f"{unit_file.name}: no ExecStart"
        line = re.sub(r"\$\{(\w+)\}", lambda m: env[m[1]], exec_start.group(1))
        argv = shlex.split(self.guide.localise(block.role, line, tiny=False))
        for folder in ("/var/lib/radshare-hub", "/var/lib/radshare-site"):
            Path(self.guide.path(block.role, folder)).mkdir(parents=True, exist_ok=True)
        Path(env.get("FLWR_HOME", self.logs)).mkdir(parents=True, exist_ok=True)
        log = (self.logs / f"{block.unit}.log").open("wb")
        self.procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
        ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", " ".join(argv))]
        ports += [int(argv[i + 1]) for i, a in enumerate(argv) if a == "--port"]
        if "serve" in argv:  # the hub's port is in its config file
            ports.append(self.guide.ports["50051"])
        self._wait(block.unit, ports)

    def _wait(self, unit: str, ports: list[int], timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        for port in ports:
            while True:
                assert self.procs[-1].poll() is None, f"{unit} exited: see {self.logs}/{unit}.log"
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                assert time.monotonic() < deadline, f"{unit}: port {port} not listening"
                time.sleep(0.5)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _run_block(block: Block, guide: Guide, tmp: Path) -> None:
    role_dir = tmp / block.role / "cwd"
    role_dir.mkdir(parents=True, exist_ok=True)
    state = tmp / block.role / "state.sh"
    state.touch()
    script = guide.localise(block.role, block.body)
    wrapped = f"set -euo pipefail\nset -a\nsource {state}\n{script}\nexport -p > {state}\n"
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": str(tmp / block.role / "home"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "MPLBACKEND": "Agg",
    }
    began = time.monotonic()
    result = subprocess.run(
        ["bash", "-c", wrapped], cwd=role_dir, env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    took = time.monotonic() - began
    print(f"[{block.role} guide line {block.line}, phase {block.phase}] {took:.1f} s")
    output = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, (
        f"{GUIDES[block.role].name} line {block.line} failed (exit {result.returncode}):\n"
        f"{script}\n--- output ---\n{output}"
    )
    assert "Traceback" not in output, f"{GUIDES[block.role].name} line {block.line}:\n{output}"


def test_every_bash_block_is_marked() -> None:
    for role in GUIDES:
        assert _blocks(role), f"{GUIDES[role].name}: no blocks"


def test_guides_run_on_loopback(tmp_path: Path) -> None:
    assert ROOT not in tmp_path.parents, "run outside the source tree"
    guide = Guide(tmp_path, _ports())
    services = Services(guide, tmp_path / "logs")
    (tmp_path / "logs").mkdir()
    blocks = [b for role in ("hub", "site") for b in _blocks(role)]
    skipped = [b for b in blocks if b.kind == "skip"]
    try:
        for phase in sorted({b.phase for b in blocks}):
            for block in (b for b in blocks if b.phase == phase):
                if block.kind == "run":
                    _run_block(block, guide, tmp_path)
                elif block.kind == "service":
                    _check_block(block)
                    services.start(block)
                elif block.kind in ("root", "check"):
                    _check_block(block)
                else:  # skip: not run, but its sizes still count for the TINY table
                    guide.localise(block.role, block.body)
    finally:
        services.stop()
    unused = [pattern for pattern, hits in guide.tiny_hits.items() if not hits]
    assert unused == [], f"TINY substitutions that match no guide command: {unused}"
    for block in skipped:
        print(f"SKIPPED {block.role} guide line {block.line}: {block.body.strip()[:80]}")
