"""The hub's configuration: one typed model, read from YAML, overridden by CLI flags.

Embedded default (no file): SQLite + blobs under ``hub-data/`` on 127.0.0.1:50051,
TLS material from ``hub-data/tls`` (``radshare-hub certs --out hub-data/tls``),
site keys from ``hub-data/site_keys``. Example file::

    root: /srv/radshare-hub
    host: 0.0.0.0
    port: 50051
    tls_dir: /etc/radshare/tls          # ca.crt, server.crt, server.key
    site_keys_dir: /etc/radshare/site_keys
    limits:
      max_upload_bytes: 4294967296
      max_concurrent_uploads: 8

Relative paths in a file are relative to the file's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hub.registry.handlers import HubLimits
from shared.errors import ConfigError

__all__ = ["HubConfig", "LimitsConfig", "load_hub_config"]


class LimitsConfig(BaseModel):
    """Upload limits (bytes per bundle, concurrent streams) and transfer chunk size."""

    model_config = ConfigDict(extra="forbid")

    max_upload_bytes: int = Field(default=4 * 2**30, ge=1)
    max_concurrent_uploads: int = Field(default=8, ge=1)
    chunk_bytes: int = Field(default=2**20, ge=4096, le=16 * 2**20)
    upload_ttl_s: float = Field(
        default=7 * 86400.0, gt=0, description="staged uploads older than this are purged"
    )

    def to_limits(self) -> HubLimits:
        """The handlers' limits record."""
        return HubLimits(**self.model_dump())


class HubConfig(BaseModel):
    """Where the hub listens, stores, and finds its TLS material and site keys."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Path("hub-data")
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535, description="0: any free port")
    tls_dir: Path | None = Field(
        None, description="ca.crt, server.crt, server.key (default <root>/tls)"
    )
    site_keys_dir: Path | None = Field(
        None, description="<site>.pub files (default <root>/site_keys)"
    )
    max_workers: int = Field(16, ge=2)
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
    def address(self) -> str:
        """``host:port`` to bind."""
        return f"{self.host}:{self.port}"


def _resolve(data: dict[str, Any], base: Path) -> dict[str, Any]:
    for key in ("root", "tls_dir", "site_keys_dir"):
        if data.get(key) is not None and not Path(data[key]).is_absolute():
            data[key] = str(base / data[key])
    return data


def load_hub_config(path: Path | None = None, **overrides: Any) -> HubConfig:
    """Read ``path`` (YAML) if given, apply non-None ``overrides``, validate.

    Raises ConfigError naming the file, the field and the value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as error:
            raise ConfigError(f"{path}: cannot read hub config: {error}") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
        data = _resolve(loaded, Path(path).parent)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return HubConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ConfigError(
            f"{path or 'hub config'}: field {field!r}: {first['msg']} "
            f"(value {first.get('input')!r})"
        ) from error
