"""A published generator audited at two sites over a real Flower deployment on loopback.

Processes: an mTLS hub (in this process), a TLS SuperLink with SuperNode
authentication and two SuperNodes (site a: site A's cache, site b: site B's cache).
Site a audits its generator locally, publishes it (publish puts the run's latest
audit in the manifest); the operator pulls it; ``flwr run hub/flower/app`` sends
``query.audit`` naming it by registry id and weights sha256 to both sites, which pull
it from the hub over their own identities and verify it against the consortium
keyring (b audits a's generator against its own data: cross-site leakage); each site
signs its AuditReport; the hub writes the signed bytes per site and a readable report,
the operator stores those bytes unchanged at the hub as ``radshare-hub audit`` does,
and an auditor reads them back over gRPC while a site is refused. Each site's query
log lists the request.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from helpers_cache import build_site_cache
from typer.testing import CliRunner

from deployment.flower import (
    registered_generator_run_config,
    run_app,
    site_node_config,
    write_consortium_keyring,
)
from deployment.launcher import Consortium
from hub.audit.report import read_audit_reports, read_signed_audit_reports, upload_audit_reports
from hub.cli import app as hub_app
from hub.config import load_hub_config
from hub.registry.server import start_server
from shared.artifacts.audit import verify_audit_report
from shared.artifacts.bundle import read_bundle
from shared.artifacts.signing import load_public_key
from shared.errors import PermissionDeniedError, SignatureError
from shared.hub_client import ClientTLS, HubClient
from shared.networks.generator import Generator, GeneratorConfig
from site_node.cli import app as site_app
from site_node.pggan.export import export_generator

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.realdata]


def keyring_of(path: Path):
    from shared.artifacts.keyring import ConsortiumKeyring

    return ConsortiumKeyring.load(path)


APP_DIR = Path(__file__).parents[1] / "hub" / "flower" / "app"
GEN_CFG = GeneratorConfig(resolution_px=32, z_dim=16, fmap_base=64, fmap_max=16)
runner = CliRunner()


def invoke(app, *args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


def test_published_generator_is_audited_at_both_sites(site_a, site_b, tmp_path):
    # Consortium material and a hub; site a's signing key registered.
    tls, keys, root = tmp_path / "tls", tmp_path / "keys", tmp_path / "hub"
    identities = ("site:a", "site:b", "operator", "auditor")
    invoke(hub_app, "certs", "--out", tls, *(x for i in identities for x in ("-i", i)))
    invoke(site_app, "keygen", "--site", "a", "--out", keys)
    invoke(site_app, "keygen", "--site", "b", "--out", keys)
    keyring = write_consortium_keyring(
        {s: keys / f"site-{s}.ed25519.pub" for s in ("a", "b")}, tmp_path / "keyring.json"
    )
    for site in ("a", "b"):  # the hub verifies each site's signed audit report
        invoke(hub_app, "register-site", site, "--public-key", keys / f"site-{site}.ed25519.pub",
               "--root", root)  # fmt: skip
    server = start_server(load_hub_config(None, root=root, port=0, tls_dir=tls))
    hub = f"127.0.0.1:{server.port}"
    try:
        # Site a: a generator, its local audit, then publishing (the audit goes in the manifest).
        caches = {
            "a": build_site_cache(site_a, tmp_path / "cache-a", resolutions_px=(32,)),
            "b": build_site_cache(site_b, tmp_path / "cache-b", resolutions_px=(32,)),
        }
        torch.manual_seed(0)
        export_generator(tmp_path / "run", Generator(GEN_CFG).eval(), training={}, data={})
        invoke(site_app, "audit", "--run", tmp_path / "run", "--cache", caches["a"].path,
               "--num-samples", 16, "--num-permutations", 99, "--panel-samples", 0)  # fmt: skip
        output = invoke(site_app, "publish", "--run", tmp_path / "run", "--site", "a",
                        "--key", keys / "site-a.ed25519", "--hub", hub,
                        "--tls-dir", tls)  # fmt: skip
        artifact_id = output.split("published: ")[1].split()[0]
        pulled = tmp_path / "pulled"
        invoke(hub_app, "pull", artifact_id, "--out", pulled, "--hub", hub, "--tls-dir", tls,
               "--keyring", keyring)  # fmt: skip
        assert read_bundle(pulled, keyring_of(keyring)).model.privacy.audit.passed in (True, False)  # type: ignore[attr-defined]

        # The federated audit over a SuperLink and two SuperNodes (processes).
        with Consortium(tmp_path / "services", tls_dir=tls, hub_root=tmp_path / "unused-hub",
                        log_dir=tmp_path / "logs") as consortium:  # fmt: skip
            connection = consortium.start_superlink()
            for site in ("a", "b"):
                node_config = site_node_config(
                    site, cache_dir=caches[site].path, work_dir=tmp_path / f"work-{site}",
                    hub=hub, tls_dir=tls, keyring=keyring,
                    signing_key=keys / f"site-{site}.ed25519",
                )  # fmt: skip
                consortium.start_supernode(site, node_config, key_dir=tmp_path / "node-keys")
            consortium.wait_for_nodes(2)
            out = tmp_path / "federated-audit"
            run = run_app(
                connection,
                APP_DIR,
                run_config={
                    "task": "audit",
                    **registered_generator_run_config(pulled),
                    "keyring": str(keyring),
                    "out-dir": str(out),
                    "expected-nodes": 2,
                    "sites": "all",
                    "num-samples": 16,
                    "num-permutations": 99,
                    "timeout-s": 600,
                },
                log_path=tmp_path / "logs" / "audit-run.log",
                timeout_s=600,
            )
        assert run.completed, (run, (tmp_path / "logs" / "audit-run.log").read_text()[-3000:])

        # The operator stores the reports at the hub (radshare-hub audit's upload path);
        # an auditor reads them through the gRPC API; a site's identity is refused.
        written = read_audit_reports(out)
        signed = read_signed_audit_reports(out)
        with HubClient(hub, ClientTLS.from_dir(tls, "operator")) as operator:
            assert upload_audit_reports(operator, signed) == {"a": True, "b": True}
        with HubClient(hub, ClientTLS.from_dir(tls, "auditor")) as auditor:
            stored = auditor.audit_reports(artifact_id[:12])
        assert sorted(r.site_id for r in stored) == ["a", "b"]
        for report in stored:
            assert report.model_dump() == written[report.site_id].model_dump()
        with HubClient(hub, ClientTLS.from_dir(tls, "site:b"), retries=0) as site_b_client:
            with pytest.raises(PermissionDeniedError):
                site_b_client.audit_reports(artifact_id)
            with pytest.raises(PermissionDeniedError):
                site_b_client.put_audit_report(written["b"])
    finally:
        server.stop(grace_s=None)

    # One validated report per site, for this generator; panels stayed at the sites.
    reports = read_audit_reports(out)
    assert set(reports) == {"a", "b"}
    assert {r.generator_id for r in reports.values()} == {artifact_id}
    assert reports["b"].summary.num_train == len(caches["b"].indices("train"))
    page = (out / "report.md").read_text()
    assert "## Site a" in page and "## Site b" in page
    assert len(list((tmp_path / "work-b").rglob("nearest_pairs.png"))) == 1
    assert not list(out.rglob("nearest_pairs.png"))
    raw = json.loads((out / "reports" / "b.json").read_text())
    assert set(raw) == {"schema_version", "generator_id", "site_id", "received", "summary",
                        "weights_sha256", "signature"}  # fmt: skip
    # Each report is signed by its site: it verifies with that site's key, not the other's.
    for site, other in (("a", "b"), ("b", "a")):
        data = (out / "reports" / f"{site}.json").read_bytes()
        verify_audit_report(data, load_public_key(keys / f"site-{site}.ed25519.pub"))
        with pytest.raises(SignatureError):
            verify_audit_report(data, load_public_key(keys / f"site-{other}.ed25519.pub"))
        log = [json.loads(x) for x in (tmp_path / f"work-{site}" / "query-log.jsonl").open()]
        assert [e["decision"] for e in log] == ["accepted", "answered"]
        assert log[0]["artifact_id"] == artifact_id
    print(sys.version, run)
