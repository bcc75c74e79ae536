"""Certificate revocation on a real mTLS hub (loopback, SQLite registry), and ``sites``.

The attack: a site's certificate and key leak (or the site leaves the
consortium); whoever holds them keeps publishing. After ``radshare-hub certs
revoke`` the hub refuses that certificate on its very next call, on an
already-open connection, without a restart; the registry and blob store are
unchanged. Serials and key fingerprints are read independently from the files.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from test_registry_grpc import make_bundle, make_consortium, snapshot, staged_uploads
from typer.testing import CliRunner

from hub.ca import revoke
from hub.certs import create_ca
from hub.cli import app
from hub.registry.server import start_server
from shared.errors import ConfigError, SignatureError

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def hub_cli(*args: str) -> str:
    """Run ``radshare-hub ARGS`` in-process; its output (exit code 0 asserted)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def serial_of(crt: Path) -> int:
    return x509.load_pem_x509_certificate(crt.read_bytes()).serial_number


def fingerprint(key) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


@pytest.fixture
def consortium(tmp_path):
    return make_consortium(tmp_path / "consortium")


def test_revoked_certificate_is_refused_on_its_next_call(consortium, tmp_path):
    hub = start_server(consortium.hub_config(tmp_path / "hub"))
    root = tmp_path / "hub"
    bundles = [make_bundle(tmp_path / f"a{i}", "a", consortium.keys["a"], seed=i) for i in (1, 2)]
    serial_a = serial_of(consortium.tls / "site-a.crt")
    try:
        with consortium.client(hub.port, "site:a") as site_a:
            assert site_a.publish_bundle(bundles[0]).created
            before = snapshot(root)
            out = hub_cli("certs", "revoke", "--identity", "site:a", "--ca-dir", consortium.tls)
            assert f"revoked serial {serial_a:x}" in out
            # The same open connection: refused on the next call, naming serial and revocation.
            for call in (
                lambda: site_a.publish_bundle(bundles[1]),
                lambda: site_a.health(),
                lambda: site_a.upload_status("0" * 64),
            ):
                with pytest.raises(SignatureError) as refused:
                    call()
                assert refused.value.__cause__.code() == grpc.StatusCode.UNAUTHENTICATED
                assert f"certificate serial {serial_a:x} (site:a) was revoked" in str(refused.value)
        assert snapshot(root) == before and staged_uploads(root) == []
        # Other sites are unaffected.
        with consortium.client(hub.port, "site:b") as site_b:
            assert site_b.health() == "SERVING"
        # A renewed certificate (CA folder only) works again; the old one stays revoked.
        hub_cli("certs", "issue", "-i", "site:a", "--ca-dir", consortium.tls, "--renew")
        assert serial_of(consortium.tls / "site-a.crt") != serial_a
        with consortium.client(hub.port, "site:a") as renewed:
            assert renewed.publish_bundle(bundles[1]).created
    finally:
        hub.stop(grace_s=None)


def test_sites_lists_keys_certificates_and_the_revoked_site(consortium, tmp_path):
    root = tmp_path / "hub"
    serial_b = serial_of(consortium.tls / "site-b.crt")
    revoke(consortium.tls, [serial_b])
    (consortium.base / "site_keys" / "d.pub").unlink()  # site d's key was never registered
    where = (
        "--root",
        root,
        "--tls-dir",
        consortium.tls,
        "--site-keys-dir",
        consortium.base / "site_keys",
    )
    output = hub_cli("sites", *where, "--json")
    rows = {row["site_id"]: row for row in json.loads(output)}
    assert sorted(rows) == ["a", "b", "c", "d"]
    assert rows["b"]["state"] == "revoked"
    assert rows["a"]["state"] == "active" and rows["c"]["state"] == "active"
    assert rows["d"]["state"] == "key missing" and rows["d"]["key_id"] is None
    for site in "abc":
        assert rows[site]["key_id"] == fingerprint(consortium.keys[site])
        cert = x509.load_pem_x509_certificate((consortium.tls / f"site-{site}.crt").read_bytes())
        [listed] = rows[site]["certificates"]
        assert listed["serial_hex"] == f"{cert.serial_number:x}"
        assert listed["not_after"] == cert.not_valid_after_utc.isoformat(timespec="seconds")
    assert rows["b"]["certificates"][0]["revoked_at"] is not None
    table = hub_cli("sites", *where)
    [line_b] = [line for line in table.splitlines() if line.startswith("b ")]
    assert "revoked" in line_b and f"{serial_b:x}" in line_b


def _forged_crl(path: Path, serials: list[int]) -> None:
    """A CRL listing ``serials`` under the consortium CA's name, signed by another key."""
    import datetime as dt

    rogue_key, _ = create_ca("rogue")
    subject = x509.load_pem_x509_certificate((path.parent / "ca.crt").read_bytes()).subject
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(subject)
        .last_update(now)
        .next_update(now + dt.timedelta(days=1))
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    path.write_bytes(
        builder.sign(rogue_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )


def test_a_forged_crl_is_never_trusted(consortium, tmp_path):
    crl = consortium.tls / "crl.pem"
    serial_b = serial_of(consortium.tls / "site-b.crt")
    _forged_crl(crl, [serial_b])
    with pytest.raises(ConfigError, match="not signed by the consortium CA"):
        start_server(consortium.hub_config(tmp_path / "hub0"))
    crl.unlink()
    revoke(consortium.tls, [serial_of(consortium.tls / "site-a.crt")])
    older = crl.read_bytes()
    hub = start_server(consortium.hub_config(tmp_path / "hub"))
    try:
        # While serving, a forged CRL that would lock out site b (and un-revoke site a) is
        # ignored: the last good list stays in force; so does deleting the file.
        _forged_crl(crl, [serial_b])
        with consortium.client(hub.port, "site:b") as site_b:
            assert site_b.health() == "SERVING"
        crl.unlink()
        with consortium.client(hub.port, "site:a") as site_a, pytest.raises(SignatureError):
            site_a.health()
        # Nor does an older CRL, genuinely signed, restored over a newer one (a rollback).
        serial_c = serial_of(consortium.tls / "site-c.crt")
        revoke(consortium.tls, [serial_of(consortium.tls / "site-a.crt"), serial_c])  # number 1
        revoke(consortium.tls, [])  # number 2, the same list re-signed
        with consortium.client(hub.port, "site:c") as site_c, pytest.raises(SignatureError):
            site_c.health()
        crl.write_bytes(older)  # number 1, revoking only site a: would re-admit site c
        with (
            consortium.client(hub.port, "site:c") as site_c,
            pytest.raises(SignatureError, match="was revoked"),
        ):
            site_c.health()
    finally:
        hub.stop(grace_s=None)


def test_python_dash_m_runs_both_command_lines():
    for package, verbs in (("hub", ("sites", "certs", "serve")), ("site_node", ("publish",))):
        done = subprocess.run(
            [sys.executable, "-m", package, "--help"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "Usage:" in done.stdout and all(verb in done.stdout for verb in verbs)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub",
            "certs",
            "revoke",
            "--serial",
            "zz",
            "--ca-dir",
            "/nonexistent",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--serial 'zz': not a hexadecimal serial number" in done.stderr
