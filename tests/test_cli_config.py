"""One config file per role: ``--config`` / ``$RADSHARE_*_CONFIG`` give every verb its defaults.

Real files, the real CLIs in-process: the hub's ``register-site`` writes into the
configured root (not ``./hub-data``), a flag still wins, the consortium file is accepted,
and ``radshare-site config`` shows what each verb takes from the site file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.cli import app as hub_app
from shared.cli_main import run_cli
from site_node.cli import app as site_app
from site_node.keys import generate_site_key

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def public_key(tmp_path: Path) -> Path:
    return generate_site_key(tmp_path / "keys", "a").public_key


def test_register_site_uses_the_configured_root(
    tmp_path: Path, public_key: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "hub.yaml"
    config.write_text(f"root: {tmp_path / 'srv'}\nport: 50123\n")
    monkeypatch.setenv("RADSHARE_HUB_CONFIG", str(config))
    code = run_cli(hub_app, ["register-site", "a", "--public-key", str(public_key)])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "srv" / "site_keys" / "a.pub").read_bytes() == public_key.read_bytes()
    assert not (tmp_path / "hub-data").exists()
    # A flag on the command line wins over the file.
    code = run_cli(hub_app, ["register-site", "a", "--public-key", str(public_key),
                             "--root", str(tmp_path / "other")])  # fmt: skip
    assert code == 0 and (tmp_path / "other" / "site_keys" / "a.pub").is_file()


def test_consortium_file_is_a_hub_config(capsys: pytest.CaptureFixture[str]) -> None:
    config = ROOT / "deployment" / "configs" / "consortium.yaml"
    assert run_cli(hub_app, ["--config", str(config), "config"]) == 0
    out = capsys.readouterr().out
    lines = {line.split(":")[0]: line for line in out.splitlines() if ": --" in line}
    assert "valid" in out.splitlines()[0]
    assert "--hub-root /var/lib/radshare-hub" in lines["pool"]
    assert "--hub-key /var/lib/radshare-hub/hub_signing.key" in lines["train-classifier"]
    assert (
        "--hub 127.0.0.1:50051" in lines["list"] and "--tls-dir /etc/radshare/tls" in lines["list"]
    )


def test_bad_config_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "site.yaml"
    config.write_text("max_resolution_px: 200\n")
    assert run_cli(site_app, ["--config", str(config), "config"], prog="radshare-site") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "max_resolution_px" in err and "200" in err


def test_site_config_gives_each_verb_its_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text("site_id: b\nwork_dir: work\ntrain_profile: cpu\n")
    monkeypatch.setenv("RADSHARE_SITE_CONFIG", str(config))
    assert run_cli(site_app, ["config"], prog="radshare-site") == 0
    out = capsys.readouterr().out
    work = tmp_path / "work"  # relative to the file's folder
    assert (
        f"train: --cache {work}/cache --out {work}/runs/pggan --profile cpu --resolution 64" in out
    )
    assert "publish: --hub hub.consortium.example:50051" in out and "--site b" in out
