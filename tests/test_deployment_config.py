"""Deployment configs: documented defaults, the example YAML files, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployment.config import (
    PROFILE_SETTINGS,
    ConsortiumConfig,
    DemoConfig,
    SiteConfig,
    load_config,
)
from hub.config import HubConfig, load_hub_config
from shared.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "deployment" / "configs"


def test_every_field_has_a_default_and_a_description():
    for model in (SiteConfig, ConsortiumConfig, DemoConfig):
        model()  # the documented defaults validate
    described = [
        name
        for model in (SiteConfig, DemoConfig)
        for name, field in model.model_fields.items()
        if field.description
    ]
    assert "work_dir" in described and "profile" in described


def test_example_files_load_into_their_models():
    site = load_config(SiteConfig, CONFIGS / "site.yaml")
    consortium = load_config(ConsortiumConfig, CONFIGS / "consortium.yaml")
    demo = load_config(DemoConfig, CONFIGS / "demo.yaml")
    hub = load_hub_config(CONFIGS / "hub.yaml")
    assert site.site_id == "a" and site.superlink.insecure is False
    assert isinstance(consortium.hub, HubConfig)
    assert consortium.hub.port == hub.port == 50051
    assert [s.site_id for s in demo.sites] == ["a", "b"]
    assert demo.out_dir.resolve() == (CONFIGS.parent.parent / "demo-out").resolve()


def test_relative_paths_are_relative_to_the_file(tmp_path: Path):
    path = tmp_path / "conf" / "site.yaml"
    path.parent.mkdir()
    path.write_text("site_id: b\nwork_dir: work\ndata:\n  csv: d/labels.csv\n")
    site = load_config(SiteConfig, path)
    assert site.work_dir == path.parent / "work"
    assert site.data.csv == path.parent / "d" / "labels.csv"


@pytest.mark.parametrize(
    ("text", "field", "value"),
    [
        ("site_id: A B\n", "site_id", "A B"),
        ("max_resolution_px: 100\n", "max_resolution_px", "100"),
        ("colour: red\n", "colour", "red"),
    ],
)
def test_bad_values_name_the_file_field_and_value(tmp_path: Path, text, field, value):
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(SiteConfig, path)
    message = str(caught.value)
    assert str(path) in message and field in message and value in message


def test_profiles_grow_from_tiny_to_gpu():
    tiny, cpu, gpu = (PROFILE_SETTINGS[p] for p in ("tiny", "cpu", "gpu"))
    for name in ("phantom_images", "archive_images_per_site", "audit_num_generated"):
        assert getattr(tiny, name) < getattr(cpu, name) < getattr(gpu, name)
    assert tiny.pggan_resolution_px >= 32  # the labeller's smallest input
    assert DemoConfig(profile="gpu").resolved_settings().accelerator == "gpu"


def test_cpu_profile_trains_the_pggan_with_one_batch_at_every_level():
    from deployment.site_steps import pggan_batch_sizes_argv
    from site_node.pggan.schedule import parse_batch_sizes

    cpu = PROFILE_SETTINGS["cpu"]
    flag, value = pggan_batch_sizes_argv(cpu)
    assert flag == "--batch-sizes"
    assert parse_batch_sizes(value) == {4: 16, 8: 16, 16: 16, 32: 16}
    larger = cpu.model_copy(update={"pggan_resolution_px": 128, "pggan_batch_size": 8})
    assert parse_batch_sizes(pggan_batch_sizes_argv(larger)[1]) == {
        4: 8,
        8: 8,
        16: 8,
        32: 8,
        64: 8,
        128: 8,
    }
    for profile in ("tiny", "gpu"):  # the PGGAN profile's own batches
        assert pggan_batch_sizes_argv(PROFILE_SETTINGS[profile]) == []
