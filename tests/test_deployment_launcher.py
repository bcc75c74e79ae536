"""The loopback launcher with real processes: hub, SuperLink (TLS + SuperNode auth), SuperNodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployment.flower import run_app
from deployment.launcher import SERVICES_FILE, Consortium, node_config_arg, stop_leftovers
from shared.hub_client import ClientTLS, HubClient

ECHO_APP = Path(__file__).parent / "fixtures" / "flower_echo"


def _certs(folder: Path) -> Path:
    tls = folder / "tls"
    hub = Path(sys.executable).parent / "radshare-hub"
    subprocess.run(
        [str(hub), "certs", "--out", str(tls), "-i", "site:a", "-i", "site:b", "-i", "operator"],
        check=True,
        capture_output=True,
    )
    return tls


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


def test_node_config_arg_is_toml_pairs():
    text = node_config_arg({"site": "a", "cache-dir": "/x y/c", "num": 3})
    assert text == 'site="a" cache-dir="/x y/c" num=3'


@pytest.mark.integration
@pytest.mark.slow
def test_consortium_runs_a_flower_app_and_survives_a_killed_site(tmp_path: Path):
    tls = _certs(tmp_path)
    services = tmp_path / "services"
    with Consortium(
        services, tls_dir=tls, hub_root=tmp_path / "hub", log_dir=tmp_path / "logs"
    ) as consortium:
        # The hub answers gRPC health over mTLS with the operator's certificate.
        address = consortium.start_hub()
        with HubClient(address, ClientTLS.from_dir(tls, "operator"), retries=0) as hub:
            assert hub.health() == "SERVING"

        # Two sites join a TLS SuperLink with registered keys; a run reaches both.
        connection = consortium.start_superlink()
        for site in ("a", "b"):
            consortium.start_supernode(site, {"site": site}, key_dir=tmp_path / "keys")
        consortium.wait_for_nodes(2)
        recorded = json.loads((services / SERVICES_FILE).read_text())
        assert set(recorded) == {"hub", "superlink", "supernode-a", "supernode-b"}
        out = tmp_path / "echo.json"
        run = run_app(
            connection,
            ECHO_APP,
            run_config={"out-file": str(out), "expected-nodes": 2},
            log_path=tmp_path / "logs" / "run.log",
            timeout_s=240,
        )
        assert run.completed, run
        assert json.loads(out.read_text()) == {"sites": ["a", "b"], "errors": []}

        # Site b crashes: the next run completes with site a only.
        consortium.kill("supernode-b")
        out.unlink()
        run = run_app(
            connection,
            ECHO_APP,
            run_config={"out-file": str(out), "expected-nodes": 2},
            log_path=tmp_path / "logs" / "run2.log",
            timeout_s=300,
        )
        assert run.completed, run
        assert json.loads(out.read_text())["sites"] == ["a"]
        pids = [s.pid for s in consortium.services.values()]

    # Leaving the block stops every process and forgets them.
    assert not any(_alive(pid) for pid in pids)
    assert not (services / SERVICES_FILE).exists()
    lines = (tmp_path / "logs" / "superlink.log").read_text().splitlines()
    assert lines and all(" component=superlink " in line for line in lines)


@pytest.mark.integration
def test_leftovers_of_a_killed_launcher_are_stopped(tmp_path: Path):
    services = tmp_path / "services"
    services.mkdir()
    sleeper = subprocess.Popen(
        [sys.executable, "-c", f"import time; time.sleep(120)  # {services}"],
        start_new_session=True,
    )
    (services / SERVICES_FILE).write_text(
        json.dumps({"hub": {"pid": sleeper.pid, "marker": str(services), "ports": {}}})
    )
    cmdline = Path(f"/proc/{sleeper.pid}/cmdline")
    deadline = time.monotonic() + 30  # a leftover ran long ago; this one must have exec'd
    while str(services) not in cmdline.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stop_leftovers(services) == ["hub"]
    assert sleeper.wait(timeout=10) == -9
    assert not (services / SERVICES_FILE).exists()


@pytest.mark.integration
def test_leftover_record_does_not_kill_an_unrelated_process(tmp_path: Path):
    services = tmp_path / "services"
    services.mkdir()
    other = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    (services / SERVICES_FILE).write_text(
        json.dumps({"hub": {"pid": other.pid, "marker": str(services), "ports": {}}})
    )
    try:
        assert stop_leftovers(services) == []
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
