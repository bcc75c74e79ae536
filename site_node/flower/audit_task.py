"""The site's handler of ``query.audit``: a pure function from message content to reply content.

    reply = audit_task(message.content, cache, site_id="a", panel_root=work_dir / "audits")

The request (``shared.audit_records``) carries a generator's config and G_ema
weights and the audit settings; the site rebuilds the generator, samples it
with the requested seed and runs the same memorisation audit as
``radshare-site audit`` against its own cache
(``site_node.audit.memorisation``). The generator may be another site's: that
is the cross-site leakage check. The reply holds the summary's aggregates only
(:func:`shared.audit_records.summary_to_records`); the closest-pairs panel is
written under ``panel_root`` at the site, for its radiologist, and never sent.
The ClientApp registers this as ``@app.query("audit")``.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from flwr.app import RecordDict

from shared.audit_records import (
    GENERATOR_RECORD,
    AuditRequest,
    request_from_records,
    summary_to_records,
)
from shared.errors import CacheError, FederationError
from shared.metrics.nn_search import SearchOptions
from shared.networks.generator import Generator
from site_node.audit.memorisation import AuditOutcome, Embedder, run_memorisation_audit
from site_node.data.cache import SiteCache
from site_node.privacy.membership import with_membership

__all__ = ["audit_task", "rebuild_generator"]

log = logging.getLogger("radshare.site.flower")


def rebuild_generator(content: RecordDict, request: AuditRequest) -> Generator:
    """G_ema from the request's config and ArrayRecord (exact keys and shapes, eval mode)."""
    G = Generator(request.generator_config)
    try:
        G.load_state_dict(
            content.array_records[GENERATOR_RECORD].to_torch_state_dict(), strict=True
        )
    except RuntimeError as error:
        raise FederationError(f"query.audit: weights do not fit the config: {error}") from error
    return G.eval().requires_grad_(False)


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
    content: RecordDict,
    cache: SiteCache,
    *,
    site_id: str,
    embed: Embedder | None = None,
    embed_name: str | None = None,
    panel_root: Path | None = None,
    device: str = "cpu",
) -> RecordDict:
    """Audit the requested generator against this site's cache; the reply's records.

    Raises:
        FederationError: a malformed request, weights that do not fit, or a cache
            without the generator's resolution (the hub gets the message, not a trace).
    """
    request = request_from_records(content)
    G = rebuild_generator(content, request)
    log.info("site %s: audit of generator %s requested", site_id, request.generator_id[:12])
    sample = _sampler(G, device)
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
    del G, sample
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return summary_to_records(summary, site_id)
