"""The hub's side of ``evaluate.classifier``: send a classifier (or a recipe) to sites, collect aggregates.

    results = evaluate_on_sites(grid, request_content(request, classifier), timeout_s=600)

:func:`request_content` builds the message content (request JSON, weights, optional
synthetic enrichment images — never a real image: the hub has none);
:func:`evaluate_on_sites` sends it to every SuperNode (or the given ones) and parses
each reply into a :class:`~shared.evaluation_records.SiteEvaluation`, collecting sites
that failed (or did not answer in time) instead of aborting. :func:`run_requests` runs
several named requests, e.g. the comparison's (a) real-only (trained at each site),
(b) each site's synthetic archive and (c) the pooled archive.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch  # noqa: F401  (ArrayRecord.to_torch_state_dict needs torch imported first)
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from shared.errors import FederationError
from shared.evaluation_records import (
    CLASSIFIER_RECORD,
    ENRICH_RECORD,
    REQUEST_RECORD,
    EvaluationRequest,
    SiteEvaluation,
    evaluation_from_records,
)
from shared.networks.labeller import Labeller

__all__ = [
    "MESSAGE_TYPE",
    "SiteResults",
    "evaluate_on_sites",
    "request_content",
    "run_requests",
]

log = logging.getLogger("radshare.hub.flower")

MESSAGE_TYPE = "evaluate.classifier"


@dataclass
class SiteResults:
    """Replies by site id, and failures by node id (error text)."""

    evaluations: dict[str, SiteEvaluation] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)


def request_content(
    request: EvaluationRequest,
    classifier: Labeller | None = None,
    enrich: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> RecordDict:
    """Message content: the request, the classifier's weights, optional enrichment images."""
    if request.mode == "evaluate" and classifier is None:
        raise FederationError("mode 'evaluate' needs a classifier to send")
    if classifier is not None and classifier.cfg != request.labeller_config:
        raise FederationError("the classifier's config differs from request.labeller_config")
    content = RecordDict({REQUEST_RECORD: ConfigRecord({"json": request.model_dump_json()})})
    if classifier is not None:
        state = {k: v.detach().cpu() for k, v in classifier.state_dict().items()}
        content[CLASSIFIER_RECORD] = ArrayRecord(state)
    if enrich is not None:
        images, labels, mask = enrich
        content[ENRICH_RECORD] = ArrayRecord(
            {
                "images": torch.from_numpy(np.ascontiguousarray(images, np.uint8)),
                "labels": torch.from_numpy(np.ascontiguousarray(labels, np.float32)),
                "mask": torch.from_numpy(np.ascontiguousarray(mask, np.float32)),
            }
        )
    return content


def evaluate_on_sites(
    grid: Grid,
    content: RecordDict,
    *,
    node_ids: Sequence[int] | None = None,
    timeout_s: float = 3600.0,
) -> SiteResults:
    """Send ``content`` as ``evaluate.classifier`` to each node; parse the replies."""
    nodes = list(node_ids if node_ids is not None else grid.get_node_ids())
    if not nodes:
        raise FederationError("no site is connected to the SuperLink")
    messages = [
        Message(content=content, dst_node_id=node, message_type=MESSAGE_TYPE) for node in nodes
    ]
    results, replied = SiteResults(), set()
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        node = reply.metadata.src_node_id
        if reply.has_error():
            results.failures[node] = f"code {reply.error.code}: {reply.error.reason}"
            log.warning("evaluate.classifier: node %d failed: %s", node, results.failures[node])
            continue
        try:
            evaluation = evaluation_from_records(reply.content)
        except (FederationError, ValueError, KeyError) as error:
            results.failures[node] = f"malformed reply: {error}"
            continue
        results.evaluations[evaluation.site_id] = evaluation
        replied.add(node)
    for node in set(nodes) - replied - set(results.failures):
        results.failures[node] = f"no reply within {timeout_s:.0f} s"
    log.info(
        "evaluate.classifier: %d sites answered, %d failed",
        len(results.evaluations),
        len(results.failures),
    )
    return results


def run_requests(
    grid: Grid,
    contents: Mapping[str, RecordDict],
    *,
    node_ids: Sequence[int] | None = None,
    timeout_s: float = 3600.0,
) -> dict[str, SiteResults]:
    """Run several named requests one after the other: tag -> results."""
    return {
        tag: evaluate_on_sites(grid, content, node_ids=node_ids, timeout_s=timeout_s)
        for tag, content in contents.items()
    }
