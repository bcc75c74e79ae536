"""Export of G_ema (safetensors + JSON), rebuilding it without Lightning, and sampling PNGs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from shared.errors import ArtifactError, ConfigError
from shared.networks.generator import Generator, GeneratorConfig
from site_node.pggan.export import export_generator, load_exported_generator
from site_node.pggan.sampling import image_grid, sample_run

CFG = GeneratorConfig(resolution_px=16, z_dim=12, fmap_base=64, fmap_max=16)
TRAINING = {"kimg_total": 1.0, "phases": [], "resolution_px": 16, "seed": 0}
DATA = {"num_train_images": 3, "counts_per_label": {"No Finding": 2}}


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Generator]:
    torch.manual_seed(0)
    G_ema = Generator(CFG).eval()
    export_generator(tmp_path / "run", G_ema, TRAINING, DATA)
    return tmp_path / "run", G_ema


def test_export_round_trip_gives_identical_outputs(exported) -> None:
    run_dir, G_ema = exported
    G = load_exported_generator(run_dir)
    z = torch.randn(5, CFG.z_dim)
    with torch.no_grad():
        torch.testing.assert_close(G(z), G_ema(z), rtol=0, atol=0)
        torch.testing.assert_close(
            G.synthesize(z, 3, 0.5), G_ema.synthesize(z, 3, 0.5), rtol=0, atol=0
        )
    assert G.cfg == CFG and not G.training


def test_export_holds_g_ema_state_dict_and_description_only(exported) -> None:
    run_dir, G_ema = exported
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == [
        "g_ema.safetensors",
        "generator.json",
    ]
    with safe_open(str(run_dir / "export" / "g_ema.safetensors"), "pt") as handle:
        assert sorted(handle.keys()) == sorted(G_ema.state_dict())
    manifest = json.loads((run_dir / "export" / "generator.json").read_text())
    assert manifest["generator_config"] == CFG.model_dump()
    assert manifest["training"] == TRAINING and manifest["data"] == DATA


def test_loading_a_mismatched_or_missing_export_fails(exported, tmp_path: Path) -> None:
    run_dir, _ = exported
    path = run_dir / "export" / "generator.json"
    manifest = json.loads(path.read_text())
    manifest["generator_config"]["fmap_max"] = 8
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not match generator_config"):
        load_exported_generator(run_dir)
    with pytest.raises(ArtifactError, match="missing"):
        load_exported_generator(tmp_path / "nowhere")


def test_sample_run_writes_pngs_of_g_ema_and_a_grid(exported, tmp_path: Path) -> None:
    run_dir, G_ema = exported
    paths = sample_run(run_dir, tmp_path / "samples", num_images=5, seed=3)
    assert [p.name for p in paths] == [f"sample_{i:06d}.png" for i in range(5)] + ["grid.png"]
    # The documented latents: torch.randn from a generator seeded with the seed.
    z = torch.randn(5, CFG.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = ((G_ema(z)[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    written = np.stack([np.asarray(Image.open(p)) for p in paths[:5]])
    np.testing.assert_array_equal(written, expected)
    grid = np.asarray(Image.open(paths[-1]))
    assert grid.shape == (2 * 16, 3 * 16)  # ceil(sqrt(5)) = 3 columns, 2 rows
    np.testing.assert_array_equal(grid[16:32, 0:16], expected[3])  # row 1, column 0
    np.testing.assert_array_equal(grid[16:32, 32:48], 0)  # the cell past the last image
    with pytest.raises(ConfigError, match="not empty"):
        sample_run(run_dir, tmp_path / "samples", num_images=2)


def test_image_grid_layout() -> None:
    images = np.arange(4 * 2 * 2, dtype=np.uint8).reshape(4, 2, 2)
    expected = np.block(
        [[images[0], images[1], images[2]], [images[3], np.zeros((2, 4), np.uint8)]]
    )
    np.testing.assert_array_equal(image_grid(images, columns=3), expected)
