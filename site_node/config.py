"""The site node's one config file (``/etc/radshare/site.yaml``): a typed model and its loader.

``radshare-site --config FILE VERB`` (or ``RADSHARE_SITE_CONFIG=FILE``) reads it; every
verb then defaults its paths and identity from it (:func:`site_option_defaults`), and
``radshare-site config`` prints it resolved. Unknown keys are errors; relative paths are
relative to the file's folder. Example: ``deployment/configs/site.yaml``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import ConfigError
from shared.validation import field_error, read_yaml_mapping

__all__ = [
    "PROFILE_RESOLUTION_PX",
    "SiteConfig",
    "SiteDataConfig",
    "SiteHubConfig",
    "SiteSuperLinkConfig",
    "load_site_config",
    "site_option_defaults",
]

Profile = Literal["tiny", "cpu", "gpu"]
SITE_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,31}$"
# resolution_px of each site_node.pggan.options.PROFILES preset (a test keeps them equal).
PROFILE_RESOLUTION_PX: dict[str, int] = {"tiny": 32, "cpu": 64, "gpu": 256}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SiteDataConfig(_Strict):
    """Where the site's radiographs and labels live (read only; never leave the site)."""

    csv: Path = Field(
        default=Path("/data/cxr/labels.csv"), description="label CSV (NIH/CheXpert/plain)"
    )
    images: Path = Field(
        default=Path("/data/cxr/images"), description="folder the CSV's paths are under"
    )
    layout: Literal["nih", "chexpert", "plain"] | None = Field(
        default=None, description="CSV layout; default: detected from the header"
    )


class SiteHubConfig(_Strict):
    """How the site reaches the hub's gRPC registry (mTLS)."""

    address: str = Field(default="hub.consortium.example:50051", description="host:port of the hub")
    tls_dir: Path = Field(
        default=Path("/etc/radshare/tls"),
        description="ca.crt + site-<id>.crt/.key from the operator",
    )


class SiteSuperLinkConfig(_Strict):
    """How the site's Flower SuperNode reaches the consortium's SuperLink."""

    address: str = Field(
        default="superlink.consortium.example:9092", description="host:port (HTTPS)"
    )
    root_certificates: Path | None = Field(
        default=Path("/etc/radshare/tls/ca.crt"), description="CA that signed the SuperLink's cert"
    )
    auth_private_key: Path | None = Field(
        default=Path("/etc/radshare/keys/supernode.key"),
        description="ECDSA P-384 OpenSSH key; its .pub is registered at the SuperLink",
    )
    insecure: bool = Field(
        default=False, description="plain HTTP: loopback tests only, never in a site"
    )
    supernode_port: int = Field(
        default=9094, ge=1, le=65535, description="SuperNode's local runtime API"
    )


class SiteConfig(_Strict):
    """One hospital's site node: identity, data, work folder, hub and SuperLink."""

    site_id: str = Field(
        default="a", pattern=SITE_ID_PATTERN, description="consortium-wide site id"
    )
    data: SiteDataConfig = Field(default_factory=lambda: SiteDataConfig())
    work_dir: Path = Field(
        default=Path("/var/lib/radshare-site"),
        description="cache, training runs, audits; stays inside the hospital",
    )
    signing_key: Path = Field(
        default=Path("/etc/radshare/keys/site.ed25519"),
        description="Ed25519 key from radshare-site keygen",
    )
    hub: SiteHubConfig = Field(default_factory=lambda: SiteHubConfig())
    superlink: SiteSuperLinkConfig = Field(default_factory=lambda: SiteSuperLinkConfig())
    train_profile: Profile = Field(
        default="gpu", description="PGGAN preset (site_node.pggan.PROFILES)"
    )
    max_resolution_px: int = Field(
        default=256, ge=4, description="largest cached side, a power of two"
    )
    resolution_px: int | None = Field(
        default=None,
        ge=4,
        description="generator and labeller side; None: the profile's (32/64/256)",
    )

    @field_validator("max_resolution_px", "resolution_px")
    @classmethod
    def _power_of_two(cls, value: int | None) -> int | None:
        if value is not None and value & (value - 1):
            raise ValueError(f"must be a power of two, got {value}")
        return value

    @property
    def train_resolution_px(self) -> int:
        """The generator's (and so the labeller's) side in px."""
        return self.resolution_px or PROFILE_RESOLUTION_PX[self.train_profile]

    @property
    def cache_dir(self) -> Path:
        """``radshare-site ingest`` output."""
        return self.work_dir / "cache"

    @property
    def pggan_run(self) -> Path:
        """The PGGAN training run."""
        return self.work_dir / "runs" / "pggan"

    @property
    def labeller_run(self) -> Path:
        """The labeller training run (its ``export/`` is published)."""
        return self.work_dir / "runs" / "labeller"


_PATH_KEYS = ("dir", "path", "csv", "images", "key", "root", "database", "certificates")


def resolve_relative_paths(value: Any, base: Path) -> Any:
    """Relative path strings under keys ending in dir/path/csv/images/key/... → absolute."""
    if isinstance(value, dict):
        return {k: _resolve_one(k, v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_relative_paths(v, base) for v in value]
    return value


def _resolve_one(key: str, value: Any, base: Path) -> Any:
    if isinstance(value, str) and key.endswith(_PATH_KEYS) and not Path(value).is_absolute():
        return str(base / value)
    return resolve_relative_paths(value, base)


def load_site_config(path: Path) -> SiteConfig:
    """Read and validate a site config; ConfigError naming the file, field and value."""
    loaded = read_yaml_mapping(path, "site config")
    try:
        return SiteConfig.model_validate(
            resolve_relative_paths(loaded, Path(path).resolve().parent)
        )
    except ValidationError as error:
        raise ConfigError(field_error(error, path, with_value=True)) from error


def site_option_defaults(cfg: SiteConfig) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(option name → default for every verb, verb → {option → default}) from ``cfg``."""
    by_option: dict[str, Any] = {
        "site_id": cfg.site_id,  # ingest --site-id
        "site": cfg.site_id,  # keygen, publish, publish-labeller --site
        "key": cfg.signing_key,
        "hub": cfg.hub.address,
        "tls_dir": cfg.hub.tls_dir,
        "cache": cfg.cache_dir,
        "work_dir": cfg.work_dir,  # query-log
        "csv": cfg.data.csv,
        "images": cfg.data.images,
        "layout": cfg.data.layout,
        "max_resolution": cfg.max_resolution_px,
    }
    by_verb: dict[str, dict[str, Any]] = {
        "ingest": {"out": cfg.cache_dir},
        "keygen": {"out": cfg.signing_key.parent},
        "train": {
            "out": cfg.pggan_run,
            "profile": cfg.train_profile,
            "resolution": cfg.train_resolution_px,
        },
        "train-labeller": {"out": cfg.labeller_run, "resolution": cfg.train_resolution_px},
        "publish": {"run": cfg.pggan_run},
        "publish-labeller": {"export": cfg.labeller_run / "export"},
        "sample": {"run": cfg.pggan_run},
    }
    return by_option, by_verb
