"""Registered artifacts only: the site pulls what the hub names, verifies it, then uses it.

    access = HubAccess.from_node_config("a", context.node_config, work_dir)
    G = registered_generator(access, request.generator_id, request.weights_sha256)

The hub names an artifact by registry id and the sha256 of its weights file; it
never sends weights. The site pulls the bundle over its own mTLS hub client
(identity ``site:<id>``) into ``<work-dir>/artifacts/<id>/`` (a cache: a second
query does not pull again), verifies the manifest's signature against the
consortium keyring file for the manifest's site id (never ``signer.pub``,
never a key the hub sends), every file's sha256 and the tensors
(``shared.artifacts.bundle.read_verified``), checks that the id and the weights
file's sha256 are the ones asked for, and only then rebuilds the network from
the verified bytes. Anything else is a :class:`~shared.errors.QueryRefusedError`
naming the rule: ``registered-artifacts-only``, ``signature-verifies-against-keyring``,
``weights-sha256-matches``.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load as load_safetensors

from shared.artifacts.bundle import SignedManifest, read_verified
from shared.artifacts.classifier import CARD_FILE, ClassifierCard
from shared.artifacts.classifier import WEIGHTS_FILE as CLASSIFIER_FILE
from shared.artifacts.generator import GENERATOR_FILE
from shared.artifacts.keyring import ConsortiumKeyring, SignerKeys
from shared.artifacts.records import ArtifactKind
from shared.errors import (
    ArtifactError,
    ConfigError,
    NotFoundError,
    QueryRefusedError,
    SignatureError,
)
from shared.networks.generator import Generator
from shared.networks.labeller import Labeller

__all__ = [
    "HubAccess",
    "consortium_keys",
    "fetch_verified",
    "registered_classifier",
    "registered_generator",
]

log = logging.getLogger("radshare.site.flower")


@dataclass(frozen=True)
class HubAccess:
    """How this site reaches the hub's registry and which keys it trusts."""

    site_id: str
    hub: str
    tls_dir: Path
    keyring: Path
    cache_dir: Path

    @classmethod
    def from_node_config(
        cls, site_id: str, node_config: Mapping[str, object], work_dir: Path
    ) -> HubAccess:
        """From node-config keys ``hub``, ``tls-dir``, ``keyring``; ConfigError if one is absent."""
        missing = [k for k in ("hub", "tls-dir", "keyring") if not node_config.get(k)]
        if missing:
            raise ConfigError(
                f"site {site_id}: node config has no {', '.join(missing)}: this site answers "
                "only artifacts it can pull from the hub and verify against the keyring"
            )
        return cls(
            site_id=site_id,
            hub=str(node_config["hub"]),
            tls_dir=Path(str(node_config["tls-dir"])),
            keyring=Path(str(node_config["keyring"])),
            cache_dir=Path(work_dir) / "artifacts",
        )


def consortium_keys(path: Path) -> SignerKeys:
    """The consortium keyring file (site id → Ed25519 key) the operator distributed."""
    return ConsortiumKeyring.load(path)


def _pull(
    access: HubAccess, artifact_id: str, kind: ArtifactKind, folder: Path, keys: SignerKeys
) -> None:
    """Pull into a private temporary folder, then rename it into the cache."""
    from shared.hub_client import ClientTLS, HubClient

    tmp = folder.with_name(f".pull-{folder.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tls = ClientTLS.from_dir(access.tls_dir, f"site:{access.site_id}")
    try:
        with HubClient(access.hub, tls, retries=2, timeout_s=600.0) as client:
            client.pull(artifact_id, tmp, kind, trusted=keys)
    except NotFoundError as error:
        raise QueryRefusedError(
            "registered-artifacts-only",
            f"{kind.value} {artifact_id[:16]} is not registered at the hub ({error})",
        ) from error
    except SignatureError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        raise QueryRefusedError("signature-verifies-against-keyring", str(error)) from error
    try:
        os.rename(tmp, folder)
    except OSError:  # another ClientApp process cached it first
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_verified(
    access: HubAccess,
    artifact_id: str,
    kind: ArtifactKind,
    weights_file: str,
    weights_sha256: str,
) -> tuple[SignedManifest, dict[str, bytes]]:
    """The bundle ``artifact_id`` (pulled once, cached), verified; its files' verified bytes.

    Raises:
        QueryRefusedError: not registered, signature not verifying against the keyring
            (or a bundle that fails verification), another kind, or another sha256.
        ConfigError / RegistryError: the keyring file or the hub cannot be read or reached.
    """
    folder = access.cache_dir / artifact_id
    keys = consortium_keys(access.keyring)
    access.cache_dir.mkdir(parents=True, exist_ok=True)
    if not folder.is_dir():
        _pull(access, artifact_id, kind, folder, keys)
    try:
        signed, data = read_verified(folder, keys)
    except SignatureError as error:
        raise QueryRefusedError("signature-verifies-against-keyring", str(error)) from error
    except ArtifactError as error:
        raise QueryRefusedError("bundle-verifies", str(error)) from error
    if signed.artifact_id != artifact_id or signed.model.kind is not kind:
        raise QueryRefusedError(
            "registered-artifacts-only",
            f"asked for {kind.value} {artifact_id[:16]}, the bundle is "
            f"{signed.model.kind.value} {signed.artifact_id[:16]}",
        )
    entry = signed.model.files.get(weights_file)
    if entry is None or entry.sha256 != weights_sha256:
        got = entry.sha256[:16] if entry is not None else "no such file"
        raise QueryRefusedError(
            "weights-sha256-matches",
            f"{weights_file} of {artifact_id[:16]} has sha256 {got}…, the request names "
            f"{weights_sha256[:16]}…",
        )
    log.info("site %s: %s %s verified", access.site_id, kind.value, artifact_id[:12])
    return signed, data


def registered_generator(access: HubAccess, artifact_id: str, weights_sha256: str) -> Generator:
    """G_ema of a registered, verified generator bundle (eval mode, no gradients)."""
    signed, data = fetch_verified(
        access, artifact_id, ArtifactKind.GENERATOR, GENERATOR_FILE, weights_sha256
    )
    G = Generator(signed.model.generator_config)  # type: ignore[attr-defined]
    G.load_state_dict(load_safetensors(data[GENERATOR_FILE]), strict=True)
    return G.eval().requires_grad_(False)


def registered_classifier(
    access: HubAccess, artifact_id: str, weights_sha256: str
) -> tuple[Labeller, dict[str, float | None]]:
    """A registered, verified classifier (eval mode) and its per-class thresholds (logits)."""
    signed, data = fetch_verified(
        access, artifact_id, ArtifactKind.CLASSIFIER, CLASSIFIER_FILE, weights_sha256
    )
    net = Labeller(signed.model.labeller_config)  # type: ignore[attr-defined]
    net.load_state_dict(load_safetensors(data[CLASSIFIER_FILE]), strict=True)
    card = ClassifierCard.model_validate_json(data[CARD_FILE])
    return net.eval(), {c.name: c.threshold_logit for c in card.classes}
