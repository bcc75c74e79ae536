"""The labeller kind: its export card, its signed bundle, and their read/write.

A labeller's training export is ``labeller.safetensors`` (state dict) +
``labeller.json`` (:class:`LabellerCard`: config, per-class Youden thresholds in
logit units, validation and test AUCs, DP parameters if any). It is unsigned, so
anything but the site that trained it reads it only when told to
(``trust_local_export=True``, ``--trust-local-export``). A labeller is
published as a signed bundle: ``manifest.json`` (:class:`LabellerManifest`, kind
``labeller``, the card's fields plus site, files and signature) +
``labeller.safetensors``, verified against the consortium's key of its site.
Loading never unpickles. The network is :mod:`shared.networks.labeller`.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, model_validator
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from safetensors.torch import save_file

from shared.artifacts.bundle import (
    SignedManifest,
    TensorInfo,
    check_state_dict,
    inspect_safetensors,
    read_verified,
    state_dict_spec,
    write_bundle,
)
from shared.artifacts.keyring import TrustedKey
from shared.artifacts.manifest import ArtifactKind, BundleManifest, DPParameters
from shared.errors import ArtifactError
from shared.fileio import atomic_write_bytes, atomic_write_text
from shared.networks.labeller import Labeller, LabellerConfig

__all__ = [
    "CARD_FILE",
    "LABELLER_SCHEMA_VERSION",
    "WEIGHTS_FILE",
    "ClassMetrics",
    "LabellerCard",
    "LabellerDataSummary",
    "LabellerManifest",
    "LabellerTrainingSummary",
    "check_labeller_bundle",
    "labeller_tensor_spec",
    "load_labeller_bundle",
    "load_labeller_export",
    "save_labeller_export",
    "write_labeller_bundle",
]

LABELLER_SCHEMA_VERSION = 1
WEIGHTS_FILE = "labeller.safetensors"
CARD_FILE = "labeller.json"


class ClassMetrics(BaseModel):
    """One class of a labeller: its Youden threshold and how well it separates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    threshold_logit: float | None = Field(
        None, description="Youden's J cut-off on the validation ROC; None: no val positives"
    )
    val_auc: float | None = None
    val_auc_ci95: tuple[float, float] | None = Field(
        default=None,
        description="95% bootstrap CI of val_auc; the hub calls a class only above chance",
    )
    test_auc: float | None = None
    test_auc_ci95: tuple[float, float] | None = None
    train_positives: Annotated[int, Field(ge=0)] = 0
    val_positives: Annotated[int, Field(ge=0)] = 0
    test_positives: Annotated[int, Field(ge=0)] = 0


class LabellerTrainingSummary(BaseModel):
    """How a labeller was trained (numbers and names only)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs_trained: Annotated[int, Field(ge=0)] = 0
    best_val_macro_auc: float | None = None
    lr: float = 1e-3
    batch_size: Annotated[int, Field(ge=1)] = 32
    seed: int = 0
    loss: str = "weighted binary cross entropy (Guendel et al.)"
    augmentation: dict[str, float] = Field(default_factory=dict)


class LabellerDataSummary(BaseModel):
    """What a labeller was trained and evaluated on, as counts only: never an identifier."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    images_per_split: dict[Literal["train", "val", "test"], int] = Field(default_factory=dict)


class _LabellerDescription(BaseModel):
    """Fields shared by the export card and the bundle manifest."""

    labeller_config: LabellerConfig
    classes: list[ClassMetrics]
    val_macro_auc: float | None = None
    test_macro_auc: float | None = None
    input_format: str = "[N, 1, R, R] float32 in [-1, 1]; R = labeller_config.resolution_px"
    training: LabellerTrainingSummary = Field(default_factory=lambda: LabellerTrainingSummary())
    data: LabellerDataSummary = Field(default_factory=lambda: LabellerDataSummary())
    dp: DPParameters | None = None

    @model_validator(mode="after")
    def _classes_match_config(self) -> _LabellerDescription:
        names = [c.name for c in self.classes]
        if names != list(self.labeller_config.class_names):
            raise ValueError(
                f"classes {names} do not match labeller_config.class_names "
                f"{list(self.labeller_config.class_names)}"
            )
        return self

    @property
    def thresholds_logit(self) -> dict[str, float | None]:
        """Class name → Youden threshold in logit units (None: class cannot be judged)."""
        return {c.name: c.threshold_logit for c in self.classes}


class LabellerCard(_LabellerDescription):
    """``labeller.json`` beside the weights of a training export."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = LABELLER_SCHEMA_VERSION
    kind: Literal["labeller"] = "labeller"


class LabellerManifest(_LabellerDescription, BundleManifest):
    """Manifest of a labeller bundle: ``labeller.safetensors`` holds the state dict only."""

    FILE_NAMES: ClassVar[tuple[str, ...]] = (WEIGHTS_FILE,)

    kind: Literal[ArtifactKind.LABELLER] = ArtifactKind.LABELLER
    resolution_px: int

    @model_validator(mode="after")
    def _resolution_matches(self) -> LabellerManifest:
        if self.resolution_px != self.labeller_config.resolution_px:
            raise ValueError(
                f"resolution_px {self.resolution_px} != labeller_config.resolution_px "
                f"{self.labeller_config.resolution_px}"
            )
        return self

    def card(self) -> LabellerCard:
        """The description as an export card."""
        return LabellerCard.model_validate(self.model_dump(include=set(_DESCRIPTION_FIELDS)))


_DESCRIPTION_FIELDS = tuple(_LabellerDescription.model_fields)


def labeller_tensor_spec(cfg: LabellerConfig) -> dict[str, TensorInfo]:
    """Every tensor ``Labeller(cfg).state_dict()`` holds (built on the meta device)."""
    return state_dict_spec(lambda: Labeller(cfg))


def check_labeller_bundle(
    model: BundleManifest, file_name: str, tensors: Mapping[str, TensorInfo]
) -> None:
    """The labeller kind's tensor check (``shared.artifacts.kinds``)."""
    if not isinstance(model, LabellerManifest):
        raise ArtifactError(f"{file_name}: kind {model.kind.value!r} is not a labeller")
    expected = labeller_tensor_spec(model.labeller_config)
    check_state_dict(expected, tensors, where=file_name, what="the labeller's")


def write_labeller_bundle(
    out_dir: Path | str,
    labeller: Labeller,
    card: LabellerCard,
    site_id: str,
    private_key: Ed25519PrivateKey,
) -> SignedManifest:
    """Write a signed labeller bundle (``manifest.json`` + ``labeller.safetensors``)."""
    out_dir = Path(out_dir)
    fields = {
        **card.model_dump(mode="json", include=set(_DESCRIPTION_FIELDS)),
        "kind": ArtifactKind.LABELLER.value,
        "site_id": site_id,
        "resolution_px": card.labeller_config.resolution_px,
    }
    with tempfile.TemporaryDirectory(
        dir=out_dir.parent if out_dir.parent.exists() else None
    ) as tmp:
        weights = Path(tmp) / WEIGHTS_FILE
        state = {k: v.detach().cpu().contiguous() for k, v in labeller.state_dict().items()}
        save_file(state, str(weights), metadata={"format": "pt"})
        return write_bundle(out_dir, fields, {WEIGHTS_FILE: weights}, private_key)


def load_labeller_bundle(
    bundle_dir: Path | str,
    trusted: TrustedKey,
    map_location: str | torch.device = "cpu",
) -> tuple[Labeller, LabellerCard, str]:
    """Verify a labeller bundle (signature, sha256, tensors); return it, its card and its id.

    ``trusted``: a keyring (the signer is looked up by the manifest's site id) or
    one explicit key; see ``shared.artifacts.bundle.read_bundle``.
    """
    bundle_dir = Path(bundle_dir)
    signed, data = read_verified(bundle_dir, trusted)
    if not isinstance(signed.model, LabellerManifest):
        raise ArtifactError(f"{bundle_dir}: kind {signed.model.kind.value!r} is not a labeller")
    labeller = Labeller(signed.model.labeller_config)
    labeller.load_state_dict(load_safetensors(data[WEIGHTS_FILE]), strict=True)
    return labeller.to(map_location).eval(), signed.model.card(), signed.artifact_id


def save_labeller_export(export_dir: Path | str, labeller: Labeller, card: LabellerCard) -> Path:
    """Write ``labeller.safetensors`` and ``labeller.json`` atomically into ``export_dir``."""
    if card.labeller_config != labeller.cfg:
        raise ArtifactError("card.labeller_config differs from the labeller's own config")
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in labeller.state_dict().items()}
    atomic_write_bytes(export_dir / WEIGHTS_FILE, save_safetensors(state))
    atomic_write_text(export_dir / CARD_FILE, card.model_dump_json(indent=2))
    return export_dir


def load_labeller_export(
    export_dir: Path | str,
    map_location: str | torch.device = "cpu",
    *,
    trust_local_export: bool,
) -> tuple[Labeller, LabellerCard]:
    """Rebuild a labeller from ``labeller.json`` and ``labeller.safetensors`` (eval mode).

    A training export is unsigned: the caller says it trusts it
    (``trust_local_export=True``: the site's own export, or ``--trust-local-export``).

    Raises:
        ArtifactError: not trusted, a missing file, an invalid card or weights that do
            not fit the config.
    """
    export_dir = Path(export_dir)
    if not trust_local_export:
        raise ArtifactError(
            f"{export_dir}: an unsigned labeller training export; pass --trust-local-export "
            "to use it, or use the site's signed bundle"
        )
    card_path, weights_path = export_dir / CARD_FILE, export_dir / WEIGHTS_FILE
    for path in (card_path, weights_path):
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (a labeller export needs both files)")
    try:
        card = LabellerCard.model_validate(json.loads(card_path.read_text()))
    except ValueError as error:
        raise ArtifactError(f"{card_path}: invalid labeller card: {error}") from error
    data = weights_path.read_bytes()
    tensors = inspect_safetensors(io.BytesIO(data), len(data), where=str(weights_path))
    expected = labeller_tensor_spec(card.labeller_config)
    try:
        check_state_dict(expected, tensors, where=str(weights_path), what="the labeller's")
    except ArtifactError as error:
        raise ArtifactError(f"weights do not fit the config {card_path.name}: {error}") from None
    labeller = Labeller(card.labeller_config)
    labeller.load_state_dict(load_safetensors(data), strict=True)
    return labeller.to(map_location).eval(), card
