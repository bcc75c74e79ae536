"""Where synthesis gets its networks: a registry id, a bundle folder, or a training export.

``--generator`` / ``--labeller`` take either

* a local folder: a bundle (``manifest.json`` + weights, verified against the
  consortium's key of its site, ``trusted``: never its own ``signer.pub``), or a
  training export (``generator.json`` + ``g_ema.safetensors``, ``labeller.json`` +
  ``labeller.safetensors``; the run folder holding ``export/`` works too), which is
  unsigned and accepted only with ``trust_local_export`` (``--trust-local-export``); or
* a registry id (or a unique prefix), pulled from the hub through ``puller`` into
  ``pull_dir/<kind>-<id12>`` (reused, and verified again, when already there).

Each source carries an id for provenance: the registry's content-hash id for
bundles, ``sha256:<weights sha256>`` for exports.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

from shared.artifacts.bundle import read_bundle
from shared.artifacts.generator import GeneratorManifest, load_generator
from shared.artifacts.keyring import TrustedKey
from shared.artifacts.labeller import (
    CARD_FILE,
    WEIGHTS_FILE,
    LabellerCard,
    load_labeller_bundle,
    load_labeller_export,
)
from shared.artifacts.manifest import MANIFEST_FILE
from shared.errors import ArtifactError, ConfigError, LabelError
from shared.fileio import sha256_file
from shared.labels import NIH_LABELS
from shared.networks.generator import Generator, GeneratorConfig
from shared.networks.labeller import Labeller

__all__ = [
    "GeneratorSource",
    "LabellerSource",
    "Puller",
    "check_compatible",
    "default_device",
    "resolve_generator",
    "resolve_labeller",
]

GENERATOR_EXPORT_JSON = "generator.json"
GENERATOR_EXPORT_WEIGHTS = "g_ema.safetensors"

#: ``puller(artifact_id, out_dir, kind) -> bundle folder`` (e.g. ``HubClient.pull``).
Puller = Callable[[str, Path, str], Path]


@dataclass(frozen=True)
class GeneratorSource:
    """A loaded generator and what synthesis needs to know about it."""

    G: Generator
    artifact_id: str
    where: str
    label_space: tuple[str, ...]
    counts_per_label: Mapping[str, int] = field(default_factory=dict)
    site_id: str | None = None  # from a signed bundle's manifest; None for an export
    num_train_images: int | None = None  # the denominator of counts_per_label (None: unknown)

    @property
    def config(self) -> GeneratorConfig:
        """The generator's architecture config."""
        return self.G.cfg


@dataclass(frozen=True)
class LabellerSource:
    """A loaded labeller, its card (thresholds, AUCs) and its id."""

    labeller: Labeller
    card: LabellerCard
    artifact_id: str
    where: str


def _local_or_pulled(ref: str, kind: str, puller: Puller | None, pull_dir: Path) -> Path:
    path = Path(ref)
    if path.exists():
        return path
    if puller is None:
        raise ConfigError(
            f"--{kind}: {ref!r} is not a local folder, and no hub was given to pull it from "
            "(pass --hub HOST:PORT, or a bundle/export folder)"
        )
    target = pull_dir / f"{kind}-{ref[:12]}"
    return target if target.exists() else puller(ref, target, kind)


def _export_folder(path: Path, json_name: str) -> Path | None:
    for folder in (path, path / "export"):
        if (folder / json_name).is_file():
            return folder
    return None


def _generator_from_export(folder: Path) -> GeneratorSource:
    json_path, weights = folder / GENERATOR_EXPORT_JSON, folder / GENERATOR_EXPORT_WEIGHTS
    try:
        raw = json.loads(json_path.read_text())
        cfg = GeneratorConfig.model_validate(raw["generator_config"])
    except (ValueError, KeyError, TypeError) as error:
        raise ArtifactError(f"{json_path}: invalid generator export: {error}") from error
    data = raw.get("data") or {}
    if not weights.is_file():
        raise ArtifactError(f"{weights}: missing")
    G = Generator(cfg)
    try:
        G.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as error:
        raise ArtifactError(f"{weights}: does not match generator_config: {error}") from error
    return GeneratorSource(
        G=G.eval().requires_grad_(False),
        artifact_id="sha256:" + sha256_file(weights)[0],
        where=str(json_path),
        label_space=tuple(data.get("label_space") or NIH_LABELS),
        counts_per_label=dict(data.get("counts_per_label") or {}),
        num_train_images=data.get("num_train_images"),
    )


def _keys_for(path: Path, trusted: TrustedKey | None) -> TrustedKey:
    """The keys to verify the bundle at ``path`` with; ConfigError when none were given."""
    if trusted is None:
        raise ConfigError(
            f"{path}: a signed bundle, and no keyring to verify it against; pass --keyring FILE "
            "(`radshare-hub keyring export`) or run at the hub (--hub-root)"
        )
    return trusted


def _trusted_export(folder: Path, trust_local_export: bool) -> None:
    if not trust_local_export:
        raise ArtifactError(
            f"{folder}: an unsigned training export; pass --trust-local-export to use it, "
            "or give the signed bundle (folder or registry id)"
        )


def resolve_generator(
    ref: str,
    *,
    puller: Puller | None = None,
    pull_dir: Path = Path("pulled"),
    trusted: TrustedKey | None = None,
    trust_local_export: bool = False,
) -> GeneratorSource:
    """Load the generator named by ``ref`` (folder or registry id); see the module docstring."""
    path = _local_or_pulled(ref, "generator", puller, pull_dir)
    if (path / MANIFEST_FILE).is_file():
        keys = _keys_for(path, trusted)
        signed = read_bundle(path, keys)
        if not isinstance(signed.model, GeneratorManifest):
            raise ArtifactError(f"{path}: kind {signed.model.kind.value!r} is not a generator")
        return GeneratorSource(
            G=load_generator(path, keys),
            artifact_id=signed.artifact_id,
            where=str(path),
            label_space=tuple(signed.model.label_space),
            counts_per_label=dict(signed.model.data.counts_per_label),
            site_id=signed.model.site_id,
            num_train_images=signed.model.data.num_images,
        )
    folder = _export_folder(path, GENERATOR_EXPORT_JSON)
    if folder is None:
        raise ArtifactError(
            f"--generator: {path} holds neither {MANIFEST_FILE} (a bundle) nor "
            f"{GENERATOR_EXPORT_JSON} (a training export)"
        )
    _trusted_export(folder, trust_local_export)
    return _generator_from_export(folder)


def resolve_labeller(
    ref: str,
    *,
    puller: Puller | None = None,
    pull_dir: Path = Path("pulled"),
    trusted: TrustedKey | None = None,
    trust_local_export: bool = False,
) -> LabellerSource:
    """Load the labeller named by ``ref`` (folder or registry id); see the module docstring."""
    path = _local_or_pulled(ref, "labeller", puller, pull_dir)
    if (path / MANIFEST_FILE).is_file():
        labeller, card, artifact_id = load_labeller_bundle(path, _keys_for(path, trusted))
        return LabellerSource(labeller, card, artifact_id, str(path))
    folder = _export_folder(path, CARD_FILE)
    if folder is None:
        raise ArtifactError(
            f"--labeller: {path} holds neither {MANIFEST_FILE} (a bundle) nor "
            f"{CARD_FILE} (a training export)"
        )
    _trusted_export(folder, trust_local_export)
    labeller, card = load_labeller_export(folder, trust_local_export=True)
    artifact_id = "sha256:" + sha256_file(folder / WEIGHTS_FILE)[0]
    return LabellerSource(labeller, card, artifact_id, str(folder / CARD_FILE))


def check_compatible(generator: GeneratorSource, labeller: LabellerSource) -> None:
    """Refuse, before any work, a labeller that cannot judge this generator's images.

    Raises:
        ConfigError: the labeller reads another resolution than the generator makes.
        LabelError: the labeller's class names are not the generator's label space.
    """
    g_res, l_res = generator.config.resolution_px, labeller.card.labeller_config.resolution_px
    if g_res != l_res:
        raise ConfigError(
            f"resolution_px: labeller {labeller.where} reads {l_res} px but generator "
            f"{generator.where} makes {g_res} px; train the labeller with --resolution {g_res}"
        )
    classes = set(labeller.card.labeller_config.class_names)
    space = set(generator.label_space)
    if classes != space:
        raise LabelError(
            f"class_names: labeller {labeller.where} classes do not match the label space of "
            f"generator {generator.where}: missing {sorted(space - classes)}, "
            f"extra {sorted(classes - space)}"
        )


def default_device(device: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
