"""Publishing a trained generator: build a signed bundle from ``<run>/export/`` and upload it.

Publishing reads only ``export/g_ema.safetensors`` and ``export/generator.json``
(``docs/contributing.md``). The weights file is header-checked before it is
read (a Lightning ``.ckpt`` or any pickle is refused unread) and must hold
exactly ``Generator(cfg).state_dict()``: a discriminator, optimiser state or
data tensor anywhere in it refuses the whole publish. The bundle goes to
``<run>/bundle/`` once; publishing the same run again reuses it, so the
content-hash id is the same and the hub answers "already published".
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.artifacts.bundle import SignedManifest, inspect_safetensors, read_bundle
from shared.artifacts.generator import (
    GENERATOR_FILE,
    GeneratorManifest,
    LocalAuditSummary,
    check_generator_tensors,
    write_generator_bundle,
)
from shared.artifacts.manifest import parse_manifest
from shared.artifacts.records import ArtifactKind, PublishResult
from shared.errors import ArtifactError
from shared.fileio import sha256_bytes
from shared.hub_client import HubClient

__all__ = ["BUNDLE_DIR", "build_generator_bundle", "generator_manifest_fields", "publish_run"]

log = logging.getLogger("radshare.site.publish")

#: Where a run's bundle goes, relative to the run folder.
BUNDLE_DIR = "bundle"

_SUMMARY_KEYS = {"kimg_shown", "kimg_total", "phases", "steps", "dp", "warm_start"}


def _read_weights(path: Path, cfg: Any) -> dict[str, Any]:
    """G_ema's tensors from a safetensors file that holds exactly G's state dict."""
    from safetensors.torch import load

    if not path.is_file():
        raise ArtifactError(
            f"{path}: missing; the run has no EMA generator to publish (has training finished? "
            "publish reads only export/g_ema.safetensors)"
        )
    data = path.read_bytes()
    tensors = inspect_safetensors(io.BytesIO(data), len(data), where=str(path))
    check_generator_tensors(cfg, tensors, where=str(path))
    return load(data)


def generator_manifest_fields(
    export: Any, site_id: str, audit: LocalAuditSummary | None = None
) -> dict[str, Any]:
    """Manifest fields (all but files/signature/created) from a run's ``GeneratorExport``."""
    training, data = dict(export.training), dict(export.data)
    cfg = export.generator_config
    return {
        "kind": ArtifactKind.GENERATOR.value,
        "site_id": site_id,
        "generator_config": cfg.model_dump(mode="json"),
        "resolution_px": cfg.resolution_px,
        "z_dim": cfg.z_dim,
        "label_space": list(
            data.get("label_space") or GeneratorManifest.model_fields["label_space"].default
        ),
        "training": {
            "kimg": training.get("kimg_shown", training.get("kimg_total", 0.0)),
            "phases": training.get("phases", []),
            "steps": training.get("steps"),
            "warm_start": training.get("warm_start"),
            "details": {k: v for k, v in training.items() if k not in _SUMMARY_KEYS},
        },
        "data": {
            "num_images": data.get("num_train_images", data.get("num_images", 0)),
            "counts_per_label": data.get("counts_per_label", {}),
        },
        "privacy": {
            "dp": training.get("dp"),
            "audit": audit.model_dump(mode="json") if audit is not None else None,
        },
    }


def _comparable(manifest: GeneratorManifest) -> dict[str, Any]:
    return manifest.model_dump(mode="json", exclude={"created", "signature", "radshare_version"})


def _reuse_existing(
    out_dir: Path, fields: dict[str, Any], tensors: dict[str, Any], key: Ed25519PrivateKey
) -> SignedManifest:
    """The bundle already in ``out_dir`` if it holds exactly what would be written now."""
    from safetensors.torch import save

    existing = read_bundle(out_dir, key.public_key())
    weights = save(tensors, metadata={"format": "pt"})
    entry = {"sha256": sha256_bytes(weights), "size_bytes": len(weights)}
    body = {
        **fields,
        "files": {GENERATOR_FILE: entry},
        "created": existing.model.created,
        "radshare_version": existing.model.radshare_version,
    }
    wanted = parse_manifest(body, where="manifest to publish")
    assert isinstance(wanted, GeneratorManifest) and isinstance(existing.model, GeneratorManifest)
    if _comparable(wanted) != _comparable(existing.model):
        raise ArtifactError(
            f"{out_dir}: a different bundle is already there (weights or manifest changed); "
            "pass a new --bundle-out"
        )
    return existing


def build_generator_bundle(
    run_dir: Path,
    *,
    site_id: str,
    signing_key: Ed25519PrivateKey,
    out_dir: Path | None = None,
    weights: Path | None = None,
    override_audit: str | None = None,
) -> tuple[Path, SignedManifest]:
    """Build (or reuse) the signed generator bundle of a finished run: (folder, manifest).

    The pre-publication gate runs first (``site_node.audit.gate``): the run's latest
    audit must have passed and have audited exactly these weights, unless
    ``override_audit`` gives a reason, which is then signed into the manifest.
    ``weights`` overrides ``export/g_ema.safetensors`` (it must still be a
    safetensors file holding G_ema only).
    Raises AuditError (gate), ArtifactError (missing export, foreign tensors),
    UnsafeArtifactError (not safetensors).
    """
    from site_node.audit.gate import publication_audit
    from site_node.pggan.export import read_generator_export

    run_dir = Path(run_dir)
    export = read_generator_export(run_dir)
    weights_path = Path(weights or run_dir / "export" / "g_ema.safetensors")
    tensors = _read_weights(weights_path, export.generator_config)
    decision = publication_audit(run_dir, weights_path, override_reason=override_audit)
    if decision.override_reason is not None:
        log.warning("audit gate overridden: %s", decision.entry.method)
    fields = generator_manifest_fields(export, site_id, decision.entry)
    out_dir = Path(out_dir or run_dir / BUNDLE_DIR)
    if out_dir.exists():
        signed = _reuse_existing(out_dir, fields, tensors, signing_key)
        log.info("reusing bundle %s (%s)", out_dir, signed.artifact_id[:12])
        return out_dir, signed
    signed = write_generator_bundle(out_dir, tensors, fields, signing_key)
    log.info("wrote bundle %s (%s)", out_dir, signed.artifact_id[:12])
    return out_dir, signed


def publish_run(run_dir: Path, client: HubClient, **bundle_options: Any) -> PublishResult:
    """Build (or reuse) the run's bundle and upload it; see ``build_generator_bundle``."""
    bundle_dir, signed = build_generator_bundle(run_dir, **bundle_options)
    result = client.publish_bundle(bundle_dir)
    log.info(
        "published %s: %s", signed.artifact_id[:12], "new" if result.created else "already there"
    )
    return result
