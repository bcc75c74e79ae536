"""The hub's side of ``query.audit``: send a generator to chosen sites, collect their aggregates.

    reports = audit_on_sites(grid, audit_content(G, generator_id, settings), generator_id)

:func:`audit_content` builds the message (the request and G_ema's weights; the hub
has no real image to send); :func:`audit_on_sites` sends it to every SuperNode (or
the given node ids), parses each reply into an
:class:`~shared.artifacts.audit.AuditReport` per site, and collects sites that
failed or did not answer instead of aborting. :func:`audit_main` is the
ServerApp's ``audit`` task: it reads its run config, writes one report JSON per
site, and a readable report (``hub.audit.report``).

Run-config keys: ``generator-bundle`` (a pulled, verified bundle folder),
``generator-public-key`` (PEM; default the bundle's ``signer.pub``), ``sites``
(``all`` or ``a,b``), ``num-samples``, ``seed``, ``near-copy-ssim``,
``max-near-copies``, ``alpha``, ``ssim-window``, ``num-permutations``,
``timeout-s``, ``out-dir``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch  # ArrayRecord's torch conversions need torch imported first
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from shared.artifacts.audit import AuditReport, AuditSettings, audit_report
from shared.audit_records import (
    MESSAGE_TYPE,
    SKIPPED_CODE,
    AuditRequest,
    request_to_records,
    summary_from_records,
)
from shared.errors import ConfigError, FederationError

__all__ = [
    "SiteAudits",
    "audit_content",
    "audit_main",
    "audit_on_sites",
    "settings_from_run_config",
]

log = logging.getLogger("radshare.hub.flower")


@dataclass
class SiteAudits:
    """Reports by site id, and failures by node id (error text)."""

    reports: dict[str, AuditReport] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)


def audit_content(
    G: torch.nn.Module,
    generator_id: str,
    settings: AuditSettings,
    sites: Sequence[str] | None = None,
) -> RecordDict:
    """Message content: the request (config, settings, chosen sites) and G_ema's weights."""
    request = AuditRequest(
        generator_id=generator_id,
        generator_config=G.cfg,  # type: ignore[arg-type]
        settings=settings,
        sites=list(sites) if sites is not None else None,
    )
    state = {name: t.detach().cpu() for name, t in G.state_dict().items()}
    return request_to_records(request, ArrayRecord(state))


def audit_on_sites(
    grid: Grid,
    content: RecordDict,
    generator_id: str,
    *,
    node_ids: Sequence[int] | None = None,
    timeout_s: float = 3600.0,
) -> SiteAudits:
    """Send ``content`` as ``query.audit`` to each node; one report per answering site."""
    nodes = list(node_ids if node_ids is not None else grid.get_node_ids())
    if not nodes:
        raise FederationError("no site is connected to the SuperLink")
    messages = [
        Message(content=content, dst_node_id=node, message_type=MESSAGE_TYPE) for node in nodes
    ]
    results, answered = SiteAudits(), set()
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        node = reply.metadata.src_node_id
        answered.add(node)
        if reply.has_error() and reply.error.code == SKIPPED_CODE:
            results.skipped.append(node)  # a site that was not chosen
            continue
        if reply.has_error():
            results.failures[node] = f"code {reply.error.code}: {reply.error.reason}"
            log.warning("query.audit: node %d failed: %s", node, results.failures[node])
            continue
        try:
            site_id, summary = summary_from_records(reply.content)
            results.reports[site_id] = audit_report(generator_id, site_id, summary)
        except (FederationError, ValueError) as error:
            results.failures[node] = f"malformed reply: {error}"
    for node in set(nodes) - answered:
        results.failures[node] = f"no reply within {timeout_s:.0f} s"
    log.info(
        "query.audit: %d sites answered, %d failed", len(results.reports), len(results.failures)
    )
    return results


def _number(run_config: Mapping[str, object], key: str, default: float) -> float:
    value = run_config.get(key, default)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"run_config {key!r}: {value!r} is not a number") from None


def settings_from_run_config(run_config: Mapping[str, object]) -> AuditSettings:
    """Audit settings from the run config (the ``AuditSettings`` defaults for absent keys)."""
    defaults = AuditSettings()
    return AuditSettings(
        num_samples=int(_number(run_config, "num-samples", defaults.num_samples)),
        sample_seed=int(_number(run_config, "seed", defaults.sample_seed)),
        near_copy_ssim=_number(run_config, "near-copy-ssim", defaults.near_copy_ssim),
        max_near_copies=int(_number(run_config, "max-near-copies", defaults.max_near_copies)),
        alpha=_number(run_config, "alpha", defaults.alpha),
        ssim_window=str(run_config.get("ssim-window", defaults.ssim_window)),  # type: ignore[arg-type]
        num_permutations=int(_number(run_config, "num-permutations", defaults.num_permutations)),
    )


def _chosen_sites(run_config: Mapping[str, object]) -> list[str] | None:
    text = str(run_config.get("sites", "all")).strip()
    if text in ("", "all"):
        return None
    return [site.strip() for site in text.split(",") if site.strip()]


def audit_main(grid: Grid, run_config: Mapping[str, object]) -> SiteAudits:
    """The ServerApp's ``audit`` task: audit one published generator at the chosen sites."""
    from hub.audit.report import write_audit_reports
    from shared.artifacts.bundle import load_generator, read_bundle

    bundle = run_config.get("generator-bundle")
    if not bundle:
        raise ConfigError("run_config 'generator-bundle' is missing (a pulled bundle folder)")
    key: Any = run_config.get("generator-public-key") or None
    generator_id = read_bundle(Path(str(bundle)), Path(str(key)) if key else None).artifact_id
    G = load_generator(Path(str(bundle)), Path(str(key)) if key else None)
    content = audit_content(G, generator_id, settings_from_run_config(run_config),
                            _chosen_sites(run_config))  # fmt: skip
    results = audit_on_sites(
        grid, content, generator_id, timeout_s=_number(run_config, "timeout-s", 3600.0)
    )
    out = Path(str(run_config.get("out-dir", "audit")))
    write_audit_reports(out, generator_id, results.reports, results.failures)
    return results
