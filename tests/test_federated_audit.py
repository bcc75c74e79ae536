"""Federated memorisation audit: the site's reply holds aggregates only; the hub parses it per site.

In-process: the site handler (``site_node.flower.audit_task``), the ClientApp's
``query.audit`` handler and the hub's ``audit_on_sites`` run in this process, a small
fake Grid routing messages between them. Real sites' caches (site A, site B at 32 px);
the generator is an untrained PGGAN generator (what it draws does not matter here).
The loopback run with real SuperLink/SuperNode processes is in
``test_audit_loopback.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from flwr.app import ConfigRecord, Context, MetricRecord, RecordDict
from helpers_cache import build_site_cache

from shared.artifacts.audit import AuditSettings
from shared.audit_records import (
    GENERATOR_RECORD,
    MESSAGE_TYPE,
    META_RECORD,
    METRICS_RECORD,
    summary_from_records,
)
from shared.errors import FederationError
from shared.networks.generator import Generator, GeneratorConfig
from site_node.audit.memorisation import run_memorisation_audit
from site_node.data.cache import SiteCache
from site_node.flower.audit_task import audit_task
from site_node.pggan.sampling import generate_uint8

GEN_CFG = GeneratorConfig(resolution_px=32, z_dim=16, fmap_base=64, fmap_max=16)
SETTINGS = AuditSettings(num_samples=24, num_permutations=199, reference_samples=8, panel_samples=4)
MAX_STRING = 400  # the verdict's rule is the longest string a reply may hold
MAX_LIST = 201  # histogram bin edges


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


def _content(G: Generator, sites: list[str] | None = None) -> RecordDict:
    from hub.flower.audit_server import audit_content

    return audit_content(G, "generator-under-audit", SETTINGS, sites)


def _identifiers(cache: SiteCache) -> set[str]:
    return set(cache.table["image_index"].astype(str)) | set(cache.table["patient_id"].astype(str))


def _assert_aggregates_only(reply: RecordDict, identifiers: set[str]) -> None:
    """Inspect every record and every value of a reply."""
    assert set(reply.keys()) == {METRICS_RECORD, META_RECORD}
    assert not reply.array_records
    num_values = 0
    for name, record in reply.items():
        assert isinstance(record, MetricRecord | ConfigRecord), name
        for key, value in record.items():
            values = value if isinstance(value, list) else [value]
            assert len(values) <= MAX_LIST, key
            num_values += len(values)
            for item in values:
                assert isinstance(item, int | float | bool | str), (key, type(item))
                if isinstance(item, str):
                    assert len(item) <= MAX_STRING, key
                    assert item not in identifiers, key
                    assert not any(i in item for i in identifiers if len(i) >= 6), key
    # 24 samples of 32×32 pixels would be 24,576 values; the reply has a few hundred.
    assert num_values < 400


@pytest.mark.realdata
def test_site_reply_holds_aggregates_only_and_equals_the_local_audit(caches, G, tmp_path):
    reply = audit_task(_content(G), caches["a"], site_id="a", panel_root=tmp_path / "panels")
    _assert_aggregates_only(reply, _identifiers(caches["a"]))
    site_id, summary = summary_from_records(reply)
    # The same audit run locally on the same generator and seeds gives the same numbers.
    local = run_memorisation_audit(
        lambda n, seed: generate_uint8(G, n, seed=seed), caches["a"], SETTINGS
    ).summary
    volatile = {"created", "seconds"}
    assert site_id == "a"
    # The reply adds the membership-inference attacks (site_node.privacy.membership).
    assert summary.membership is not None and len(summary.membership.attacks) == 3
    without = {*volatile, "membership"}
    assert summary.model_dump(exclude=without) == local.model_dump(exclude=without)
    # The panel stayed at the site, in the folder the site chose.
    panels = list((tmp_path / "panels").glob("*/nearest_pairs.png"))
    assert len(panels) == 1


@pytest.mark.realdata
def test_request_without_weights_is_refused(caches, G):
    content = _content(G)
    del content[GENERATOR_RECORD]
    with pytest.raises(FederationError, match=r"no ArrayRecord 'audit\.generator'"):
        audit_task(content, caches["a"], site_id="a")


class _FakeGrid:
    """Routes messages to the ClientApp's handlers, one node per site (in this process)."""

    def __init__(self, node_configs: dict[int, dict[str, str]]) -> None:
        self.node_configs = node_configs

    def get_node_ids(self) -> list[int]:
        return list(self.node_configs)

    def send_and_receive(self, messages, timeout=None):
        from site_node.flower import client_app

        for msg in messages:
            node = msg.metadata.dst_node_id
            context = Context(1, node, self.node_configs[node], RecordDict(), {})
            assert msg.metadata.message_type == MESSAGE_TYPE
            reply = client_app.audit(msg, context)  # its src_node_id is the message's dst
            yield reply


@pytest.fixture
def task_identity():
    """Flower stamps messages with the running task's identity; set one for in-process use."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id = TaskIdentity._task_id = TaskIdentity._node_id = None


@pytest.mark.realdata
def test_hub_collects_one_report_per_chosen_site_and_records_failures(caches, G, task_identity):
    from hub.flower.audit_server import audit_on_sites

    grid = _FakeGrid(
        {
            11: {"site": "a", "cache-dir": str(caches["a"].path)},
            12: {"site": "b", "cache-dir": str(caches["b"].path)},
            13: {"site": "c"},  # a site whose node config lacks its cache
        }
    )
    # Site a's generator audited at site b (cross-site leakage) and at the broken site c.
    results = audit_on_sites(grid, _content(G, sites=["b", "c"]), "generator-under-audit")
    assert set(results.reports) == {"b"}
    assert results.skipped == [11]
    assert list(results.failures) == [13]
    assert "no cache-dir" in results.failures[13]
    report = results.reports["b"]
    assert (report.site_id, report.generator_id) == ("b", "generator-under-audit")
    assert report.summary.num_train == len(caches["b"].indices("train"))
