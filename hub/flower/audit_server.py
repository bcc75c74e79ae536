"""The hub's side of ``query.audit``: name a registered generator to chosen sites, collect reports.

    content = audit_content(generator_id, weights_sha256, settings)
    results = audit_on_sites(grid, content, generator_id)

:func:`audit_content` builds the message: the generator's registry id and the
sha256 of its weights file, the settings and the chosen sites, and no weights
(each site pulls and verifies the registered bundle itself);
:func:`audit_on_sites` sends it to every SuperNode (or the given node ids) and
keeps each site's signed :class:`~shared.artifacts.audit.AuditReport` bytes
verbatim (``SiteAudits.signed``) beside the parsed report; it collects sites that
refused (their policy's rule, value and limit), failed or did not answer instead
of aborting. Given a keyring it also checks each report's signature against the
auditing site's key and counts a report that does not verify as a failure.
:func:`audit_main` is the ServerApp's ``audit`` task: it reads its run config,
writes each site's signed report and a readable report (``hub.audit.report``).

Run-config keys of the ``audit`` task:

* the generator: ``generator-id`` and ``weights-sha256`` (the manifest's
  ``files["generator.safetensors"].sha256``), or ``generator-bundle`` (a pulled
  bundle folder) verified against ``keyring`` (consortium keyring file,
  ``radshare-hub keyring export``) or ``generator-public-key`` (PEM);
* ``keyring`` (optional with ``generator-id``): also verify the sites' signed reports;
* ``sites`` (``all`` or ``a,b``), ``num-samples``, ``seed``, ``near-copy-ssim``,
  ``max-near-copies``, ``alpha``, ``ssim-window``, ``num-permutations``,
  ``timeout-s``, ``out-dir``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from hub.flower.fanout import SiteReplies, ask_sites
from shared.artifacts.audit import AuditReport, AuditSettings, verify_audit_report
from shared.artifacts.keyring import ConsortiumKeyring, SignerKeys
from shared.audit_records import MESSAGE_TYPE, AuditRequest, report_from_records, request_to_records
from shared.errors import ArtifactError, ConfigError, FederationError

__all__ = [
    "SiteAudits",
    "audit_content",
    "audit_main",
    "audit_on_sites",
    "settings_from_run_config",
]

log = logging.getLogger("radshare.hub.flower")


@dataclass
class SiteAudits(SiteReplies):
    """Reports by site id (parsed, and the site-signed bytes as received); refusals and
    failures by node id (reason text; a refusal names the site, rule, value and limit)."""

    reports: dict[str, AuditReport] = field(default_factory=dict)
    signed: dict[str, bytes] = field(default_factory=dict)


def audit_content(
    generator_id: str,
    weights_sha256: str,
    settings: AuditSettings,
    sites: Sequence[str] | None = None,
) -> RecordDict:
    """Message content: the registered generator's id and weights sha256, settings, sites."""
    request = AuditRequest(
        generator_id=generator_id,
        weights_sha256=weights_sha256,
        settings=settings,
        sites=list(sites) if sites is not None else None,
    )
    return request_to_records(request)


def _accept_report(
    results: SiteAudits, node: int, reply: Message, generator_id: str, keys: SignerKeys | None
) -> None:
    """File one answer: a report (signature checked if keys), or a malformed reply."""
    try:
        data, report = report_from_records(reply.content)
        if keys is not None:
            from shared.artifacts.signing import load_public_key

            key = load_public_key(keys.public_key_pem(report.site_id))
            report = verify_audit_report(data, key, where=f"report of site {report.site_id}")
        if report.generator_id != generator_id:
            raise FederationError(f"report names generator {report.generator_id[:16]}")
    except (FederationError, ArtifactError, ValueError) as error:
        results.failures[node] = f"malformed reply: {error}"
        return
    results.reports[report.site_id] = report
    results.signed[report.site_id] = data


def audit_on_sites(
    grid: Grid,
    content: RecordDict,
    generator_id: str,
    *,
    node_ids: Sequence[int] | None = None,
    timeout_s: float = 3600.0,
    keys: SignerKeys | None = None,
) -> SiteAudits:
    """Send ``content`` as ``query.audit`` to each node; one signed report per answering site.

    ``keys``: the consortium keyring; each report must then verify against its site's key.
    """
    results = SiteAudits()
    answers = ask_sites(
        grid, content, MESSAGE_TYPE, results, node_ids=node_ids, timeout_s=timeout_s
    )
    for node, reply in answers:
        _accept_report(results, node, reply, generator_id, keys)
    log.info(
        "query.audit: %d sites answered, %d refused, %d failed",
        len(results.reports),
        len(results.refusals),
        len(results.failures),
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


def _generator_named(run_config: Mapping[str, object], keys: SignerKeys | None) -> tuple[str, str]:
    """``(generator id, weights sha256)`` from the run config (see the module docstring)."""
    generator_id, sha256 = run_config.get("generator-id"), run_config.get("weights-sha256")
    if generator_id and sha256:
        return str(generator_id), str(sha256)
    bundle = run_config.get("generator-bundle")
    if not bundle:
        raise ConfigError(
            "run_config names no generator: give 'generator-id' and 'weights-sha256', "
            "or 'generator-bundle' (a pulled bundle folder)"
        )
    from shared.artifacts.bundle import read_bundle
    from shared.artifacts.generator import GENERATOR_FILE

    key: Any = run_config.get("generator-public-key") or None
    trusted: Any = Path(str(key)) if key else keys
    if trusted is None:
        raise ConfigError("run_config 'generator-bundle' needs 'keyring' or 'generator-public-key'")
    signed = read_bundle(Path(str(bundle)), trusted)
    return signed.artifact_id, signed.model.files[GENERATOR_FILE].sha256


def audit_main(grid: Grid, run_config: Mapping[str, object]) -> SiteAudits:
    """The ServerApp's ``audit`` task: audit one registered generator at the chosen sites."""
    from hub.audit.report import write_audit_reports

    keyring = run_config.get("keyring")
    keys = ConsortiumKeyring.load(Path(str(keyring))) if keyring else None
    generator_id, weights_sha256 = _generator_named(run_config, keys)
    content = audit_content(generator_id, weights_sha256, settings_from_run_config(run_config),
                            _chosen_sites(run_config))  # fmt: skip
    results = audit_on_sites(
        grid, content, generator_id, timeout_s=_number(run_config, "timeout-s", 3600.0), keys=keys
    )
    out = Path(str(run_config.get("out-dir", "audit")))
    write_audit_reports(out, generator_id, results.signed, results.failures, results.refusals)
    return results
