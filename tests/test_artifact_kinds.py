"""The kinds table: every ArtifactKind has exactly one explicit entry, and parsing uses it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.artifacts.bundle import TensorInfo, check_tensors
from shared.artifacts.kinds import KINDS
from shared.artifacts.manifest import manifest_model
from shared.artifacts.records import ArtifactKind
from shared.errors import ArtifactError


def test_every_artifact_kind_has_an_entry_whose_model_names_that_kind():
    assert set(KINDS) == set(ArtifactKind)
    for kind, spec in KINDS.items():
        assert spec.manifest.model_fields["kind"].default is kind
        assert manifest_model(kind.value) is spec.manifest


def test_an_unknown_kind_is_refused_naming_the_known_ones():
    with pytest.raises(ArtifactError, match=r"no manifest model for kind 'archive'.*classifier"):
        manifest_model("archive")


def test_a_tensor_check_runs_for_a_parsed_manifest_without_importing_anything_else():
    # A fresh interpreter that imports only the generic modules still knows every kind:
    # nothing depends on which kind module happened to be imported first.
    code = (
        "from shared.artifacts.manifest import manifest_model\n"
        "print(sorted(k for k in ('generator', 'labeller', 'classifier') if manifest_model(k)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['classifier', 'generator', 'labeller']"


def test_the_hub_client_stays_free_of_torch():
    code = "import sys, shared.hub_client, shared.artifacts.keyring; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_check_tensors_dispatches_by_kind(tmp_path):
    from shared.artifacts.generator import GeneratorManifest, generator_tensor_spec
    from shared.networks.generator import GeneratorConfig

    cfg = GeneratorConfig(resolution_px=8, z_dim=8, fmap_base=64, fmap_max=16)
    model = GeneratorManifest.model_construct(kind=ArtifactKind.GENERATOR, generator_config=cfg)
    check_tensors(model, "g", generator_tensor_spec(cfg))
    with pytest.raises(ArtifactError, match="discriminator/optimiser/data-like"):
        check_tensors(model, "g", {**generator_tensor_spec(cfg), "D.w": TensorInfo("F32", (1,))})
