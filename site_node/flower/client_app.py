"""The site's Flower ClientApp: a thin shell that routes the hub's messages to pure handlers.

Started by a SuperNode with this site's node config (``--node-config``)::

    site="a" cache-dir="/var/lib/radshare-site/cache" work-dir="/var/lib/radshare-site"
    labeller-dir="/var/lib/radshare-site/runs/labeller/export"   (optional)
    device="cpu"                                                   (optional)

Handlers:

* ``query.audit`` → :func:`site_node.flower.audit_task.audit_task`: the memorisation
  audit of the sent generator against this site's data; panels go to
  ``<work-dir>/audits/federated/`` and stay here; the reply holds aggregates only.
* ``evaluate.classifier`` → :func:`site_node.flower.evaluate_task.evaluate_classifier_task`.
* ``train.labeller`` → :func:`site_node.flower.labeller_task.train_labeller_task` (FedAvg round).

A handler's FederationError (bad request, missing cache) becomes the reply's error,
so the hub learns what went wrong and the SuperNode keeps running.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch  # noqa: F401  (ArrayRecord.to_torch_state_dict needs torch imported first)
from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp

from shared.audit_records import FAILED_CODE, SKIPPED_CODE, request_from_records
from shared.errors import RadshareError
from site_node.data.cache import SiteCache

__all__ = ["app"]

log = logging.getLogger("radshare.site.flower")

app = ClientApp()


def _node_value(context: Context, key: str, default: str | None = None) -> str | None:
    value = context.node_config.get(key, default)
    return None if value is None else str(value)


def _site(context: Context) -> tuple[str, SiteCache]:
    site_id = _node_value(context, "site", "site") or "site"
    cache_dir = _node_value(context, "cache-dir")
    if cache_dir is None:
        raise RadshareError(f"site {site_id}: node config has no cache-dir")
    return site_id, SiteCache(Path(cache_dir))


def _failure(msg: Message, error: Exception, code: int = FAILED_CODE) -> Message:
    log.warning("%s failed: %s", msg.metadata.message_type, error)
    return Message(error=Error(code=code, reason=str(error)[:500]), reply_to=msg)


@app.query("audit")
def audit(msg: Message, context: Context) -> Message:
    """``query.audit``: the memorisation audit of the sent generator against this site's data."""
    from site_node.audit.embedding import site_embedder
    from site_node.flower.audit_task import audit_task

    try:
        site_id, cache = _site(context)
        request = request_from_records(msg.content)
        if not request.addressed_to(site_id):
            return _failure(msg, RadshareError(f"site {site_id} not chosen"), SKIPPED_CODE)
        work_dir = _node_value(context, "work-dir")
        labeller_dir = _node_value(context, "labeller-dir")
        device = _node_value(context, "device", "cpu") or "cpu"
        embed, embed_name = site_embedder(
            Path(labeller_dir) if labeller_dir else None,
            request.generator_config.resolution_px,
            device,
        )
        reply = audit_task(
            msg.content,
            cache,
            site_id=site_id,
            embed=embed,
            embed_name=embed_name,
            panel_root=Path(work_dir) / "audits" / "federated" if work_dir else None,
            device=device,
        )
    except RadshareError as error:
        return _failure(msg, error)
    return Message(reply, reply_to=msg)


@app.evaluate("classifier")
def evaluate_classifier(msg: Message, context: Context) -> Message:
    """``evaluate.classifier``: evaluate (or train and evaluate) a classifier on real data."""
    from site_node.flower.evaluate_task import evaluate_classifier_task

    try:
        site_id, cache = _site(context)
        reply = evaluate_classifier_task(msg.content, cache, site_id=site_id)
    except RadshareError as error:
        return _failure(msg, error)
    return Message(reply, reply_to=msg)


@app.train("labeller")
def train_labeller(msg: Message, context: Context) -> Message:
    """``train.labeller``: one FedAvg round of the labeller on this site's real train split."""
    from site_node.flower.labeller_task import train_labeller_task

    try:
        site_id, cache = _site(context)
        reply = train_labeller_task(msg.content, cache, site_id=site_id)
    except RadshareError as error:
        return _failure(msg, error)
    return Message(reply, reply_to=msg)
