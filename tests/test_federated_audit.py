"""Federated memorisation audit: the site's signed reply holds aggregates only; the hub keeps it.

In-process: the site handler (``site_node.flower.audit_task``) and the hub's
``audit_on_sites`` run in this process, a small fake Grid routing messages to a site
function. Real sites' caches (site A, site B at 32 px); the generator is an untrained
PGGAN generator (what it draws does not matter here). The ClientApp's policy, pull and
verification against a real hub are in ``test_site_query_policy.py``; the loopback run
with real SuperLink/SuperNode processes is in ``test_audit_loopback.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, RecordDict
from helpers_cache import build_site_cache

from shared.artifacts.audit import AuditSettings, verify_audit_report
from shared.artifacts.keyring import keyring_from_pems
from shared.artifacts.signing import generate_signing_key, public_key_pem
from shared.audit_records import (
    MESSAGE_TYPE,
    REFUSED_CODE,
    REPORT_RECORD,
    report_from_records,
    request_from_records,
)
from shared.errors import FederationError
from shared.networks.generator import Generator, GeneratorConfig
from site_node.audit.memorisation import run_memorisation_audit
from site_node.data.cache import SiteCache
from site_node.flower.audit_task import audit_task, signed_reply
from site_node.pggan.sampling import generate_uint8

GEN_CFG = GeneratorConfig(resolution_px=32, z_dim=16, fmap_base=64, fmap_max=16)
SETTINGS = AuditSettings(num_samples=24, num_permutations=199, reference_samples=8, panel_samples=4)
GEN_ID = "ab" * 32  # a registry id and a weights sha256 (the site checks them elsewhere)
SHA = "cd" * 32
KEYS = {site: generate_signing_key() for site in ("a", "b")}


@pytest.fixture(scope="module")
def caches(site_a: Path, site_b: Path, tmp_path_factory) -> dict[str, SiteCache]:
    root = tmp_path_factory.mktemp("caches")
    return {
        "a": build_site_cache(site_a, root / "a", resolutions_px=(32,)),
        "b": build_site_cache(site_b, root / "b", resolutions_px=(32,)),
    }


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    return Generator(GEN_CFG).eval().requires_grad_(False)


def _content(sites: list[str] | None = None) -> RecordDict:
    from hub.flower.audit_server import audit_content

    return audit_content(GEN_ID, SHA, SETTINGS, sites)


def _identifiers(cache: SiteCache) -> set[str]:
    return set(cache.table["image_index"].astype(str)) | set(cache.table["patient_id"].astype(str))


def _site_reply(G: Generator, cache: SiteCache, site_id: str, content: RecordDict, **kw):
    request = request_from_records(content)
    summary = audit_task(G, request, cache, site_id=site_id, **kw)
    return signed_reply(summary, request, site_id=site_id, private_key=KEYS[site_id])


@pytest.mark.realdata
def test_site_reply_holds_aggregates_only_and_equals_the_local_audit(caches, G, tmp_path):
    reply = _site_reply(G, caches["a"], "a", _content(), panel_root=tmp_path / "panels")
    # One record: the signed report's bytes; no array, no other record.
    assert set(reply.keys()) == {REPORT_RECORD} and not reply.array_records
    assert isinstance(reply[REPORT_RECORD], ConfigRecord)
    data = reply.config_records[REPORT_RECORD]["json"]
    assert isinstance(data, bytes) and len(data) < 64_000  # 24×32×32 pixels would be 24,576
    text = data.decode("ascii")
    assert not any(i in text for i in _identifiers(caches["a"]) if len(i) >= 6)
    report = verify_audit_report(data, KEYS["a"].public_key())
    assert (report.site_id, report.generator_id, report.weights_sha256) == ("a", GEN_ID, SHA)
    # The same audit run locally on the same generator and seeds gives the same numbers.
    local = run_memorisation_audit(
        lambda n, seed: generate_uint8(G, n, seed=seed), caches["a"], SETTINGS
    ).summary
    summary = report.summary
    # The reply adds the membership-inference attacks (site_node.privacy.membership).
    assert summary.membership is not None and len(summary.membership.attacks) == 3
    volatile = {"created", "seconds", "membership", "ssim_search"}  # times; membership: added
    assert summary.model_dump(exclude=volatile) == local.model_dump(exclude=volatile)
    if local.model_dump().get("ssim_search") is not None:  # the search itself, minus its time
        timing = {"ssim_search": {"seconds"}}
        assert summary.model_dump(include={"ssim_search"}, exclude=timing) == local.model_dump(
            include={"ssim_search"}, exclude=timing
        )
    # The panel stayed at the site, in the folder the site chose.
    panels = list((tmp_path / "panels").glob("*/nearest_pairs.png"))
    assert len(panels) == 1


def test_request_with_weights_is_refused():
    content = _content()
    content["audit.generator"] = ArrayRecord({"w": torch.zeros(2)})
    with pytest.raises(FederationError, match=r"carries arrays \['audit\.generator'\]"):
        request_from_records(content)


def test_reply_with_extra_records_is_refused():
    reply = RecordDict({REPORT_RECORD: ConfigRecord({"json": b"{}"}), "x": ConfigRecord()})
    with pytest.raises(FederationError, match="holds records"):
        report_from_records(reply)


class _FakeGrid:
    """Routes messages to a site function per node (in this process)."""

    def __init__(self, sites: dict[int, object]) -> None:
        self.sites = sites

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages, timeout=None):
        for msg in messages:
            assert msg.metadata.message_type == MESSAGE_TYPE
            yield self.sites[msg.metadata.dst_node_id](msg)


@pytest.fixture
def task_identity():
    """Flower stamps messages with the running task's identity; set one for in-process use."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id = TaskIdentity._task_id = TaskIdentity._node_id = None


@pytest.mark.realdata
def test_hub_keeps_signed_reports_and_records_refusals_and_forgeries(caches, G, task_identity):
    from hub.flower.audit_server import audit_on_sites

    def honest(site_id: str, key=None):
        def answer(msg: Message) -> Message:
            content = _site_reply(G, caches[site_id], site_id, msg.content)
            if key is not None:  # a site "b" reply signed by another key: a forgery
                _, report = report_from_records(content)
                from shared.artifacts.audit import sign_audit_report

                forged = sign_audit_report(report.model_copy(update={"signature": None}), key)
                content = RecordDict({REPORT_RECORD: ConfigRecord({"json": forged})})
            return Message(content, reply_to=msg)

        return answer

    def refusing(msg: Message) -> Message:
        return Message(error=Error(code=REFUSED_CODE, reason="site c refused by rule x"),
                       reply_to=msg)  # fmt: skip

    keys = keyring_from_pems(
        {s: public_key_pem(k.public_key()) for s, k in KEYS.items()}, source="test"
    )
    grid = _FakeGrid({11: honest("a"), 13: refusing})
    results = audit_on_sites(grid, _content(), GEN_ID, keys=keys)
    assert set(results.reports) == {"a"} and results.failures == {}
    assert results.refusals == {13: "site c refused by rule x"}
    # The signed bytes are kept verbatim and verify against site a's key.
    report = verify_audit_report(results.signed["a"], KEYS["a"].public_key())
    assert report.summary.num_train == len(caches["a"].indices("train"))
    # Site b's reply signed by a key that is not b's: counted as a failure, not a report.
    grid = _FakeGrid({12: honest("b", key=generate_signing_key())})
    forged = audit_on_sites(grid, _content(), GEN_ID, keys=keys)
    assert forged.reports == {} and "malformed reply" in forged.failures[12]
    assert "signature" in forged.failures[12].lower()
