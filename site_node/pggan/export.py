"""A finished run's ``export/`` (``g_ema.safetensors`` + ``generator.json``) and loading it.

The export is everything publishing may read: G_ema's state dict (safetensors, nothing
else) and a JSON description (:class:`GeneratorExport`) that rebuilds the network and
summarises training and data without identifiers. Loading never unpickles and never
needs Lightning.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors.torch import load_file, save

from shared.errors import ArtifactError
from shared.fileio import atomic_write_bytes, atomic_write_text
from shared.networks.generator import Generator, GeneratorConfig

__all__ = [
    "EXPORT_SCHEMA_VERSION",
    "GeneratorExport",
    "export_generator",
    "load_exported_generator",
    "read_generator_export",
]

EXPORT_SCHEMA_VERSION = 1
WEIGHTS_NAME = "g_ema.safetensors"
MANIFEST_NAME = "generator.json"


class GeneratorExport(BaseModel):
    """``export/generator.json``: how to rebuild G_ema, how it was trained, on what (no ids)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = EXPORT_SCHEMA_VERSION
    generator_config: GeneratorConfig
    training: dict[str, Any] = Field(description="kimg_total, phases, resolution_px, seed, ...")
    data: dict[str, Any] = Field(description="num_train_images, counts_per_label (train split)")


def export_generator(
    run_dir: Path, G_ema: Generator, training: dict[str, Any], data: dict[str, Any]
) -> Path:
    """Write ``run_dir/export/`` (weights first, the JSON last); returns the export folder."""
    export_dir = Path(run_dir) / "export"
    export_dir.mkdir(parents=True, exist_ok=True)
    manifest = GeneratorExport(generator_config=G_ema.cfg, training=training, data=data)
    state = {name: t.detach().cpu().contiguous() for name, t in G_ema.state_dict().items()}
    weights = save(state, metadata={"format": "pt", "network": "radshare.pggan.G_ema"})
    atomic_write_bytes(
        export_dir / WEIGHTS_NAME, weights, mode=0o644
    )  # publish may be another user
    atomic_write_text(export_dir / MANIFEST_NAME, manifest.model_dump_json(indent=2))
    return export_dir


def read_generator_export(run_dir: Path) -> GeneratorExport:
    """Validated ``export/generator.json`` of a run (raises :class:`ArtifactError`)."""
    path = Path(run_dir) / "export" / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{path}: missing (has the run finished?)")
    try:
        return GeneratorExport.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as error:
        raise ArtifactError(f"{path}: invalid generator export: {error}") from error


def load_exported_generator(run_dir: Path | str) -> Generator:
    """Rebuild G_ema from ``run_dir/export/`` alone (safetensors + JSON; eval mode, CPU)."""
    manifest = read_generator_export(Path(run_dir))
    weights = Path(run_dir) / "export" / WEIGHTS_NAME
    if not weights.is_file():
        raise ArtifactError(f"{weights}: missing")
    G = Generator(manifest.generator_config)
    try:
        G.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as error:
        raise ArtifactError(f"{weights}: does not match generator_config: {error}") from error
    return G.eval().requires_grad_(False)
