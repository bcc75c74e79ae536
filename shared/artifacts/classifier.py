"""The classifier bundle: a signed folder like every other bundle, for a pooled classifier.

Layout::

    <bundle>/manifest.json            ClassifierManifest + the hub's Ed25519 signature
    <bundle>/classifier.safetensors   the classifier's state dict (a Labeller), nothing else
    <bundle>/classifier.json          ClassifierCard: per-class thresholds, AUCs, masks, counts

``ClassifierManifest`` and the tensor check (the weights are exactly ``Labeller(cfg)``'s)
are listed in ``shared.artifacts.kinds``, so ``read_bundle`` verifies a classifier bundle
as it verifies a generator's. The hub signs it with its own key; a verifier finds that
key under the reserved id ``hub`` in the consortium keyring.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from shared.artifacts.bundle import (
    SIGNER_KEY_FILE,
    SignedManifest,
    TensorInfo,
    check_state_dict,
    read_verified,
    state_dict_spec,
    write_bundle,
)
from shared.artifacts.keyring import TrustedKey
from shared.artifacts.manifest import HUB_SITE_ID, BundleManifest
from shared.artifacts.records import ArtifactKind
from shared.artifacts.signing import parse_json_object, public_key_pem
from shared.errors import ArtifactError
from shared.networks.labeller import Labeller, LabellerConfig

__all__ = [
    "CARD_FILE",
    "WEIGHTS_FILE",
    "ClassifierCard",
    "ClassifierClass",
    "ClassifierManifest",
    "check_classifier_bundle",
    "load_classifier_bundle",
    "write_classifier_bundle",
]

WEIGHTS_FILE = "classifier.safetensors"
CARD_FILE = "classifier.json"


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


class ClassifierManifest(BundleManifest):
    """Manifest of a classifier bundle (published by the hub, site id ``hub``)."""

    FILE_NAMES: ClassVar[tuple[str, ...]] = (WEIGHTS_FILE, CARD_FILE)

    kind: Literal[ArtifactKind.CLASSIFIER] = ArtifactKind.CLASSIFIER
    labeller_config: LabellerConfig
    class_names: tuple[str, ...]
    trained_on: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    input_format: str = "[N, 1, R, R] float32 in [-1, 1]; R = labeller_config.resolution_px"


def check_classifier_bundle(
    model: BundleManifest, file_name: str, tensors: Mapping[str, TensorInfo]
) -> None:
    """The classifier kind's tensor check (``shared.artifacts.kinds``)."""
    if not isinstance(model, ClassifierManifest):
        raise ArtifactError(f"{file_name}: kind {model.kind.value!r} is not a classifier")
    expected = state_dict_spec(lambda: Labeller(model.labeller_config))
    check_state_dict(expected, tensors, where=file_name, what="Labeller(cfg)'s")


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
    # The signer's key beside the manifest, as in pulled bundles: informative only;
    # verifiers use the hub's key from the consortium keyring.
    (Path(out_dir) / SIGNER_KEY_FILE).write_bytes(public_key_pem(private_key.public_key()))
    return signed


def load_classifier_bundle(
    bundle_dir: Path, trusted: TrustedKey
) -> tuple[Labeller, ClassifierCard, SignedManifest]:
    """Verify a classifier bundle (signature, hashes, tensors) and rebuild the network (eval).

    ``trusted``: a keyring (the hub's key is looked up under ``hub``) or the hub's key.
    """
    bundle_dir = Path(bundle_dir)
    signed, data = read_verified(bundle_dir, trusted)
    if not isinstance(signed.model, ClassifierManifest):
        raise ArtifactError(f"{bundle_dir}: kind {signed.model.kind.value!r} is not a classifier")
    card_raw = parse_json_object(data[CARD_FILE], where=str(bundle_dir / CARD_FILE))
    card = ClassifierCard.model_validate(card_raw)
    classifier = Labeller(signed.model.labeller_config)
    classifier.load_state_dict(load_safetensors(data[WEIGHTS_FILE]), strict=True)
    return classifier.eval(), card, signed
