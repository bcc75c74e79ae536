"""The hub recomputes a published generator's ε from its signed manifest, and catches bad claims."""

from __future__ import annotations

from pathlib import Path

import pytest
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.rdp import RDPAccountant
from typer.testing import CliRunner

from hub.privacy_audit import audit_dp, audit_dp_bundle
from shared.artifacts.bundle import read_bundle
from shared.artifacts.generator import GeneratorManifest
from shared.artifacts.signing import generate_signing_key, write_public_key
from shared.errors import ArtifactError
from shared.labels import NIH_LABELS
from shared.networks.generator import Generator, GeneratorConfig
from site_node.pggan.export import export_generator
from site_node.pggan.schedule import ProgressSchedule, build_phases
from site_node.privacy.config import DPOptions
from site_node.privacy.dp_module import plan_privacy, privacy_parameters
from site_node.publish import build_generator_bundle

NUM_IMAGES = 300


@pytest.fixture(scope="module")
def dp_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A signed bundle of a (random) generator whose export states a DP run of 3.0."""
    tmp_path = tmp_path_factory.mktemp("dp-bundle")
    schedule = ProgressSchedule(build_phases(8, 0.3, 0.2, {4: 32, 8: 16}))
    dp = DPOptions(target_epsilon=3.0, accountant="rdp")
    plan = plan_privacy(dp, schedule, NUM_IMAGES)
    steps = plan.max_steps
    training = {
        "kimg_total": schedule.total_nimg / 1000, "kimg_shown": schedule.total_nimg / 1000,
        "steps": steps, "phases": [p.as_dict() for p in schedule.phases],
        "dp": privacy_parameters(dp, plan, steps).model_dump(mode="json"),
    }  # fmt: skip
    data = {"num_train_images": NUM_IMAGES, "counts_per_label": {}, "label_space": list(NIH_LABELS)}
    G = Generator(GeneratorConfig(resolution_px=8, z_dim=8, fmap_base=32, fmap_max=8))
    export_generator(tmp_path / "run", G, training, data)
    key = generate_signing_key()
    bundle_dir, _ = build_generator_bundle(
        tmp_path / "run",
        site_id="a",
        signing_key=key,
        override_audit="DP accounting test: no memorisation audit needed here",
    )
    return bundle_dir, key


def _rdp_reference(manifest: GeneratorManifest) -> float:
    """ε straight from Opacus's RDP analysis of the manifest's segments."""
    assert manifest.privacy.dp is not None
    orders = RDPAccountant.DEFAULT_ALPHAS
    rdp = sum(
        rdp_analysis.compute_rdp(
            q=s.sample_rate, noise_multiplier=s.noise_multiplier, steps=s.steps, orders=orders
        )
        for s in manifest.privacy.dp.segments
    )
    return float(
        rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=manifest.privacy.dp.delta)[0]
    )


def test_published_dp_claim_is_recomputed_and_passes(dp_bundle: tuple[Path, object]) -> None:
    bundle_dir, key = dp_bundle
    result = audit_dp_bundle(bundle_dir, key.public_key())  # type: ignore[attr-defined]
    manifest = read_bundle(bundle_dir, key.public_key()).model  # type: ignore[attr-defined]
    assert isinstance(manifest, GeneratorManifest) and manifest.privacy.dp is not None

    assert result.passed, result.problems
    assert result.recomputed_epsilon == pytest.approx(_rdp_reference(manifest), rel=1e-12)
    assert result.recomputed_epsilon == pytest.approx(result.claimed_epsilon, rel=1e-12)
    assert 3.0 - 0.02 <= result.claimed_epsilon <= 3.0
    assert result.checks == {
        "epsilon": True,
        "target": True,
        "delta": True,
        "sampling": True,
        "steps": True,
    }
    assert [s.label for s in manifest.privacy.dp.segments] == [
        "stabilise 4px",
        "fade 8px",
        "stabilise 8px",
    ]


def _tampered(manifest: GeneratorManifest, **dp_changes: object) -> GeneratorManifest:
    assert manifest.privacy.dp is not None
    dp = manifest.privacy.dp.model_copy(update=dp_changes)
    return manifest.model_copy(update={"privacy": manifest.privacy.model_copy(update={"dp": dp})})


def test_understated_and_inconsistent_claims_fail(dp_bundle: tuple[Path, object]) -> None:
    bundle_dir, key = dp_bundle
    manifest = read_bundle(bundle_dir, key.public_key()).model  # type: ignore[attr-defined]
    assert isinstance(manifest, GeneratorManifest) and manifest.privacy.dp is not None
    dp = manifest.privacy.dp

    understated = audit_dp(_tampered(manifest, epsilon=dp.epsilon - 0.5))
    assert understated.checks["epsilon"] is False and not understated.passed
    assert (
        audit_dp(_tampered(manifest, epsilon=dp.epsilon - 0.005)).checks["epsilon"] is True
    )  # within tolerance
    assert audit_dp(_tampered(manifest, target_epsilon=2.0)).checks["target"] is False
    assert audit_dp(_tampered(manifest, delta=1.0 / NUM_IMAGES)).checks["delta"] is False
    faster = tuple(s.model_copy(update={"sample_rate": s.sample_rate / 2}) for s in dp.segments)
    sampled = audit_dp(_tampered(manifest, segments=faster))
    assert sampled.checks["sampling"] is False and sampled.recomputed_epsilon < dp.epsilon
    fewer = (dp.segments[0].model_copy(update={"steps": 1}), *dp.segments[1:])
    assert audit_dp(_tampered(manifest, segments=fewer)).checks["steps"] is False
    no_dp = manifest.model_copy(
        update={"privacy": manifest.privacy.model_copy(update={"dp": None})}
    )
    with pytest.raises(ArtifactError, match="not trained with DP"):
        audit_dp(no_dp)


def test_cli_audit_dp(dp_bundle: tuple[Path, object], tmp_path: Path) -> None:
    from hub.cli import app

    bundle_dir, key = dp_bundle
    write_public_key(tmp_path / "site-a.pub", key.public_key())  # type: ignore[attr-defined]
    result = CliRunner().invoke(
        app, ["audit-dp", str(bundle_dir), "--public-key", str(tmp_path / "site-a.pub")]
    )
    assert result.exit_code == 0, result.output
    assert "epsilon claimed" in result.output and "FAILED" not in result.output
