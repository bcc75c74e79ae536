"""Show 4: pool → train → federated evaluation end to end, Flower deployment engine on loopback.

A SuperLink and two SuperNodes (site a: NIH adults, site b: paediatric, real images in
their caches) run as processes; ``flwr run`` submits the project's Flower app
(``hub/flower/app``: the ServerApp's ``evaluate`` task sends ``evaluate.classifier`` to
both, the sites' ClientApp answers). The classifiers are registered at an mTLS hub on
loopback by the operator; each site pulls and verifies them against the consortium
keyring before it evaluates (it evaluates nothing unregistered). Tiny settings: 32 px, a
small DenseNet, one epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers_cache import build_site_cache
from helpers_pool import make_archive, small_site

from deployment.flower import run_app, site_node_config
from deployment.launcher import Consortium
from hub.certs import ensure_consortium_certs
from hub.config import load_hub_config
from hub.evaluation.comparison import load_evaluations
from hub.pooling.archive import read_archive
from hub.pooling.pool import PoolOptions, plan_pool
from hub.pooling.train import ClassifierTrainOptions, train_classifier
from hub.pooling.writer import write_pooled_archive
from hub.registry.keyring import DirectoryKeyring
from hub.registry.server import start_server
from shared.artifacts.keyring import keyring_from_pems
from shared.artifacts.signing import load_private_key, public_key_pem
from shared.hub_client import ClientTLS, HubClient

pytestmark = [pytest.mark.integration, pytest.mark.realdata]

APP = Path(__file__).parents[1] / "hub" / "flower" / "app"  # the project's Flower app
SMALL = dict(resolution_px=32, init_features=8, growth_rate=4, block_config=(1, 1, 1, 1))


@pytest.fixture(autouse=True)
def flower_env(tmp_path, monkeypatch):
    for key, value in {
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_HOME": str(tmp_path / "flwr-home"),
    }.items():
        monkeypatch.setenv(key, value)


def _classifier(archive: Path, out: Path, key: Path, site_id: str | None = None) -> Path:
    options = ClassifierTrainOptions(
        archive_dir=archive,
        out_dir=out,
        hub_key=key,
        site_id=site_id,
        max_epochs=1,
        batch_size=16,
        **SMALL,
    )
    return train_classifier(options).bundle_dir


def test_pool_train_and_evaluate_on_two_sites(site_a, site_b, tmp_path):
    # The sites' real data stays in their caches; the hub sees only archives and aggregates.
    caches = {
        site: build_site_cache(
            small_site(folder, tmp_path / f"site-{site}" / "data", 300),
            tmp_path / f"site-{site}" / "cache",
            resolutions_px=(32,),
        )
        for site, folder in (("a", site_a), ("b", site_b))
    }
    # Pool two small synthetic archives (site b annotated only Pneumonia and No Finding).
    arch_a = make_archive(
        tmp_path / "arch-a", ["Effusion", "No Finding", "Pneumonia"] * 10, site_id="a", seed=1
    )
    arch_b = make_archive(
        tmp_path / "arch-b", ["Pneumonia", "No Finding"] * 12, site_id="b", seed=2
    )
    sources = [read_archive(arch_a), read_archive(arch_b)]
    pooled = write_pooled_archive(
        plan_pool(sources, PoolOptions()), sources, PoolOptions(), tmp_path / "store"
    )
    key = tmp_path / "hub.key"
    bundles = {
        "pooled": _classifier(pooled.folder, tmp_path / "clf-pooled", key),
        "synthetic:a": _classifier(arch_a, tmp_path / "clf-a", key, site_id="a"),
    }
    out, tls = tmp_path / "evaluation", tmp_path / "tls"
    ensure_consortium_certs(tls, ["site:a", "site:b", "operator"])
    # The hub registers its classifiers (its key under "hub"); sites pull and verify them.
    hub_pem = public_key_pem(load_private_key(key).public_key())
    DirectoryKeyring(tmp_path / "site_keys").register("hub", hub_pem)
    keyring = tmp_path / "consortium-keyring.json"
    keyring_from_pems({"hub": hub_pem}, source="test").write(keyring)
    server = start_server(load_hub_config(None, root=tmp_path / "registry", port=0, tls_dir=tls,
                                          site_keys_dir=tmp_path / "site_keys"))  # fmt: skip
    hub = f"127.0.0.1:{server.port}"
    with HubClient(hub, ClientTLS.from_dir(tls, "operator")) as operator:
        for bundle in bundles.values():
            operator.publish_bundle(bundle)
    with Consortium(tmp_path / "services", tls_dir=tls, hub_root=tmp_path / "hub",
                    log_dir=tmp_path / "logs", flower_tls=False) as consortium:  # fmt: skip
        connection = consortium.start_superlink()
        for site, cache in caches.items():
            node_config = site_node_config(
                site, cache_dir=cache.path, work_dir=tmp_path / f"work-{site}", hub=hub,
                tls_dir=tls, keyring=keyring, signing_key=tmp_path / "unused.ed25519",
            )  # fmt: skip
            consortium.start_supernode(site, node_config, key_dir=tmp_path)
        consortium.wait_for_nodes(2)
        run = run_app(
            connection,
            APP,
            log_path=tmp_path / "logs" / "serverapp.log",
            timeout_s=600,
            run_config={
                "task": "evaluate",
                "sites": "all",
                "out-dir": str(out),
                "real-baseline": True,
                "epochs": 1,
                "num-resamples": 200,
                "classifiers": ",".join(f"{t}={p}" for t, p in bundles.items()),
                "keyring": str(keyring),
            },
        )
    server.stop(grace_s=None)
    assert run.completed, (tmp_path / "logs" / "serverapp.log").read_text()[-3000:]
    evaluations, failures = load_evaluations(out / "evaluations.json")
    assert failures == {}
    got = {(e.site_id, e.tag) for e in evaluations}
    assert got == {(s, t) for s in ("a", "b") for t in ("pooled", "synthetic:a", "real")}
    for e in evaluations:
        cache = caches[e.site_id]
        assert e.n_images == len(cache.indices("test"))
        pneumonia = e.result("Pneumonia")
        n_pos = int(cache.labels("test")[:, cache.label_space.index("Pneumonia")].sum())
        assert pneumonia is not None and pneumonia.n_pos == n_pos
    # At site b, Effusion was never annotated: no counts, no metrics.
    b_pooled = next(e for e in evaluations if e.site_id == "b" and e.tag == "pooled")
    assert b_pooled.result("Effusion").threshold_source == "not-annotated"
    assert (out / "report.html").read_text().count("<img") >= 2
    table = (out / "comparison.md").read_text()
    assert "| b | Pneumonia |" in table and "site-synthetic" in table
    assert json.loads((out / "evaluations.json").read_text())["evaluations"]
    # Each site's query log: both classifiers and the real baseline, accepted and answered.
    for site in ("a", "b"):
        log = [json.loads(x) for x in (tmp_path / f"work-{site}" / "query-log.jsonl").open()]
        answered = sorted(e["artifact_id"][:10] for e in log if e["decision"] == "answered")
        assert len(answered) == 3 and "train-real" in answered
