"""Typed deployment configuration: a site node, the consortium services, and the demo.

Three YAML files, each validated by one pydantic model (unknown keys are errors; relative
paths are relative to the file's folder). Every field has a default and a description, so
``SiteConfig()`` / ``ConsortiumConfig()`` / ``DemoConfig()`` are the documented defaults:

* :class:`SiteConfig` (``deployment/configs/site.yaml``): what a hospital runs.
* :class:`ConsortiumConfig` (``deployment/configs/consortium.yaml``): the hub (re-using
  :class:`hub.config.HubConfig`) and the Flower SuperLink.
* :class:`DemoConfig` (``deployment/configs/demo.yaml``): the one-command demo; its
  ``profile`` picks :data:`PROFILE_SETTINGS` (``tiny`` for tests, ``cpu`` for a 2-core
  laptop, ``gpu`` for a workstation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.config import HubConfig
from shared.errors import ConfigError
from shared.validation import field_error, read_yaml_mapping
from site_node.config import (
    SiteConfig,
    SiteDataConfig,
    SiteHubConfig,
    SiteSuperLinkConfig,
    resolve_relative_paths,
)

__all__ = [
    "PROFILE_SETTINGS",
    "ConsortiumConfig",
    "DemoConfig",
    "DemoSite",
    "ProfileSettings",
    "SiteConfig",
    "SiteDataConfig",
    "SiteHubConfig",
    "SiteSuperLinkConfig",
    "SuperLinkConfig",
    "load_config",
]

Profile = Literal["tiny", "cpu", "gpu"]
_Model = TypeVar("_Model", bound=BaseModel)
_SITE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------- site node
# SiteConfig lives in site_node.config (the site image holds no deployment/ or hub/ code);
# re-exported here so that one module names all three files.

# --------------------------------------------------------------------------- consortium


class SuperLinkConfig(_Strict):
    """The Flower SuperLink the hub's federated tasks run through."""

    host: str = Field(
        default="0.0.0.0", description="address to bind (Fleet, Control, Runtime APIs)"
    )
    port: int = Field(default=9092, ge=1, le=65535, description="one HTTPS port for all three APIs")
    tls_dir: Path | None = Field(
        default=Path("/etc/radshare/tls"),
        description="ca.crt, server.crt, server.key; None: --insecure",
    )
    enable_supernode_auth: bool = Field(
        default=True, description="only registered site keys may join"
    )
    database: Path | None = Field(
        default=Path("/var/lib/radshare-hub/superlink.db"),
        description="SuperLink state; None: memory",
    )


class ConsortiumConfig(_Strict):
    """What the operator runs: the hub's registry server and the SuperLink."""

    hub: HubConfig = Field(default_factory=lambda: HubConfig())
    superlink: SuperLinkConfig = Field(default_factory=SuperLinkConfig)


# --------------------------------------------------------------------------- demo


class ProfileSettings(_Strict):
    """Sizes of every demo step; one preset per profile, overridable in demo.yaml.

    The defaults are the ``cpu`` preset, sized for ``make demo`` on two idle cores: the
    time goes to what a user looks at (the generators, the labeller that class optimisation
    needs, the class-optimised archives, classifiers good enough to compare) and little to
    the rest (audit sample counts, bootstrap resamples). docs/demo.md has the step times.
    """

    phantom_images: int = Field(default=400, ge=20, description="phantom images per site")
    phantom_resolution_px: int = Field(default=64, ge=32, description="side of the phantom PNGs")
    cache_resolution_px: int = Field(default=64, ge=4, description="ingest --max-resolution")
    pggan_profile: Profile = Field(
        default="cpu",
        description="site_node.pggan profile (network size): at 17.5 kimg the cpu network "
        "(fmap 64, batch 32) made archives whose classifiers reached mean AUC 0.73 / 0.78 "
        "(sites a / b) against 0.72 / 0.72 for the tiny one (fmap 32) at 42 kimg, in "
        "about the same time",
    )
    pggan_resolution_px: int = Field(
        default=32,
        ge=32,
        description="PGGAN (and labeller) target resolution; the labeller needs >= 32",
    )
    pggan_kimg_per_phase: float = Field(
        default=2.5, gt=0, description="kimg per PGGAN phase (7 phases from 4 to 32 px)"
    )
    pggan_batch_size: int | None = Field(
        default=16,
        ge=1,
        description="PGGAN batch at every level (None: the profile's): at 17.5 kimg, "
        "batches of 16 and 8 (2x and 4x the generator steps of the cpu profile's 32) made "
        "site b's archive classifier reach mean AUC 0.869 and 0.865 / 0.876 (two archive "
        "seeds) against 0.842 / 0.851, for 10-20 s more training; site a 0.864 / 0.869 "
        "against 0.877 (docs/demo.md)",
    )
    labeller_epochs: int = Field(default=15, ge=1, description="labeller training epochs per site")
    labeller_small_network: bool = Field(
        default=True, description="a small DenseNet labeller (CPU), not DenseNet-121"
    )
    labeller_lr: float = Field(default=3e-3, gt=0, description="labeller Adam learning rate")
    audit_num_generated: int = Field(
        default=100, ge=10, description="generated images per local audit"
    )
    archive_images_per_site: int = Field(
        default=1500,
        ge=10,
        description="synthetic archive size: the same generators' archives of 300 / 1500 / "
        "4000 images trained classifiers to mean AUC 0.73 / 0.88 / 0.88 at site a and "
        "0.78 / 0.84 / 0.89 at site b; the demo with 2000 took 0.8 min longer and "
        "scored 0.84 / 0.82",
    )
    synthesis: Literal["optimise", "unlabelled"] = Field(
        default="optimise",
        description="optimise: latent class optimisation (Segal et al.), the product's "
        "algorithm; unlabelled: sample G, label afterwards with the labeller (a shortcut)",
    )
    synthesis_max_steps: int = Field(
        default=30, ge=1, description="class optimisation steps per start"
    )
    classifier_epochs: int = Field(
        default=15, ge=1, description="classifier training epochs (synthetic and real-only)"
    )
    classifier_lr: float = Field(
        default=3e-3,
        gt=0,
        description="Adam learning rate of every classifier (real-only and synthetic): at "
        "15 epochs on 280 phantom images 3e-3 gave real-only mean AUC 0.971 / 0.939 "
        "(sites a / b) against 0.842 / 0.848 at 1e-3",
    )
    classifier_small_network: bool = Field(
        default=True, description="a small DenseNet classifier (CPU), not DenseNet-121"
    )
    evaluation_resamples: int = Field(
        default=1000, ge=100, description="bootstrap resamples of the evaluation's AUC CIs"
    )
    federated_timeout_s: float = Field(
        default=600.0, gt=0, description="limit of one federated run"
    )
    accelerator: Literal["cpu", "gpu", "auto"] = Field(
        default="cpu", description="torch device family"
    )
    torch_threads: int = Field(
        default=1,
        ge=0,
        description="OMP/MKL threads of every step's process unless the environment sets "
        "them; 0: torch's default. The federated steps run several processes at once, and "
        "on a shared 2-core VM one thread trained the PGGAN at 60 img/s against 2.2 with two",
    )


PROFILE_SETTINGS: dict[str, ProfileSettings] = {
    "tiny": ProfileSettings(
        pggan_profile="tiny",
        phantom_images=120,
        phantom_resolution_px=32,
        cache_resolution_px=32,
        pggan_kimg_per_phase=0.1,
        pggan_batch_size=None,
        labeller_epochs=2,
        audit_num_generated=40,
        archive_images_per_site=60,
        synthesis_max_steps=10,
        classifier_epochs=1,
        evaluation_resamples=200,
        federated_timeout_s=600.0,
    ),
    "cpu": ProfileSettings(),
    "gpu": ProfileSettings(
        phantom_images=4000,
        phantom_resolution_px=256,
        cache_resolution_px=256,
        pggan_profile="gpu",
        pggan_resolution_px=128,
        pggan_kimg_per_phase=60.0,
        pggan_batch_size=None,
        labeller_epochs=10,
        labeller_small_network=False,
        labeller_lr=1e-3,
        audit_num_generated=2000,
        archive_images_per_site=4000,
        synthesis="optimise",
        synthesis_max_steps=200,
        classifier_epochs=10,
        classifier_lr=1e-3,
        classifier_small_network=False,
        federated_timeout_s=1800.0,
        accelerator="gpu",
        torch_threads=0,
    ),
}


class DemoSite(_Strict):
    """One demo site: its id, its phantom hospital style, or a real NIH-layout folder."""

    site_id: str = Field(pattern=_SITE_ID_PATTERN)
    phantom_style: str = Field(
        default="demo-a",
        description="site_node.phantom style preset (demo-a/b: the demo's three findings)",
    )
    data_dir: Path | None = Field(
        default=None, description="labels.csv + images/; None: phantom data"
    )


def _default_demo_sites() -> list[DemoSite]:
    return [
        DemoSite(site_id="a", phantom_style="demo-a"),
        DemoSite(site_id="b", phantom_style="demo-b"),
    ]


class DemoConfig(_Strict):
    """The one-command demo: output folder, profile, sites, and loopback services."""

    out_dir: Path = Field(default=Path("demo-out"), description="everything the demo writes")
    profile: Profile = Field(default="cpu", description="tiny (tests) | cpu (2 cores) | gpu")
    settings: ProfileSettings | None = Field(default=None, description="None: the profile's preset")
    sites: list[DemoSite] = Field(default_factory=_default_demo_sites, min_length=1)
    host: str = Field(default="127.0.0.1", description="loopback address every service binds")
    flower_tls: bool = Field(
        default=True, description="TLS + SuperNode auth between Flower processes"
    )
    seed: int = Field(default=0, ge=0, description="seed of every random step")

    def resolved_settings(self) -> ProfileSettings:
        """Explicit settings, or the profile's preset."""
        return self.settings or PROFILE_SETTINGS[self.profile]


# --------------------------------------------------------------------------- loading


def load_config(model: type[_Model], path: Path | None = None, **overrides: Any) -> _Model:
    """Read ``path`` (YAML) into ``model``, apply non-None top-level ``overrides``, validate.

    Raises :class:`ConfigError` naming the file, the field and the value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml_mapping(path, "config")
        data = resolve_relative_paths(loaded, Path(path).resolve().parent)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(field_error(error, path or model.__name__, with_value=True)) from error
