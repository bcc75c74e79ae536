"""Site-signed audit reports: the bytes a site signs verify only against that site's pinned key."""

from __future__ import annotations

import json

import pytest
from helpers_audit import make_report

from shared.artifacts.audit import parse_audit_report, sign_audit_report, verify_audit_report
from shared.artifacts.signing import generate_signing_key
from shared.errors import ArtifactError, SignatureError

WEIGHTS = "ab" * 32


def test_a_signed_report_verifies_and_round_trips() -> None:
    key = generate_signing_key()
    report = make_report("cd" * 32, "a").model_copy(update={"weights_sha256": WEIGHTS})
    data = sign_audit_report(report, key)
    verified = verify_audit_report(data, key.public_key())
    assert verified.model_dump(exclude={"signature"}) == report.model_dump(exclude={"signature"})
    assert verified.signature is not None
    assert verified.weights_sha256 == WEIGHTS


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("site_id", "b"),
        ("weights_sha256", "ef" * 32),
        ("generator_id", "ee" * 32),
    ],
)
def test_an_edited_report_fails_verification(field: str, value: str) -> None:
    key = generate_signing_key()
    data = sign_audit_report(make_report("cd" * 32, "a"), key)
    forged = json.loads(data)
    forged[field] = value
    with pytest.raises(SignatureError, match="does not verify"):
        verify_audit_report(json.dumps(forged).encode(), key.public_key())


def test_a_flipped_verdict_fails_verification() -> None:
    key = generate_signing_key()
    data = sign_audit_report(make_report("cd" * 32, "a", near_copies=9), key)
    forged = json.loads(data)
    forged["summary"]["verdict"]["passed"] = not forged["summary"]["verdict"]["passed"]
    with pytest.raises(SignatureError, match="does not verify"):
        verify_audit_report(json.dumps(forged).encode(), key.public_key())


def test_a_report_signed_by_another_key_or_unsigned_is_refused() -> None:
    site_key, forger = generate_signing_key(), generate_signing_key()
    report = make_report("cd" * 32, "a")
    with pytest.raises(SignatureError, match="not the registered key"):
        verify_audit_report(sign_audit_report(report, forger), site_key.public_key())
    with pytest.raises(SignatureError, match="'signature' is missing"):
        verify_audit_report(report.model_dump_json(), site_key.public_key())


def test_signed_bytes_still_parse_as_a_plain_report() -> None:
    key = generate_signing_key()
    data = sign_audit_report(make_report("cd" * 32, "a"), key)
    assert parse_audit_report(data).site_id == "a"
    with pytest.raises(ArtifactError, match="not valid JSON"):
        verify_audit_report(b"{", key.public_key())
