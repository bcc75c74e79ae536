"""The site's handler of ``query.audit``: from a verified generator to a signed reply.

    summary = audit_task(G, request, cache, site_id="a", panel_root=work_dir / "audits")
    reply = signed_reply(summary, request, site_id="a", private_key=site_key)

The ClientApp (``site_node.flower.client_app``) checks the query policy, pulls and
verifies the registered generator the request names (``site_node.flower.registered``)
and calls :func:`audit_task`: it samples G with the requested seed and runs the same
memorisation audit as ``radshare-site audit`` against this site's cache
(``site_node.audit.memorisation``). The generator may be another site's: that is
the cross-site leakage check. :func:`signed_reply` wraps the summary in an
:class:`~shared.artifacts.audit.AuditReport` (generator id, this site's id, the
audited weights' sha256), signs it with the site key and returns the reply
records (``shared.audit_records``). The closest-pairs panel is written under
``panel_root`` at the site, for its radiologist, and never sent.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import RecordDict

from shared.artifacts.audit import AuditSummary, audit_report, sign_audit_report
from shared.audit_records import AuditRequest, report_to_records
from shared.errors import CacheError, FederationError
from shared.metrics.nn_search import SearchOptions
from shared.networks.generator import Generator
from site_node.audit.memorisation import AuditOutcome, Embedder, run_memorisation_audit
from site_node.data.cache import SiteCache
from site_node.privacy.membership import with_membership

__all__ = ["audit_task", "signed_reply"]

log = logging.getLogger("radshare.site.flower")


def _sampler(G: Generator, device: str):  # type: ignore[no-untyped-def]
    from site_node.pggan.sampling import generate_uint8

    def sample(num_images: int, seed: int) -> np.ndarray:
        return generate_uint8(G, num_images, seed=seed, device=device)

    return sample


def _panel_dir(panel_root: Path | None, generator_id: str) -> Path | None:
    if panel_root is None:
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return Path(panel_root) / f"{re.sub(r'[^A-Za-z0-9_-]', '_', generator_id)[:40]}-{stamp}"


def audit_task(
    G: Generator,
    request: AuditRequest,
    cache: SiteCache,
    *,
    site_id: str,
    embed: Embedder | None = None,
    embed_name: str | None = None,
    panel_root: Path | None = None,
    device: str = "cpu",
) -> AuditSummary:
    """Audit the verified generator ``G`` against this site's cache; the summary (aggregates).

    Raises:
        FederationError: a cache without the generator's resolution (the hub gets the
            message, not a trace).
    """
    log.info("site %s: audit of generator %s", site_id, request.generator_id[:12])
    sample = _sampler(G.to(device), device)
    try:
        outcome: AuditOutcome = run_memorisation_audit(
            sample,
            cache,
            request.settings,
            embed=embed,
            embed_name=embed_name,
            panel_dir=_panel_dir(panel_root, request.generator_id),
            options=SearchOptions(device=device),
        )
        # Membership-inference attacks, aggregates only (site_node.privacy.membership).
        summary = with_membership(outcome.summary, sample, cache)
    except CacheError as error:
        raise FederationError(f"site {site_id}: cannot audit here: {error}") from error
    del sample
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return summary


def signed_reply(
    summary: AuditSummary,
    request: AuditRequest,
    *,
    site_id: str,
    private_key: Ed25519PrivateKey,
) -> RecordDict:
    """The reply: this site's AuditReport of the request's generator, signed with its key."""
    report = audit_report(
        request.generator_id, site_id, summary, weights_sha256=request.weights_sha256
    )
    return report_to_records(sign_audit_report(report, private_key))
