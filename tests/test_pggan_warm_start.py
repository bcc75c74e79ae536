"""Warm start (site_node.pggan.warm_start): exact base weights, sha256 pinning, clear refusals.

The base is a real (tiny) PGGAN run on site a; the site run is on site b. Its weights are
compared with the checkpoint read independently (``torch.load``), and the published
manifest's ``training.warm_start.base_sha256`` with ``hashlib`` on the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers_cache import build_site_cache
from helpers_pggan import TINY_RUN
from safetensors.torch import load_file

from shared.artifacts.bundle import read_bundle
from shared.artifacts.generator import GeneratorManifest, write_generator_bundle
from shared.artifacts.signing import generate_signing_key
from shared.cli_main import run_cli
from shared.errors import ConfigError
from site_node.cli import app
from site_node.pggan.export import read_generator_export
from site_node.pggan.module import PGGANModule
from site_node.pggan.options import TrainOptions
from site_node.pggan.train import train
from site_node.pggan.warm_start import WarmStart, load_warm_start
from site_node.publish import generator_manifest_fields

SMALL: dict[str, Any] = {**TINY_RUN, "seed": 5}


def _options(**values: Any) -> TrainOptions:
    """TrainOptions from keyword values (validated as the CLI's are)."""
    return TrainOptions.model_validate(values)


@pytest.fixture(scope="module")
def caches(site_a: Path, site_b: Path, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("warm")
    return (
        build_site_cache(site_a, root / "cache-a", resolutions_px=(8, 16)),
        build_site_cache(site_b, root / "cache-b", resolutions_px=(8, 16)),
    )


@pytest.fixture(scope="module")
def base(caches, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 8 px base run on site a: its checkpoint file."""
    run = tmp_path_factory.mktemp("base") / "run"
    train(_options(cache_dir=caches[0].path, run_dir=run, **SMALL))
    return run / "checkpoints" / "last.ckpt"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_loads_the_base_weights_exactly(caches, base: Path, tmp_path: Path) -> None:
    warm = WarmStart(checkpoint=base, sha256=_sha256(base))
    options = _options(cache_dir=caches[1].path, run_dir=tmp_path / "b", warm_start=warm, **SMALL)
    module = PGGANModule(options, reals=None)  # type: ignore[arg-type]  # not used here
    before = {k: v.clone() for k, v in module.G.state_dict().items()}
    load_warm_start(module, warm, options.model_dump())
    reference = torch.load(base, map_location="cpu", weights_only=True)["state_dict"]
    for name in ("G", "D", "G_ema"):
        state = getattr(module, name).state_dict()
        assert state, name
        for key, tensor in state.items():
            torch.testing.assert_close(tensor, reference[f"{name}.{key}"], rtol=0, atol=0)
    assert any(not torch.equal(before[k], module.G.state_dict()[k]) for k in before)


def test_fine_tune_records_the_base_in_the_manifest(caches, base: Path, tmp_path: Path) -> None:
    digest = _sha256(base)
    warm = WarmStart(checkpoint=base, sha256=digest)
    run = train(
        _options(cache_dir=caches[1].path, run_dir=tmp_path / "b", warm_start=warm, **SMALL)
    )
    export = read_generator_export(run)
    assert [p["resolution_px"] for p in export.training["phases"]] == [8]  # one phase at 8 px
    key = generate_signing_key()
    fields = generator_manifest_fields(export, "site-b")
    weights = load_file(str(run / "export" / "g_ema.safetensors"))
    write_generator_bundle(tmp_path / "bundle", weights, fields, key)
    manifest = read_bundle(tmp_path / "bundle", key.public_key()).model
    assert isinstance(manifest, GeneratorManifest)
    assert manifest.training.warm_start is not None
    assert manifest.training.warm_start.base_sha256 == hashlib.sha256(base.read_bytes()).hexdigest()
    assert manifest.training.warm_start.base_resolution_px == 8


def test_old_manifest_without_warm_start_still_validates() -> None:
    from shared.artifacts.generator import TrainingSummary

    assert TrainingSummary.model_validate({"kimg": 1.0}).warm_start is None


def test_mismatched_base_is_refused_naming_file_and_field(caches, base: Path, tmp_path: Path):
    warm = WarmStart(checkpoint=base, sha256=_sha256(base))
    options = _options(
        cache_dir=caches[1].path, run_dir=tmp_path / "b16", warm_start=warm,
        **{**SMALL, "resolution_px": 16, "batch_sizes": {4: 8, 8: 8, 16: 8}},
    )  # fmt: skip
    with pytest.raises(ConfigError) as error:
        train(options)
    assert str(error.value).startswith(f"{base}: base field resolution_px is 8, this run's is 16")
    assert not (tmp_path / "b16").exists()  # refused before the run folder was made


def test_wrong_sha256_is_refused(caches, base: Path, tmp_path: Path) -> None:
    warm = WarmStart(checkpoint=base, sha256="0" * 64)
    options = _options(cache_dir=caches[1].path, run_dir=tmp_path / "x", warm_start=warm, **SMALL)
    with pytest.raises(ConfigError, match=r"sha256 is [0-9a-f]{64}, not the --warm-start-sha256"):
        train(options)


def test_cli_mismatch_is_one_line_exit_2(caches, base: Path, tmp_path: Path, capsys) -> None:
    code = run_cli(
        app,
        ["train", "--cache", str(caches[1].path), "--out", str(tmp_path / "cli"),
         "--resolution", "16", "--z-dim", "16", "--fmap-base", "64", "--fmap-max", "16",
         "--kimg-per-phase", "0.016", "--batch-sizes", "4:8,8:8,16:8", "--accelerator", "cpu",
         "--warm-start", str(base.parent.parent), "--warm-start-sha256", _sha256(base)],
        prog="radshare-site",
    )  # fmt: skip
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert "base field resolution_px is 8, this run's is 16" in lines[0] and str(base) in lines[0]
    assert not (tmp_path / "cli").exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--augment", "adaa"], "--augment: unknown mode 'adaa'; valid: ada, diffaugment, none"),
        (["--warm-start", "x"], "--warm-start and --warm-start-sha256 go together"),
        (["--dp", "--noise-multiplier", "1", "--augment", "ada"], "dp needs augment='none'"),
    ],
)
def test_cli_bad_augment_flags_are_one_line(caches, tmp_path: Path, capsys, flags, message):
    code = run_cli(
        app,
        ["train", "--cache", str(caches[1].path), "--out", str(tmp_path / "o"), *flags],
        prog="radshare-site",
    )
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], err
