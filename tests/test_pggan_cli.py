"""``radshare-site train`` and ``sample`` end to end on site A (a tiny 8 px run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers_cache import build_site_cache
from PIL import Image
from typer.testing import CliRunner

from shared.errors import ConfigError
from site_node.cli import app
from site_node.pggan.export import load_exported_generator
from site_node.pggan.sampling import generate_uint8

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY_8PX = [
    "--resolution", "8", "--kimg-per-phase", "0.04", "--batch-sizes", "4:8,8:8",
    "--fmap-base", "64", "--fmap-max", "16", "--z-dim", "16", "--tick-kimg", "0.04",
    "--sample-every-kimg", "0.04", "--accelerator", "cpu", "--no-progress-bar",
]  # fmt: skip


def test_train_then_sample(site_a: Path, tmp_path: Path) -> None:
    cache = build_site_cache(site_a, tmp_path / "cache", resolutions_px=(8,))
    run_dir, samples = tmp_path / "runs" / "tiny", tmp_path / "samples"
    runner = CliRunner()

    result = runner.invoke(
        app, ["train", "--cache", str(cache.path), "--out", str(run_dir), *TINY_8PX]
    )
    assert result.exit_code == 0, result.output
    assert f"done: {run_dir / 'export'}" in result.output
    assert (run_dir / "options.json").is_file() and (
        run_dir / "export" / "g_ema.safetensors"
    ).is_file()

    result = runner.invoke(
        app,
        [
            "sample",
            "--run",
            str(run_dir),
            "--num-images",
            "4",
            "--out",
            str(samples),
            "--seed",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    written = np.stack([np.asarray(Image.open(samples / f"sample_{i:06d}.png")) for i in range(4)])
    np.testing.assert_array_equal(
        written, generate_uint8(load_exported_generator(run_dir), 4, seed=2)
    )
    assert (samples / "grid.png").is_file()

    # --resume takes every option from the run folder; a schedule option is refused.
    result = runner.invoke(app, ["train", "--out", str(run_dir), "--resume", "--seed", "3"])
    assert isinstance(result.exception, ConfigError) and "seed" in str(result.exception)
