"""The container and service files say what the guides say, and their commands exist.

Parses deployment/compose.yaml, the Dockerfiles and the systemd units: every radshare verb
they run is a registered verb; every Flower flag they pass is one the installed Flower
accepts; every file they copy exists; the site image's config check needs no hub code.
Runs the compose file's SuperNode-key step twice (and once more after a half-made pair):
it must be idempotent. ``docker compose config`` runs only where Docker Compose exists.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
import yaml

from hub.cli import app as hub_app
from site_node.cli import app as site_app

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = ROOT / "deployment"
COMPOSE = DEPLOYMENT / "compose.yaml"
DOCKERFILES = {name: DEPLOYMENT / "docker" / f"Dockerfile.{name}" for name in ("hub", "site")}
UNITS = sorted((DEPLOYMENT / "systemd").glob("*.service"))
APPS = {"radshare-hub": hub_app, "radshare-site": site_app}


def _compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _commands_in_compose() -> list[list[str]]:
    """Each service's command (and healthcheck) as argv, compose's $$ unescaped."""
    out = []
    for service in _compose()["services"].values():
        for raw in (service.get("command"), service.get("healthcheck", {}).get("test")):
            if raw is None:
                continue
            argv = shlex.split(raw) if isinstance(raw, str) else list(raw)
            out.append([a for a in argv if a not in ("CMD", "CMD-SHELL")])
    return out


def _exec_starts() -> list[list[str]]:
    """ExecStart of every unit (continuation lines joined)."""
    out = []
    for unit in UNITS:
        text = unit.read_text().replace("\\\n", " ")
        for line in text.splitlines():
            if line.startswith("ExecStart="):
                out.append(shlex.split(line.removeprefix("ExecStart=")))
    return out


def _dockerfile_commands(path: Path) -> list[list[str]]:
    """CMD and HEALTHCHECK ... CMD of a Dockerfile, as argv."""
    text = path.read_text().replace("\\\n", " ")
    out = []
    for match in re.finditer(r"^(?:HEALTHCHECK .*?)?CMD\s+(\[.*\]|.*)$", text, re.MULTILINE):
        body = match.group(1).strip()
        out.append(yaml.safe_load(body) if body.startswith("[") else shlex.split(body))
    return out


def _verb_exists(program: str, argv: list[str]) -> bool:
    """``argv`` (after the program) names a registered verb, root options skipped."""
    group = typer.main.get_command(APPS[program])
    args = list(argv)
    if args == ["--help"]:  # the site image's default CMD lists the verbs
        return True
    while args and args[0].startswith("--"):  # root options: --config FILE
        args = args[2:] if "=" not in args[0] else args[1:]
    command: click.Command = group
    while isinstance(command, click.Group) and args and args[0] in command.commands:
        command = command.commands[args.pop(0)]
    return command is not group and not (
        isinstance(command, click.Group) and command.invoke_without_command is False
    )


def _radshare_invocations() -> list[tuple[str, list[str]]]:
    argvs = _commands_in_compose() + _exec_starts()
    argvs += [a for path in DOCKERFILES.values() for a in _dockerfile_commands(path)]
    found = []
    for argv in argvs:
        for i, token in enumerate(argv):
            name = Path(token).name
            if name in APPS:
                found.append((name, argv[i + 1 :]))
    return found


def test_every_radshare_verb_in_the_files_exists() -> None:
    found = _radshare_invocations()
    assert len(found) >= 5, found  # certs, serve, health (hub); health x2 (site) at least
    for program, argv in found:
        assert _verb_exists(program, argv), f"{program} {' '.join(argv)}: no such verb"


@pytest.mark.parametrize("program", ["flower-superlink", "flower-supernode"])
def test_every_flower_flag_in_the_files_is_accepted(program: str) -> None:
    tool = Path(sys.executable).parent / program
    help_text = subprocess.run(
        [str(tool), "--help"], capture_output=True, text=True, timeout=60, check=False
    ).stdout
    used = set()
    for argv in _commands_in_compose() + _exec_starts():
        if argv and Path(argv[0]).name == program:
            used |= {a.split("=")[0] for a in argv[1:] if a.startswith("--")}
    assert used, f"no {program} command found in compose.yaml or the units"
    unknown = sorted(flag for flag in used if flag not in help_text)
    assert unknown == [], f"{program} does not accept {unknown}"


def test_services_listen_where_the_guides_say() -> None:
    superlink = next(a for a in _exec_starts() if Path(a[0]).name == "flower-superlink")
    assert superlink[superlink.index("--host") + 1] == "0.0.0.0"  # sites connect from outside
    supernode = next(a for a in _exec_starts() if Path(a[0]).name == "flower-supernode")
    assert supernode[supernode.index("--host") + 1] == "127.0.0.1"
    assert supernode[supernode.index("--health-server-address") + 1] == "127.0.0.1:9095"
    unit = (DEPLOYMENT / "systemd" / "radshare-supernode@.service").read_text()
    assert "EnvironmentFile=/etc/radshare/supernode-%i.env" in unit
    assert "/etc/radshare/keys/supernode-%i.key" in unit and "User=radshare" in unit


def test_dockerfiles_copy_what_exists_and_the_config_checks_need() -> None:
    for path in DOCKERFILES.values():
        for match in re.finditer(r"^COPY (?!--from)(\S+(?: \S+)*) (\S+)$", path.read_text(), re.M):
            for source in match.group(1).split():
                assert (ROOT / source).exists(), f"{path.name}: COPY {source}: no such path"
    site = DOCKERFILES["site"].read_text()
    assert "COPY hub" not in site, "the site image must hold no hub code"
    assert "COPY deployment/configs/site.yaml /etc/radshare/examples/site.yaml" in site
    hub = DOCKERFILES["hub"].read_text()
    assert "RADSHARE_HUB_CONFIG=/etc/radshare/hub.yaml" in hub
    assert "COPY deployment/configs/hub.yaml /etc/radshare/hub.yaml" in hub


def test_site_config_check_needs_no_hub_code() -> None:
    code = (
        "import sys; from site_node.config import load_site_config; "
        f"load_site_config({str(DEPLOYMENT / 'configs' / 'site.yaml')!r}); "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('hub', 'deployment')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_config_files_load_with_the_cli_loaders() -> None:
    from hub.config import load_hub_config
    from site_node.config import load_site_config

    assert load_hub_config(DEPLOYMENT / "configs" / "consortium.yaml").port == 50051
    assert load_hub_config(DEPLOYMENT / "configs" / "hub.yaml").root == Path(
        "/var/lib/radshare-hub"
    )
    assert load_site_config(DEPLOYMENT / "configs" / "site.yaml").site_id == "a"


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_compose_key_step_is_idempotent(tmp_path: Path) -> None:
    service = _compose()["services"]["site-a-keys"]
    shell, flags, script = service["command"]
    script = script.replace("$$", "$").replace("/etc/radshare/keys", str(tmp_path))
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "SITE_ID": "a"}
    assert service["environment"]["SITE_ID"] == "a"

    def run() -> None:
        subprocess.run([shell, flags, script], env=env, check=True, timeout=60)

    run()
    key, pub = (tmp_path / "supernode.key").read_bytes(), (tmp_path / "supernode.pub").read_bytes()
    signing_key = (tmp_path / "site-a.ed25519").read_bytes()
    assert pub.startswith(b"ecdsa-sha2-nistp384 ") and b"radshare-site-a" in pub
    run()  # the second `up`
    assert (tmp_path / "supernode.key").read_bytes() == key
    assert (tmp_path / "supernode.pub").read_bytes() == pub
    assert (tmp_path / "site-a.ed25519").read_bytes() == signing_key
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["site-a.ed25519", "site-a.ed25519.pub", "supernode.key", "supernode.pub"]
    (tmp_path / "supernode.pub").unlink()  # a half-made pair is repaired from the key
    run()
    assert (tmp_path / "supernode.pub").read_bytes().split()[:2] == pub.split()[:2]


def _compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, timeout=30, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _compose_available(), reason="Docker Compose is not installed here")
def test_docker_compose_config_validates() -> None:
    subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"], check=True, timeout=120
    )


def test_certs_for_a_named_host_also_serve_loopback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography import x509

    from shared.cli_main import run_cli

    argv = ["certs", "--out", str(tmp_path), "-i", "operator"]
    argv += ["--server-host", "hub.consortium.example"]
    assert run_cli(hub_app, argv, prog="radshare-hub") == 0, capsys.readouterr().err
    cert = x509.load_pem_x509_certificate((tmp_path / "server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert {"hub.consortium.example", "localhost"} <= dns and "127.0.0.1" in ips


def test_site_profile_resolutions_match_the_training_presets() -> None:
    from site_node.config import PROFILE_RESOLUTION_PX
    from site_node.pggan.options import PROFILES

    assert {k: v["resolution_px"] for k, v in PROFILES.items()} == PROFILE_RESOLUTION_PX
