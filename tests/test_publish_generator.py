"""A site publishes a generator trained by the PGGAN code; an operator pulls it, bit-identical.

End to end through the command lines (``radshare-hub certs / register-site / list / pull``,
``radshare-site keygen / publish``) against a real mTLS hub on 127.0.0.1. The run is
trained once per module with ``site_node.pggan.train`` on a tiny synthetic cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from test_registry_grpc import snapshot
from typer.testing import CliRunner

from hub.cli import app as hub_app
from hub.config import load_hub_config
from hub.registry.server import start_server
from shared.artifacts.bundle import read_bundle
from shared.artifacts.generator import GENERATOR_FILE, load_generator
from shared.artifacts.keyring import ConsortiumKeyring
from shared.errors import ArtifactError, UnsafeArtifactError
from shared.labels import NIH_LABELS
from shared.networks.generator import Generator
from site_node.cli import app as site_app
from site_node.keys import load_site_signing_key
from site_node.pggan.export import load_exported_generator
from site_node.publish import build_generator_bundle

pytestmark = pytest.mark.integration

runner = CliRunner()
#: These tests cover transport and content checks; the audit gate has its own tests
#: (test_audit_gate.py), so they publish with a recorded override.
OVERRIDE = "transport test: the audit gate is tested in test_audit_gate.py"
FORBIDDEN = ("D.", "discriminator", "critic", "optim", "exp_avg", "state.", "data", "image", "real")


def invoke(app, *args: str):
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished PGGAN run (4 px → 8 px, a few dozen images) with its export/ and last.ckpt."""
    from site_node.data.cache import write_cache
    from site_node.pggan.options import TrainOptions
    from site_node.pggan.train import train

    base = tmp_path_factory.mktemp("site-a")
    rng, n = np.random.default_rng(0), 16
    table = pd.DataFrame(
        {
            "image_index": [f"{i:08d}_000.png" for i in range(n)],
            "patient_id": [str(i) for i in range(n)],
            "split": ["train"] * 12 + ["val"] * 2 + ["test"] * 2,
        }
    )
    for label in NIH_LABELS:
        table[label] = 0
    table["No Finding"], table.loc[:3, "Effusion"], table.loc[:3, "No Finding"] = 1, 1, 0
    images = {r: rng.integers(0, 256, (n, r, r), dtype=np.uint8) for r in (4, 8)}
    write_cache(base / "cache", images, table, NIH_LABELS)
    options = TrainOptions(
        cache_dir=base / "cache",
        run_dir=base / "run",
        resolution_px=8,
        z_dim=16,
        fmap_base=32,
        fmap_max=16,
        kimg_per_phase=0.008,
        batch_sizes={4: 4, 8: 4},
        tick_kimg=0.008,
        sample_every_kimg=1.0,
        num_grid_images=4,
        ema_halflife_kimg=0.01,
        accelerator="cpu",
    )
    run = train(options)
    assert (run / "export" / "g_ema.safetensors").is_file()
    return run


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Consortium material made with the CLIs, and a hub serving it."""
    base = tmp_path_factory.mktemp("hub")
    tls, keys = base / "tls", base / "keys"
    invoke(hub_app, "certs", "--out", tls, "-i", "site:a", "-i", "operator", "-i", "auditor")
    output = invoke(site_app, "keygen", "--site", "a", "--out", keys)
    assert "register-site a" in output
    invoke(
        hub_app,
        "register-site",
        "a",
        "--public-key",
        keys / "site-a.ed25519.pub",
        "--root",
        base / "root",
    )
    server = start_server(load_hub_config(None, root=base / "root", port=0, tls_dir=tls))
    yield {
        "server": server,
        "tls": tls,
        "key": keys / "site-a.ed25519",
        "root": base / "root",
        "address": f"127.0.0.1:{server.port}",
    }
    server.stop(grace_s=None)


def publish(hub, run: Path, *extra: str) -> str:
    return invoke(
        site_app,
        "publish",
        "--run",
        run,
        "--site",
        "a",
        "--key",
        hub["key"],
        "--hub",
        hub["address"],
        "--tls-dir",
        hub["tls"],
        "--override-audit",
        OVERRIDE,
        *extra,
    )


def test_operator_pulls_bit_identical_generator(trained_run, hub, tmp_path):
    output = publish(hub, trained_run)
    assert "published:" in output
    artifact_id = output.split("published: ")[1].split()[0]
    listing = invoke(hub_app, "list", "--hub", hub["address"], "--tls-dir", hub["tls"])
    assert artifact_id in listing and "1 artifact(s)" in listing
    pulled, keyring_file = tmp_path / "pulled", tmp_path / "consortium-keyring.json"
    invoke(hub_app, "keyring", "export", "--out", keyring_file, "--root", hub["root"])
    keyring = ConsortiumKeyring.load(keyring_file)  # what the operator hands out
    invoke(
        hub_app,
        "pull",
        artifact_id[:12],
        "--out",
        pulled,
        "--hub",
        hub["address"],
        "--tls-dir",
        hub["tls"],
        "--keyring",
        keyring_file,
    )

    audit = read_bundle(pulled, keyring).model.privacy.audit  # type: ignore[attr-defined]
    assert (audit.passed, audit.override_reason) == (False, OVERRIDE)  # signed, seen by the hub
    G_site = load_exported_generator(trained_run)  # the site's G_ema
    G_hub = load_generator(pulled, keyring)  # rebuilt from the manifest's config, no Lightning
    z = torch.randn(8, G_site.cfg.z_dim, generator=torch.Generator().manual_seed(123))
    images_site, images_hub = G_site(z), G_hub(z)
    assert images_hub.shape == (8, 1, 8, 8)
    assert torch.equal(images_hub, images_site)  # bit-identical, not merely close

    # Independent reference: the weights are the checkpoint's G_ema, not its G.
    state = torch.load(
        trained_run / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu"
    )["state_dict"]
    for name, tensor in G_hub.state_dict().items():
        assert torch.equal(tensor, state[f"G_ema.{name}"]), name
    assert any(not torch.equal(t, state[f"G.{n}"]) for n, t in G_hub.state_dict().items())


def test_published_bundle_holds_only_g_ema_tensors(trained_run, hub, tmp_path):
    publish(hub, trained_run)  # idempotent if the test above ran first
    _, files, _ = snapshot(hub["root"])
    _, name, sha256 = files[0]
    assert name == GENERATOR_FILE
    published = hub["root"] / "blobs" / sha256[:2] / sha256  # the bytes the hub stores
    with safe_open(str(published), framework="pt") as handle:
        keys = set(handle.keys())
    offending = sorted(k for k in keys if any(f.lower() in k.lower() for f in FORBIDDEN))
    assert offending == [], (
        f"discriminator/optimiser/data tensors in a published bundle: {offending}"
    )
    G = load_exported_generator(trained_run)
    assert keys == set(Generator(G.cfg).state_dict())


def test_publishing_again_is_idempotent(trained_run, hub):
    publish(hub, trained_run)
    before = snapshot(hub["root"])
    output = publish(hub, trained_run)
    assert "already published:" in output
    assert snapshot(hub["root"]) == before


def test_publishing_from_the_checkpoint_is_refused(trained_run, hub, tmp_path):
    before = snapshot(hub["root"])
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    with pytest.raises(UnsafeArtifactError, match="zip"):
        publish(hub, trained_run, "--weights", checkpoint, "--bundle-out", tmp_path / "b1")
    # The whole LightningModule state (G, D, G_ema) as safetensors: refused for its D tensors.
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]
    save_file(state, str(tmp_path / "module.safetensors"))
    with pytest.raises(ArtifactError, match=r"discriminator.*'D\."):
        publish(
            hub,
            trained_run,
            "--weights",
            tmp_path / "module.safetensors",
            "--bundle-out",
            tmp_path / "b2",
        )
    # G_ema under its own names plus the critic's tensors: still refused.
    mixed = {k.removeprefix("G_ema."): v for k, v in state.items() if not k.startswith("G.")}
    save_file(mixed, str(tmp_path / "mixed.safetensors"))
    with pytest.raises(ArtifactError, match=r"discriminator.*'D\."):
        publish(
            hub,
            trained_run,
            "--weights",
            tmp_path / "mixed.safetensors",
            "--bundle-out",
            tmp_path / "b3",
        )
    assert not any((tmp_path / b).exists() for b in ("b1", "b2", "b3"))
    assert snapshot(hub["root"]) == before


def test_run_without_ema_generator_is_refused(trained_run, tmp_path, hub):
    key = load_site_signing_key(hub["key"])
    partial = tmp_path / "partial"
    shutil.copytree(trained_run / "export", partial / "export")
    (partial / "export" / "g_ema.safetensors").unlink()
    with pytest.raises(ArtifactError, match="no EMA generator"):
        build_generator_bundle(partial, site_id="a", signing_key=key, override_audit=OVERRIDE)
    with pytest.raises(ArtifactError, match="has the run finished"):
        build_generator_bundle(
            tmp_path / "empty-run", site_id="a", signing_key=key, override_audit=OVERRIDE
        )
    assert not (partial / "bundle").exists()


def test_changed_weights_never_overwrite_an_existing_bundle(trained_run, hub, tmp_path):
    key = load_site_signing_key(hub["key"])
    run = tmp_path / "run"
    shutil.copytree(trained_run / "export", run / "export")
    _, first = build_generator_bundle(run, site_id="a", signing_key=key, override_audit=OVERRIDE)
    assert (
        build_generator_bundle(run, site_id="a", signing_key=key, override_audit=OVERRIDE)[
            1
        ].artifact_id
        == first.artifact_id
    )
    G = load_exported_generator(run)
    with torch.no_grad():
        next(iter(G.parameters())).add_(1.0)
    save_file(G.state_dict(), str(run / "export" / "g_ema.safetensors"))
    with pytest.raises(ArtifactError, match="different bundle is already there"):
        build_generator_bundle(run, site_id="a", signing_key=key, override_audit=OVERRIDE)
    assert (
        build_generator_bundle(
            run, site_id="a", signing_key=key, out_dir=tmp_path / "v2", override_audit=OVERRIDE
        )[1].artifact_id
        != first.artifact_id
    )
