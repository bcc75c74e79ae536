"""The site's Flower ClientApp: a thin shell that routes the hub's messages to pure handlers.

Started by a SuperNode with this site's node config (``--node-config``)::

    site="a" cache-dir="/var/lib/radshare-site/cache" work-dir="/var/lib/radshare-site"
    hub="hub.consortium.example:50051" tls-dir="/etc/radshare/tls"
    keyring="/etc/radshare/consortium-keyring.json"
    signing-key="/etc/radshare/keys/site-a.ed25519"
    labeller-dir="/var/lib/radshare-site/runs/labeller/export"   (optional)
    device="cpu"                                                   (optional)

Query policy (a site is no oracle; keys optional, defaults shown)::

    max-audit-samples=5000                      samples (and real reference images) per audit
    max-audit-permutations=100000               permutations of one audit's tests
    max-audits-per-artifact-per-day=3           query.audit per generator, any 24 h
    max-evaluations-per-artifact-per-day=10     evaluate.classifier per classifier, any 24 h
                                                (the real-data baseline counts as "train-real")
    max-queries-per-day=50                      audits and evaluations in total, any 24 h
    allow-federated-labeller=false              answer train.labeller and its inline
                                                validation round (weights not registered)

Handlers:

* ``query.audit`` → pull the registered generator the request names by id and
  weights sha256, verify it against the consortium keyring
  (``site_node.flower.registered``), audit it (:func:`site_node.flower.audit_task.audit_task`;
  panels stay under ``<work-dir>/audits/federated/``), and reply with this site's
  :class:`~shared.artifacts.audit.AuditReport` signed with ``signing-key``.
* ``evaluate.classifier`` → the registered classifier the request names, or the
  real-data baseline the site trains itself
  (:func:`site_node.flower.evaluate_task.evaluate_classifier_task`).
* ``train.labeller`` → one FedAvg round (only with ``allow-federated-labeller=true``).

Every request is checked against the policy before any work and written to the
append-only ``<work-dir>/query-log.jsonl`` (``site_node.flower.query_policy``;
``radshare-site query-log`` prints it). A request outside policy gets a reply error
with code ``REFUSED_CODE`` whose reason names the rule, the value and the limit; a
handler's other RadshareError becomes a ``FAILED_CODE`` reply, so the hub learns what
went wrong and the SuperNode keeps running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch  # noqa: F401  (ArrayRecord.to_torch_state_dict needs torch imported first)
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from shared.audit_records import (
    FAILED_CODE,
    MESSAGE_TYPE,
    REFUSED_CODE,
    SKIPPED_CODE,
    request_from_records,
)
from shared.errors import ConfigError, FederationError, QueryRefusedError, RadshareError
from site_node.data.cache import SiteCache
from site_node.flower.query_policy import (
    QUERY_LOG_FILE,
    Query,
    QueryLog,
    QueryPolicy,
    check_audit_effort,
    check_policy,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shared.networks.generator import Generator

__all__ = ["app"]

log = logging.getLogger("radshare.site.flower")

app = ClientApp()
EVALUATE_TYPE = "evaluate.classifier"
TRAIN_TYPE = "train.labeller"


@dataclass(frozen=True)
class _Site:
    """This SuperNode's site: id, cache folder, work folder, policy and query log."""

    site_id: str
    cache_dir: Path
    work_dir: Path
    policy: QueryPolicy
    queries: QueryLog

    def cache(self) -> SiteCache:
        """The site's cache, opened only once a request is accepted (CacheError if missing)."""
        return SiteCache(self.cache_dir)


def _node_value(context: Context, key: str, default: str | None = None) -> str | None:
    value = context.node_config.get(key, default)
    return None if value is None else str(value)


def _site(context: Context) -> _Site:
    site_id = _node_value(context, "site", "site") or "site"
    cache_dir = _node_value(context, "cache-dir")
    if cache_dir is None:
        raise ConfigError(f"site {site_id}: node config has no cache-dir")
    work_dir = _node_value(context, "work-dir")
    if work_dir is None:
        raise ConfigError(f"site {site_id}: node config has no work-dir (the query log's home)")
    return _Site(
        site_id=site_id,
        cache_dir=Path(cache_dir),
        work_dir=Path(work_dir),
        policy=QueryPolicy.from_node_config(context.node_config),
        queries=QueryLog(Path(work_dir) / QUERY_LOG_FILE),
    )


def _failure(msg: Message, error: Exception, code: int = FAILED_CODE) -> Message:
    log.warning("%s failed: %s", msg.metadata.message_type, error)
    return Message(error=Error(code=code, reason=str(error)[:500]), reply_to=msg)


def _refusal(msg: Message, site: _Site, query: Query, error: QueryRefusedError) -> Message:
    """Log the refusal and reply with REFUSED_CODE and the rule, value and limit."""
    reason = f"site {site.site_id} {error}"
    site.queries.record(query, "refused", reason)
    return _failure(msg, RadshareError(reason), REFUSED_CODE)


def _answer(
    msg: Message,
    site: _Site,
    query: Query,
    prepare: Callable[[], object],
    work: Callable[[object], RecordDict],
) -> Message:
    """Policy, then ``prepare`` (pull, verify: may refuse), accept, ``work``; all logged."""
    try:
        check_policy(site.policy, query, site.queries.entries())  # before any work
        prepared = prepare()
        site.queries.check_and_accept(site.policy, query)  # again, under the log's lock
    except QueryRefusedError as error:
        return _refusal(msg, site, query, error)
    except RadshareError as error:
        site.queries.record(query, "failed", str(error))
        return _failure(msg, error)
    started = time.monotonic()
    try:
        reply = work(prepared)
    except Exception as error:
        site.queries.record(query, "failed", f"{type(error).__name__}: {error}",
                            duration_s=time.monotonic() - started)  # fmt: skip
        if isinstance(error, RadshareError):
            return _failure(msg, error)
        raise
    site.queries.record(query, "answered", duration_s=time.monotonic() - started)
    return Message(reply, reply_to=msg)


def _malformed(msg: Message, site: _Site, kind: str, error: FederationError) -> Message:
    query = Query(msg.metadata.message_type, kind, "unknown")  # type: ignore[arg-type]
    return _refusal(msg, site, query, QueryRefusedError("well-formed-request", str(error)))


def _skipped(msg: Message, site: _Site, query: Query) -> Message:
    site.queries.record(query, "skipped", f"site {site.site_id} not among the sites asked")
    return _failure(msg, RadshareError(f"site {site.site_id} not chosen"), SKIPPED_CODE)


def _signing_key(context: Context, site_id: str) -> Ed25519PrivateKey:
    from shared.artifacts.signing import load_private_key

    path = _node_value(context, "signing-key")
    if not path:
        raise ConfigError(
            f"site {site_id}: node config has no signing-key (audit replies are signed)"
        )
    return load_private_key(Path(path))


@app.query("audit")
def audit(msg: Message, context: Context) -> Message:
    """``query.audit``: audit the registered generator the request names; a signed report."""
    from site_node.audit.embedding import site_embedder
    from site_node.flower.audit_task import audit_task, signed_reply
    from site_node.flower.registered import HubAccess, registered_generator

    try:
        site = _site(context)
    except RadshareError as error:
        return _failure(msg, error)
    try:
        request = request_from_records(msg.content)
    except FederationError as error:
        return _malformed(msg, site, "audit", error)
    query = Query(MESSAGE_TYPE, "audit", request.generator_id, request.weights_sha256,
                  request.settings.num_samples)  # fmt: skip
    if not request.addressed_to(site.site_id):
        return _skipped(msg, site, query)
    try:
        effort = request.settings
        check_audit_effort(site.policy, effort.num_permutations, effort.reference_samples)
    except QueryRefusedError as error:
        return _refusal(msg, site, query, error)
    device = _node_value(context, "device", "cpu") or "cpu"

    def prepare() -> object:
        key = _signing_key(context, site.site_id)
        access = HubAccess.from_node_config(site.site_id, context.node_config, site.work_dir)
        return key, registered_generator(access, request.generator_id, request.weights_sha256)

    def work(prepared: object) -> RecordDict:
        key, G = cast("tuple[Ed25519PrivateKey, Generator]", prepared)
        labeller_dir = _node_value(context, "labeller-dir")
        embed, embed_name = site_embedder(
            Path(labeller_dir) if labeller_dir else None, G.cfg.resolution_px, device
        )
        summary = audit_task(G, request, site.cache(), site_id=site.site_id, embed=embed,
                             embed_name=embed_name, device=device,
                             panel_root=site.work_dir / "audits" / "federated")  # fmt: skip
        return signed_reply(summary, request, site_id=site.site_id, private_key=key)

    return _answer(msg, site, query, prepare, work)


@app.evaluate("classifier")
def evaluate_classifier(msg: Message, context: Context) -> Message:
    """``evaluate.classifier``: a registered classifier, or the site's real-data baseline."""
    from shared.evaluation_records import CLASSIFIER_RECORD
    from site_node.flower.evaluate_task import evaluate_classifier_task, parse_request
    from site_node.flower.registered import HubAccess, registered_classifier

    try:
        site = _site(context)
    except RadshareError as error:
        return _failure(msg, error)
    try:
        request = parse_request(msg.content)
    except FederationError as error:
        return _malformed(msg, site, "evaluation", error)
    inline = CLASSIFIER_RECORD in msg.content.array_records
    artifact = request.classifier_id or ("train-real" if request.mode == "train-real" else "inline")
    query = Query(EVALUATE_TYPE, "evaluation", artifact, request.weights_sha256)
    if request.sites and site.site_id not in request.sites:
        return _skipped(msg, site, query)

    def prepare() -> object:
        if request.mode == "train-real" or (artifact == "inline" and _inline_allowed()):
            return None
        if artifact == "inline":
            raise QueryRefusedError(
                "registered-artifacts-only",
                "a classifier sent inline is evaluated only in a federated-labeller validation "
                f"round (split 'val') at a site with allow-federated-labeller=true "
                f"(split {request.split!r}, allow-federated-labeller="
                f"{str(site.policy.allow_federated_labeller).lower()})",
            )
        if inline:
            raise QueryRefusedError(
                "registered-artifacts-only",
                f"classifier {artifact[:16]} is named by registry id; the request must not "
                "carry weights",
            )
        if request.weights_sha256 is None:
            raise QueryRefusedError("weights-sha256-matches", "the request names no weights_sha256")
        access = HubAccess.from_node_config(site.site_id, context.node_config, site.work_dir)
        return registered_classifier(access, artifact, request.weights_sha256)

    def _inline_allowed() -> bool:
        return inline and site.policy.allow_federated_labeller and request.split == "val"

    def work(prepared: object) -> RecordDict:
        return evaluate_classifier_task(msg.content, site.cache(), site_id=site.site_id,
                                        classifier=prepared)  # type: ignore[arg-type]  # fmt: skip

    return _answer(msg, site, query, prepare, work)


@app.train("labeller")
def train_labeller(msg: Message, context: Context) -> Message:
    """``train.labeller``: one FedAvg round (only at a site that takes part in that training)."""
    from site_node.flower.labeller_task import train_labeller_task

    try:
        site = _site(context)
    except RadshareError as error:
        return _failure(msg, error)
    query = Query(TRAIN_TYPE, "evaluation", "inline")
    if not site.policy.allow_federated_labeller:
        refusal = QueryRefusedError(
            "allow-federated-labeller", "this site does not take part in federated labeller "
            "training (node config allow-federated-labeller=false)",
        )  # fmt: skip
        return _refusal(msg, site, query, refusal)
    started = time.monotonic()
    try:
        reply = train_labeller_task(msg.content, site.cache(), site_id=site.site_id)
    except RadshareError as error:
        site.queries.record(query, "failed", str(error), duration_s=time.monotonic() - started)
        return _failure(msg, error)
    site.queries.record(query, "answered", duration_s=time.monotonic() - started)
    return Message(reply, reply_to=msg)
