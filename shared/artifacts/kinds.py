"""The one table of bundle kinds: kind → manifest model and tensor check.

Every :class:`~shared.artifacts.records.ArtifactKind` has exactly one entry
here, written out by hand: no kind registers itself as a side effect of an
import, so what the hub accepts is what this file says. ``manifest`` and
``bundle`` look kinds up here when they parse a manifest or check a bundle's
tensors (at call time: this module imports the kind modules, which import
them). A test checks that every kind has an entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.artifacts.bundle import TensorCheck
from shared.artifacts.classifier import ClassifierManifest, check_classifier_bundle
from shared.artifacts.generator import GeneratorManifest, check_generator_bundle
from shared.artifacts.labeller import LabellerManifest, check_labeller_bundle
from shared.artifacts.manifest import BundleManifest
from shared.artifacts.records import ArtifactKind

__all__ = ["KINDS", "KindSpec"]


@dataclass(frozen=True)
class KindSpec:
    """How to read one kind of bundle: its manifest model and its safetensors check."""

    manifest: type[BundleManifest]
    check_tensors: TensorCheck


#: Every bundle kind a site or the hub may publish.
KINDS: dict[ArtifactKind, KindSpec] = {
    ArtifactKind.GENERATOR: KindSpec(GeneratorManifest, check_generator_bundle),
    ArtifactKind.LABELLER: KindSpec(LabellerManifest, check_labeller_bundle),
    ArtifactKind.CLASSIFIER: KindSpec(ClassifierManifest, check_classifier_bundle),
}
