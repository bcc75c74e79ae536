"""Audit reports through the hub's gRPC API, on a real mTLS server on 127.0.0.1.

The operator stores AuditReports (PutAuditReport); auditors and operators read
them (ListAuditReports); a site identity may do neither. Every refusal checks that
the stored reports are unchanged, read straight from the SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import grpc
import pytest
from helpers_audit import make_report
from test_registry_grpc import make_bundle, make_consortium
from typer.testing import CliRunner

from hub.cli import app as hub_app
from hub.registry.server import HubServer, start_server
from shared.artifacts.audit import AuditReport
from shared.errors import ArtifactError, NotFoundError, PermissionDeniedError, RegistryError
from shared.hub_client import ClientTLS
from shared.proto import radshare_hub_pb2 as pb
from shared.proto import radshare_hub_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    return make_consortium(tmp_path_factory.mktemp("consortium"))


@pytest.fixture
def hub(consortium, tmp_path):
    server = start_server(consortium.hub_config(tmp_path / "hub", max_upload_bytes=400_000))
    yield server
    server.stop(grace_s=None)


@pytest.fixture
def generator_id(consortium, hub, tmp_path) -> str:
    """A generator published by site a."""
    bundle = make_bundle(tmp_path / "bundle-a", "a", consortium.keys["a"])
    with consortium.client(hub.port, "site:a") as site:
        return site.publish_bundle(bundle).artifact.artifact_id


def stored_rows(hub: HubServer) -> list[tuple]:
    """Every stored report, read with sqlite3 (not through the registry)."""
    root: Path = hub.state.registry.root  # type: ignore[attr-defined]
    with sqlite3.connect(root / "registry.sqlite3") as db:
        return db.execute(
            "SELECT generator_id, site_id, received, report_json, submitted_by "
            "FROM audit_reports ORDER BY 1, 2, 3"
        ).fetchall()


def assert_same(got: AuditReport, expected: AuditReport) -> None:
    """Field by field (top level and summary), then the whole dump."""
    got_raw, expected_raw = got.model_dump(), expected.model_dump()
    assert got_raw.keys() == expected_raw.keys()
    for name in expected_raw:
        if name != "summary":
            assert got_raw[name] == expected_raw[name], name
    for name, value in expected_raw["summary"].items():
        assert got_raw["summary"][name] == value, f"summary.{name}"
    assert got == expected


def refused(hub: HubServer, call, code: grpc.StatusCode, error_cls=RegistryError):
    before = stored_rows(hub)
    with pytest.raises(error_cls) as caught:
        call()
    assert caught.value.__cause__.code() == code, caught.value
    assert stored_rows(hub) == before
    return caught.value


def raw_put(consortium, hub: HubServer, identity: str, data: bytes) -> None:
    """PutAuditReport with arbitrary bytes (the client only sends valid reports)."""
    credentials = ClientTLS.from_dir(consortium.tls, identity).credentials()
    with grpc.secure_channel(f"127.0.0.1:{hub.port}", credentials) as channel:
        stub = pb_grpc.RadshareHubStub(channel)
        stub.PutAuditReport(pb.PutAuditReportRequest(report_json=data), timeout=30)


def test_operator_stores_and_an_auditor_reads(consortium, hub, generator_id):
    report_a = make_report(generator_id, "a")
    report_b = make_report(generator_id, "b", hours=1, near_copies=3, ssim_p=0.01)
    with consortium.client(hub.port, "operator") as operator:
        assert operator.put_audit_report(report_a) is True
        assert operator.put_audit_report(report_b) is True
        assert operator.put_audit_report(report_a) is False  # the same report again: no new row
        assert len(operator.audit_reports(generator_id)) == 2  # operators read too
    with consortium.client(hub.port, "auditor") as auditor:
        got = auditor.audit_reports(generator_id[:12])  # a prefix names the generator
        assert [r.site_id for r in got] == ["b", "a"]  # newest first
        assert_same(got[0], report_b)
        assert_same(got[1], report_a)
        assert not got[0].summary.passed and got[1].summary.passed
        only_a = auditor.audit_reports(generator_id, site_id="a")
        assert len(only_a) == 1
        assert_same(only_a[0], report_a)
        assert auditor.audit_reports(generator_id, site_id="c") == []
    rows = stored_rows(hub)
    assert [(r[0], r[1], r[4]) for r in rows] == [
        (generator_id, "a", "operator"),
        (generator_id, "b", "operator"),
    ]
    assert json.loads(rows[0][3])["summary"]["near_copy_count"] == 0


def test_a_prefix_in_the_report_is_stored_as_the_full_id(consortium, hub, generator_id):
    with consortium.client(hub.port, "operator") as operator:
        operator.put_audit_report(make_report(generator_id[:10], "a"))
        (got,) = operator.audit_reports(generator_id)
    assert got.generator_id == generator_id
    assert_same(got, make_report(generator_id, "a"))


@pytest.mark.parametrize("identity", ["site:a", "site:b"])
def test_sites_may_neither_read_nor_write(consortium, hub, generator_id, identity):
    with consortium.client(hub.port, "operator") as operator:
        operator.put_audit_report(make_report(generator_id, "a"))
    with consortium.client(hub.port, identity, retries=0) as site:
        error = refused(
            hub,
            lambda: site.put_audit_report(make_report(generator_id, identity[-1], hours=2)),
            grpc.StatusCode.PERMISSION_DENIED,
            PermissionDeniedError,
        )
        assert "may not write_report" in str(error)
        error = refused(
            hub,
            lambda: site.audit_reports(generator_id),
            grpc.StatusCode.PERMISSION_DENIED,
            PermissionDeniedError,
        )
        assert "may not read_report" in str(error)
    # The role is checked before the bytes are parsed: malformed bytes from a site are
    # refused as the site's, not as malformed.
    before = stored_rows(hub)
    with pytest.raises(grpc.RpcError) as caught:
        raw_put(consortium, hub, identity, b"not json")
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert stored_rows(hub) == before and len(before) == 1


def test_an_auditor_may_not_write(consortium, hub, generator_id):
    with consortium.client(hub.port, "auditor", retries=0) as auditor:
        refused(
            hub,
            lambda: auditor.put_audit_report(make_report(generator_id, "a")),
            grpc.StatusCode.PERMISSION_DENIED,
            PermissionDeniedError,
        )
    assert stored_rows(hub) == []


def test_a_report_for_an_unknown_generator_is_refused(consortium, hub, generator_id):
    unknown = "0" * 64 if not generator_id.startswith("0") else "1" * 64
    with consortium.client(hub.port, "operator") as operator:
        error = refused(
            hub,
            lambda: operator.put_audit_report(make_report(unknown, "a")),
            grpc.StatusCode.NOT_FOUND,
            NotFoundError,
        )
        assert unknown in str(error)
        with pytest.raises(NotFoundError):
            operator.audit_reports(unknown)
    assert stored_rows(hub) == []


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda raw: raw["summary"].update(near_copy_count=-1), "summary.near_copy_count"),
        (lambda raw: raw.update(site_id="Site A"), "site_id"),
        (lambda raw: raw["summary"].update(pixels=[0, 255]), "summary.pixels"),
        (lambda raw: raw.pop("summary"), "summary"),
    ],
)
def test_malformed_reports_are_refused_naming_the_field(
    consortium, hub, generator_id, mutate, field
):
    with consortium.client(hub.port, "operator") as operator:
        operator.put_audit_report(make_report(generator_id, "a"))
    raw = json.loads(make_report(generator_id, "b").model_dump_json())
    mutate(raw)
    before = stored_rows(hub)
    with pytest.raises(grpc.RpcError) as caught:
        raw_put(consortium, hub, "operator", json.dumps(raw).encode())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"field {field!r}" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        raw_put(consortium, hub, "operator", b"{not json")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stored_rows(hub) == before and len(before) == 1


def test_reaudits_are_all_kept_newest_first(consortium, hub, generator_id):
    first = make_report(generator_id, "b", near_copies=2)
    second = make_report(generator_id, "b", hours=24)
    between = make_report(generator_id, "b", hours=6, ssim_p=0.2)  # stored last, received between
    with consortium.client(hub.port, "operator") as operator:
        for report in (first, second, between):
            assert operator.put_audit_report(report)
        # A different report under a stored (generator, site, received) key replaces nothing.
        clash = make_report(generator_id, "b", hours=24, near_copies=5)
        refused(
            hub,
            lambda: operator.put_audit_report(clash),
            grpc.StatusCode.FAILED_PRECONDITION,
            RegistryError,
        )
    with consortium.client(hub.port, "auditor") as auditor:
        got = auditor.audit_reports(generator_id, site_id="b")
    assert [r.received for r in got] == [second.received, between.received, first.received]
    for report, expected in zip(got, (second, between, first), strict=True):
        assert_same(report, expected)
    assert len(stored_rows(hub)) == 3


def test_audit_reports_command_prints_and_writes_the_page(consortium, hub, generator_id, tmp_path):
    with consortium.client(hub.port, "operator") as operator:
        operator.put_audit_report(make_report(generator_id, "a", near_copies=1))
        operator.put_audit_report(make_report(generator_id, "a", hours=3))
        operator.put_audit_report(make_report(generator_id, "b", hours=1, ssim_p=0.01))
    out = tmp_path / "page"
    args = ["audit-reports", "--generator", generator_id[:8], "--hub", f"127.0.0.1:{hub.port}",
            "--tls-dir", str(consortium.tls), "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(hub_app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("site a: passed, 0 near copies, SSIM p 0.42, feature p 0.61")
    assert lines[1].startswith("site b: FLAGGED, 0 near copies, SSIM p 0.01")
    assert lines[2].startswith("site a: FLAGGED, 1 near copies")
    assert "3 report(s)" in lines[3]
    page = (out / "report.md").read_text()
    assert "## Site a: PASSED" in page and "## Site b: FAILED" in page  # newest per site
    stored = AuditReport.model_validate_json((out / "reports" / "a.json").read_text())
    assert_same(stored, make_report(generator_id, "a", hours=3))
    denied = CliRunner().invoke(hub_app, [*args[:-2], "--identity", "site:a"])
    assert isinstance(denied.exception, PermissionDeniedError)


def test_unvalidated_reports_never_reach_the_client(consortium, hub, generator_id):
    """The client validates what it lists, too (a hub must not hand out a non-report)."""
    from shared.proto import serde

    reply = pb.AuditReportsResponse(report_json=[b'{"generator_id": "x"}'])
    with pytest.raises(ArtifactError, match=r"report_json\[0\].*field 'site_id'"):
        serde.audit_reports_from_proto(reply)
