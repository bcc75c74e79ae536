"""The classifier bundle: a signed folder like every other bundle, for a pooled classifier.

Layout::

    <bundle>/manifest.json            ClassifierManifest + the hub's Ed25519 signature
    <bundle>/classifier.safetensors   the classifier's state dict (a Labeller), nothing else
    <bundle>/classifier.json          ClassifierCard: per-class thresholds, AUCs, masks, counts

``ClassifierManifest`` is registered with :func:`shared.artifacts.manifest.register_manifest`
on import, and a tensor check makes sure the weights are exactly ``Labeller(cfg)``'s, so
``read_bundle`` verifies a classifier bundle as it verifies a generator's.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

from shared.artifacts.bundle import (
    SIGNER_KEY_FILE,
    SignedManifest,
    TensorInfo,
    read_bundle,
    register_tensor_check,
    write_bundle,
)
from shared.artifacts.manifest import BundleManifest, register_manifest
from shared.artifacts.records import ArtifactKind
from shared.artifacts.signing import public_key_pem
from shared.errors import ArtifactError
from shared.networks.labeller import Labeller, LabellerConfig

__all__ = [
    "CARD_FILE",
    "WEIGHTS_FILE",
    "ClassifierCard",
    "ClassifierClass",
    "ClassifierManifest",
    "load_classifier_bundle",
    "write_classifier_bundle",
]

WEIGHTS_FILE = "classifier.safetensors"
CARD_FILE = "classifier.json"
HUB_SITE_ID = "hub"


class ClassifierClass(BaseModel):
    """One class of a classifier: threshold and AUC on its synthetic validation rows."""

    model_config = ConfigDict(extra="forbid")

    name: str
    threshold_logit: float | None = None
    val_auc: float | None = None
    train_positives: int = 0
    train_annotated: int = 0
    val_positives: int = 0


class ClassifierCard(BaseModel):
    """``classifier.json``: config, classes, what it was trained on (counts, never images)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    kind: Literal["classifier"] = "classifier"
    labeller_config: LabellerConfig
    classes: list[ClassifierClass]
    trained_on: dict[str, Any] = Field(description="archive id/name, sites, masks, counts")
    training: dict[str, Any] = Field(default_factory=dict)
    val_macro_auc: float | None = None


@register_manifest
class ClassifierManifest(BundleManifest):
    """Manifest of a classifier bundle (published by the hub, site id ``hub``)."""

    FILE_NAMES: ClassVar[tuple[str, ...]] = (WEIGHTS_FILE, CARD_FILE)

    kind: Literal[ArtifactKind.CLASSIFIER] = ArtifactKind.CLASSIFIER
    labeller_config: LabellerConfig
    class_names: tuple[str, ...]
    trained_on: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    input_format: str = "[N, 1, R, R] float32 in [-1, 1]; R = labeller_config.resolution_px"


def _tensor_spec(cfg: LabellerConfig) -> dict[str, TensorInfo]:
    dtypes = {torch.float32: "F32", torch.int64: "I64"}
    with torch.device("meta"):
        net = Labeller(cfg)
    return {
        name: TensorInfo(dtypes.get(t.dtype, str(t.dtype)), tuple(t.shape))
        for name, t in net.state_dict().items()
    }


@register_tensor_check(ArtifactKind.CLASSIFIER)
def _check_classifier(
    model: BundleManifest, file_name: str, tensors: Mapping[str, TensorInfo]
) -> None:
    assert isinstance(model, ClassifierManifest)
    expected = _tensor_spec(model.labeller_config)
    if dict(tensors) != expected:
        extra = sorted(set(tensors) - set(expected))[:3]
        missing = sorted(set(expected) - set(tensors))[:3]
        raise ArtifactError(
            f"{file_name}: not Labeller(cfg)'s tensors (extra {extra}, missing {missing})"
        )


def write_classifier_bundle(
    out_dir: Path, classifier: Labeller, card: ClassifierCard, private_key: Ed25519PrivateKey
) -> SignedManifest:
    """Write a new signed classifier bundle (``out_dir`` must not exist)."""
    if card.labeller_config != classifier.cfg:
        raise ArtifactError("card.labeller_config differs from the classifier's config")
    fields = {
        "kind": ArtifactKind.CLASSIFIER.value,
        "site_id": HUB_SITE_ID,
        "labeller_config": classifier.cfg.model_dump(mode="json"),
        "class_names": list(classifier.cfg.class_names),
        "trained_on": card.trained_on,
        "training": card.training,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in classifier.state_dict().items()}
    with tempfile.TemporaryDirectory() as tmp:
        weights, card_path = Path(tmp) / WEIGHTS_FILE, Path(tmp) / CARD_FILE
        save_file(state, str(weights), metadata={"format": "pt"})
        card_path.write_text(card.model_dump_json(indent=2))
        files = {WEIGHTS_FILE: weights, CARD_FILE: card_path}
        signed = write_bundle(Path(out_dir), fields, files, private_key)
    # The signer's key beside the manifest, as in pulled bundles: integrity when loading
    # without a key; pass the hub's key to load_classifier_bundle for authenticity.
    (Path(out_dir) / SIGNER_KEY_FILE).write_bytes(public_key_pem(private_key.public_key()))
    return signed


def load_classifier_bundle(
    bundle_dir: Path, public_key: Ed25519PublicKey | Path | bytes | None = None
) -> tuple[Labeller, ClassifierCard, SignedManifest]:
    """Verify a classifier bundle (signature, hashes, tensors) and rebuild the network (eval)."""
    bundle_dir = Path(bundle_dir)
    signed = read_bundle(bundle_dir, public_key)
    if not isinstance(signed.model, ClassifierManifest):
        raise ArtifactError(f"{bundle_dir}: kind {signed.model.kind.value!r} is not a classifier")
    card = ClassifierCard.model_validate(json.loads((bundle_dir / CARD_FILE).read_text()))
    classifier = Labeller(signed.model.labeller_config)
    classifier.load_state_dict(load_file(str(bundle_dir / WEIGHTS_FILE)))
    return classifier.eval(), card, signed
