"""DDP (two CPU processes, gloo) trains the same G_ema as one process: the update is full-batch.

Each rank draws the whole batch from (seed, step), takes its contiguous half, and the
gradients are averaged with one all-reduce per network (``GradientAllReduceDDP``).
Minibatch stddev is off here: it groups samples within a rank, so with it on the two
runs differ by design (as in Karras et al.'s multi-GPU training). Only the order of
floating-point sums differs, hence a small tolerance instead of bitwise equality.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers_cache import build_site_cache

from site_node.pggan.export import load_exported_generator

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch

    from site_node.pggan.options import TrainOptions
    from site_node.pggan.train import train

    torch.set_num_threads(1)
    cache_dir, run_dir, devices = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    train(TrainOptions(
        cache_dir=cache_dir, run_dir=run_dir, resolution_px=8, z_dim=16, fmap_base=64,
        fmap_max=16, kimg_per_phase=0.032, batch_sizes={4: 8, 8: 8}, tick_kimg=0.032,
        use_minibatch_stddev=False, accelerator="cpu", devices=devices,
        strategy="ddp" if devices > 1 else "auto", progress_bar=False, seed=3,
    ))
    """
)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(site_a: Path, tmp_path: Path) -> None:
    cache = build_site_cache(site_a, tmp_path.parent / "site_a_cache_ddp")
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for devices in (1, 2):
        run = [sys.executable, str(script), str(cache.path), str(tmp_path / f"run{devices}")]
        subprocess.run([*run, str(devices)], check=True, env=env, timeout=600, capture_output=True)
    one = load_exported_generator(tmp_path / "run1").state_dict()
    two = load_exported_generator(tmp_path / "run2").state_dict()
    assert one.keys() == two.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-5, atol=1e-5)
