"""Where the demo puts everything, in one place (``<out>/...``).

::

    <out>/config.json  state.json         resolved settings; which step is done
    <out>/logs/<component>.log            structured lines: demo, hub, superlink, site-a, ...
    <out>/consortium/tls/                 CA, hub, site and operator certificates
    <out>/services/                       services.json, FLWR_HOME of every Flower process
    <out>/hub/registry/                   the hub's registry root (SQLite, blobs, site keys)
    <out>/hub/pulled/<site>/              generator (and labeller) bundles pulled from the hub
    <out>/hub/archives/<site>/            synthetic archives (NIH layout)
    <out>/hub/pool/  hub/classifiers/     pooled archive; classifier runs
    <out>/hub/federated/                  federated audit and evaluation results (aggregates)
    <out>/sites/<site>/                   everything that never leaves a hospital:
        data/ cache/ keys/ tls/ runs/pggan/ (audits/ inside) runs/labeller/
    <out>/report/index.html               the report
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DemoLayout", "SiteLayout"]


@dataclass(frozen=True)
class SiteLayout:
    """One site's private folders (inside the hospital in a real deployment)."""

    root: Path
    site_id: str

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def pggan_run(self) -> Path:
        return self.root / "runs" / "pggan"

    @property
    def labeller_run(self) -> Path:
        return self.root / "runs" / "labeller"

    @property
    def signing_key(self) -> Path:
        return self.keys / f"site-{self.site_id}.ed25519"


@dataclass(frozen=True)
class DemoLayout:
    """Every folder and file of one demo output folder."""

    out: Path

    @property
    def config(self) -> Path:
        return self.out / "config.json"

    @property
    def state(self) -> Path:
        return self.out / "state.json"

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def tls(self) -> Path:
        return self.out / "consortium" / "tls"

    @property
    def services(self) -> Path:
        return self.out / "services"

    @property
    def hub(self) -> Path:
        return self.out / "hub"

    @property
    def registry(self) -> Path:
        return self.hub / "registry"

    @property
    def hub_signing_key(self) -> Path:
        """The hub's Ed25519 key under its root: it signs classifiers, sites verify as ``hub``."""
        return self.registry / "hub_signing.key"

    @property
    def federated(self) -> Path:
        return self.hub / "federated"

    @property
    def report(self) -> Path:
        return self.out / "report"

    def site(self, site_id: str) -> SiteLayout:
        """The private folders of ``site_id``."""
        return SiteLayout(self.out / "sites" / site_id, site_id)

    def pulled(self, site_id: str, kind: str = "generator") -> Path:
        """Where the hub keeps ``site_id``'s pulled bundle of ``kind``."""
        return self.hub / "pulled" / f"{site_id}-{kind}"

    def archive(self, site_id: str) -> Path:
        """The synthetic archive made from ``site_id``'s generator."""
        return self.hub / "archives" / site_id
