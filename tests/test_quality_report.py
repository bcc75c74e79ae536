"""End to end: `radshare-hub quality` on small NIH-layout folders writes every analysis."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from hub.cli import app
from hub.quality.report import Section, render_report
from shared.artifacts.labeller import ClassMetrics, LabellerCard, save_labeller_export
from shared.networks.generator import Generator, GeneratorConfig
from shared.networks.labeller import Labeller, LabellerConfig

CLASSES = ["Effusion", "Mass", "No Finding"]


def _nih_folder(root: Path, num_images: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    rows = []
    for i in range(num_images):
        label = CLASSES[i % 3]
        image = rng.integers(0, 80, (32, 32)) + (120 if label == "Effusion" else 40) * (
            np.arange(32) > 16
        )
        name = f"{i:08d}_000.png"
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / name)
        rows.append(
            {
                "Image Index": name,
                "Finding Labels": label,
                "Patient ID": i // 2,
                "Patient Gender": "MF"[i % 2],
            }
        )
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


def _exports(root: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    cfg = LabellerConfig(
        resolution_px=32, init_features=8, growth_rate=4, block_config=(1, 1, 1, 1)
    )
    labeller = Labeller(cfg)
    card = LabellerCard(
        labeller_config=cfg,
        classes=[ClassMetrics(name=n, threshold_logit=0.0) for n in cfg.class_names],
    )
    save_labeller_export(root / "labeller", labeller, card)
    gen_cfg = GeneratorConfig(resolution_px=32, z_dim=16, fmap_base=64, fmap_max=16)
    G = Generator(gen_cfg)
    (root / "generator").mkdir()
    save_file(
        {k: v.contiguous() for k, v in G.state_dict().items()},
        str(root / "generator" / "g_ema.safetensors"),
    )
    (root / "generator" / "generator.json").write_text(
        json.dumps({"generator_config": gen_cfg.model_dump()})
    )
    return root / "labeller", root / "generator"


def test_quality_command_writes_every_analysis(tmp_path):
    real = _nih_folder(tmp_path / "real", 60, seed=0)
    synthetic = _nih_folder(tmp_path / "synthetic", 30, seed=1)
    labeller, generator = _exports(tmp_path)
    out = tmp_path / "report"
    args = [
        "quality",
        "--real",
        str(real),
        "--synthetic",
        str(synthetic),
        "--labeller",
        str(labeller),
        "--generator",
        str(generator),
        "--trust-local-export",
        "--resolution-px",
        "32",
        "--out",
        str(out),
        "--resamples",
        "200",
        "--han-latents",
        "2",
        "--han-steps",
        "3",
        "--feature-cache",
        str(tmp_path / "features"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    assert results["extractor"].startswith("labeller:")
    assert len(results["zero_measure"]) == 3 and results["real_vs_synthetic"] > 0
    assert results["class_matrix"]["names"] == CLASSES
    assert set(results["prevalence_real"]) == set(LabellerConfig().class_names)
    assert np.array(results["pathology_correlation"]["r"]).shape == (14, 15)
    assert len(list((out / "transitions").glob("*.gif"))) == 14
    page = (out / "report.html").read_text()
    for heading in ("Fréchet distances", "Label prevalence", "Pathology correlations"):
        assert heading in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2 + 1 + 1 + 2 * 14
    assert len(list((tmp_path / "features").glob("*.npy"))) == 2
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0  # a report folder is never overwritten


def test_report_escapes_text():
    page = render_report(
        "<t>", [Section("a<b", paragraphs=["x & y"], tables=[("c", ["h"], [[1.23456]])])]
    )
    assert (
        "&lt;t&gt;" in page
        and "a&lt;b" in page
        and "x &amp; y" in page
        and "<td>1.235</td>" in page
    )
