"""The hub's configuration: one typed model, read from YAML, overridden by CLI flags.

Embedded default (no file): SQLite + blobs under ``hub-data/`` on 127.0.0.1:50051,
TLS material from ``hub-data/tls`` (``radshare-hub certs --out hub-data/tls``),
site keys from ``hub-data/site_keys``. Example file::

    root: /srv/radshare-hub
    host: 0.0.0.0
    port: 50051
    tls_dir: /etc/radshare/tls          # ca.crt, server.crt, server.key
    site_keys_dir: /etc/radshare/site_keys
    crl_file: /etc/radshare/tls/crl.pem  # revoked certificates (default <tls_dir>/crl.pem)
    limits:
      max_upload_bytes: 4294967296
      max_concurrent_uploads: 8
      max_uploads_per_site: 4           # default: half of max_concurrent_uploads
      upload_stall_timeout_s: 60        # a silent publish stream is closed (resumable)
      min_upload_bytes_per_s: 8192      # ... and, after that long, one slower than this
      max_staged_bytes_per_site: 8589934592  # default: 2 * max_upload_bytes

Relative paths in a file are relative to the file's folder. A consortium file
(``deployment/configs/consortium.yaml``: ``hub:`` and ``superlink:``) is read too: its
``hub`` part is this model. ``radshare-hub --config FILE VERB`` (or
``RADSHARE_HUB_CONFIG=FILE``) gives every verb its defaults from the file
(:func:`hub_option_defaults`): the registry root, the TLS folder, the address to connect to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.registry.handlers import HubLimits
from shared.errors import ConfigError
from shared.validation import field_error, read_yaml_mapping

__all__ = [
    "HubConfig",
    "LimitsConfig",
    "client_address",
    "hub_option_defaults",
    "load_hub_config",
]


class LimitsConfig(BaseModel):
    """Upload limits (bytes per bundle, concurrent streams) and transfer chunk size."""

    model_config = ConfigDict(extra="forbid")

    max_upload_bytes: int = Field(default=4 * 2**30, ge=1)
    max_concurrent_uploads: int = Field(default=8, ge=1)
    chunk_bytes: int = Field(default=2**20, ge=4096, le=16 * 2**20)
    upload_ttl_s: float = Field(
        default=7 * 86400.0, gt=0, description="staged uploads older than this are purged"
    )
    max_uploads_per_site: int | None = Field(
        default=None, ge=1, description="streams one site may hold; default half the slots"
    )
    upload_stall_timeout_s: float = Field(
        default=60.0, gt=0, description="a publish stream silent this long is closed (resumable)"
    )
    min_upload_bytes_per_s: float = Field(
        default=8192.0, ge=0, description="after the stall timeout, a slower stream is closed"
    )
    max_staged_bytes_per_site: int | None = Field(
        default=None, ge=1, description="bytes a site's unfinished uploads may reserve"
    )

    def to_limits(self) -> HubLimits:
        """The handlers' limits record."""
        return HubLimits(**self.model_dump())


class HubConfig(BaseModel):
    """Where the hub listens, stores, and finds its TLS material and site keys."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Path("hub-data")
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535, description="0: any free port")
    tls_dir: Path | None = Field(
        default=None, description="ca.crt, server.crt, server.key (default <root>/tls)"
    )
    site_keys_dir: Path | None = Field(
        default=None, description="<site>.pub files (default <root>/site_keys)"
    )
    crl_file: Path | None = Field(
        default=None, description="CRL signed by the consortium CA (default <tls_dir>/crl.pem)"
    )
    max_workers: int = Field(default=16, ge=2)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @property
    def tls_folder(self) -> Path:
        """The TLS folder, defaulted."""
        return self.tls_dir or self.root / "tls"

    @property
    def site_keys_folder(self) -> Path:
        """The site-keys folder, defaulted."""
        return self.site_keys_dir or self.root / "site_keys"

    @property
    def crl_path(self) -> Path:
        """The certificate revocation list, defaulted (absent file: nothing revoked)."""
        return self.crl_file or self.tls_folder / "crl.pem"

    @property
    def address(self) -> str:
        """``host:port`` to bind."""
        return f"{self.host}:{self.port}"


def _resolve(data: dict[str, Any], base: Path) -> dict[str, Any]:
    for key in ("root", "tls_dir", "site_keys_dir", "crl_file"):
        if data.get(key) is not None and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])
    return data


def _hub_section(loaded: dict[str, Any], path: Path) -> dict[str, Any]:
    """The hub's part of a file: the whole file, or ``hub:`` of a consortium file.

    A consortium file (``deployment/configs/consortium.yaml``) has the top-level keys
    ``hub`` and ``superlink``; the SuperLink's part is validated by
    ``deployment.config.ConsortiumConfig`` and ignored here.
    """
    if "hub" not in loaded:
        return loaded
    extra = sorted(set(loaded) - {"hub", "superlink"})
    if extra:
        raise ConfigError(f"{path}: a consortium file has only 'hub' and 'superlink'; got {extra}")
    section = loaded["hub"] or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: field 'hub': expected a mapping, got {section!r}")
    return dict(section)


def client_address(cfg: HubConfig) -> str:
    """``host:port`` a command on the hub machine connects to (a wildcard bind → 127.0.0.1)."""
    host = "127.0.0.1" if cfg.host in ("0.0.0.0", "", "::", "[::]") else cfg.host
    return f"{host}:{cfg.port}"


def hub_option_defaults(
    cfg: HubConfig, path: Path
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(option name → default for every verb, verb → {option → default}) from ``cfg``.

    Every verb with ``--config`` gets the file itself; ``--root``/``--hub-root`` the
    registry root; ``--hub`` and ``--tls-dir`` the address and TLS folder to connect with.
    """
    by_option: dict[str, Any] = {
        "config": path,
        "root": cfg.root,
        "hub_root": cfg.root,
        "hub": client_address(cfg),
        "tls_dir": cfg.tls_folder,
        "hub_key": cfg.root / "hub_signing.key",
        "ca_dir": cfg.tls_folder,  # certs issue / revoke, sites (ca.key may be elsewhere)
        "pull_dir": cfg.root / "pulled",
    }
    by_verb: dict[str, dict[str, Any]] = {
        "certs": {"out": cfg.tls_folder},
        "serve": {"root": None, "tls_dir": None},  # serve reads --config itself
    }
    return by_option, by_verb


def load_hub_config(path: Path | None = None, **overrides: Any) -> HubConfig:
    """Read ``path`` (YAML) if given, apply non-None ``overrides``, validate.

    Raises ConfigError naming the file, the field and the value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml_mapping(path, "hub config")
        data = _resolve(_hub_section(loaded, Path(path)), Path(path).parent)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return HubConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(field_error(error, path or "hub config", with_value=True)) from error
