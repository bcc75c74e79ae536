"""Registry contract of the audit-policy state (SQLite + in-memory): report bytes, overrides,
withdrawals. The same assertions run against both implementations."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from helpers_audit import make_report
from test_registry_contract import ID, _record, _upload

from hub.registry.memory_registry import InMemoryRegistry
from hub.registry.sqlite_registry import SqliteRegistry
from shared.artifacts.audit import sign_audit_report
from shared.artifacts.audit_state import AuditOverrideRecord, WithdrawalRecord
from shared.artifacts.signing import generate_signing_key
from shared.errors import NotFoundError, RegistryError

T0 = datetime(2025, 4, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "memory"])
def registry(request, tmp_path):
    made = SqliteRegistry(tmp_path / "reg") if request.param == "sqlite" else InMemoryRegistry()
    upload, data = _upload()
    made.stage(upload)
    made.append(ID, "g.safetensors", 0, data)
    made.commit(_record(upload, data))
    return made


def test_signed_report_bytes_are_kept_verbatim(registry):
    key = generate_signing_key()
    report = make_report(ID, "a").model_copy(update={"weights_sha256": "ef" * 32})
    data = sign_audit_report(report, key)
    from shared.artifacts.audit import parse_audit_report

    parsed = parse_audit_report(data)
    assert registry.put_audit_report(parsed, "operator", data) is True
    assert registry.put_audit_report(parsed, "operator", data) is False  # same bytes: idempotent
    [stored] = registry.audit_report_records(ID)
    assert stored.report_json == data  # byte for byte what the site signed
    assert (stored.submitted_by, stored.report) == ("operator", parsed)
    other_bytes = data.replace(b'"site_id":"a"', b'"site_id": "a"')  # same report, other bytes
    assert other_bytes != data
    with pytest.raises(RegistryError, match="never replaced"):
        registry.put_audit_report(parsed, "operator", other_bytes)
    assert [r.report_json for r in registry.audit_report_records(ID)] == [data]


def test_overrides_are_recorded_once_per_giver_and_reason_and_never_removed(registry):
    first = AuditOverrideRecord(
        generator_id=ID, reason="validation study only", given_by="operator", given_at=T0
    )
    later = AuditOverrideRecord(
        generator_id=ID, reason="validation study only", given_by="operator",
        given_at=T0 + timedelta(hours=1),
    )  # fmt: skip
    other = AuditOverrideRecord(
        generator_id="unknown-bundle", reason="a local training export", given_by="operator:bob",
        given_at=T0 + timedelta(hours=2),
    )  # fmt: skip
    assert registry.put_audit_override(first) == first
    assert registry.put_audit_override(later) == first  # the same override: the first record
    assert registry.put_audit_override(other) == other  # any id, known or not
    assert registry.audit_overrides(ID) == [first]
    assert registry.audit_overrides() == [first, other]
    assert registry.audit_overrides("cd" * 32) == []


def test_withdrawal_is_kept_and_never_replaced(registry):
    withdrawal = WithdrawalRecord(
        generator_id=ID, reason="patient image found", withdrawn_by="site:a", withdrawn_at=T0
    )
    assert registry.withdrawal(ID) is None and registry.withdrawals() == {}
    assert registry.withdraw(withdrawal) == (withdrawal, True)
    again = withdrawal.model_copy(update={"reason": "another reason entirely", "withdrawn_by": "x"})
    assert registry.withdraw(again) == (withdrawal, False)
    assert registry.withdrawal(ID) == withdrawal
    assert registry.withdrawals() == {ID: withdrawal}
    with pytest.raises(NotFoundError, match="no artifact"):
        registry.withdraw(withdrawal.model_copy(update={"generator_id": "cd" * 32}))
    assert registry.withdrawals() == {ID: withdrawal}


def test_sqlite_policy_state_survives_a_reopen_and_old_registries_gain_the_tables(tmp_path):
    registry = SqliteRegistry(tmp_path / "reg")
    upload, data = _upload()
    registry.stage(upload)
    registry.append(ID, "g.safetensors", 0, data)
    registry.commit(_record(upload, data))
    with sqlite3.connect(tmp_path / "reg" / "registry.sqlite3") as db:  # a registry made before
        db.execute("DROP TABLE audit_overrides")
        db.execute("DROP TABLE withdrawals")
    reopened = SqliteRegistry(tmp_path / "reg")
    withdrawal = WithdrawalRecord(generator_id=ID, reason="withdrawn in a test", withdrawn_by="op")
    override = AuditOverrideRecord(generator_id=ID, reason="override in a test", given_by="op")
    reopened.withdraw(withdrawal)
    reopened.put_audit_override(override)
    third = SqliteRegistry(tmp_path / "reg")
    assert third.withdrawal(ID) == withdrawal
    assert third.audit_overrides(ID) == [override]
