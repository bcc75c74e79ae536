"""Send one query to many SuperNodes and file the replies that carry no answer.

    outcome = SiteAudits()  # a SiteReplies with the query's own answers
    for node, reply in ask_sites(grid, content, "query.audit", outcome, timeout_s=600):
        ...  # parse reply.content into outcome

Every query of the hub (``query.audit``, ``evaluate.classifier``) files the same
three kinds of non-answer by node id, instead of aborting: a site that was not
chosen (``SKIPPED_CODE``), one that refused under its policy (``REFUSED_CODE``; the
reason names the site, rule, value and limit) and one that failed or did not answer
within the timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from shared.audit_records import REFUSED_CODE, SKIPPED_CODE
from shared.errors import FederationError

__all__ = ["SiteReplies", "ask_sites", "site_nodes"]

log = logging.getLogger("radshare.hub.flower")


@dataclass
class SiteReplies:
    """Sites that gave no answer, by node id: refusals and failures (reason text), skipped."""

    refusals: dict[int, str] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)


def site_nodes(grid: Grid, node_ids: Sequence[int] | None = None) -> list[int]:
    """``node_ids``, or every SuperNode connected to the SuperLink; FederationError if none."""
    nodes = list(node_ids if node_ids is not None else grid.get_node_ids())
    if not nodes:
        raise FederationError("no site is connected to the SuperLink")
    return nodes


def ask_sites(
    grid: Grid,
    content: RecordDict,
    message_type: str,
    outcome: SiteReplies,
    *,
    node_ids: Sequence[int] | None = None,
    timeout_s: float = 3600.0,
) -> list[tuple[int, Message]]:
    """Send ``content`` as ``message_type`` to each node (default: all); the answers.

    Error replies are filed in ``outcome`` (skipped, refused, failed), and so are nodes
    that did not reply within ``timeout_s``; the (node id, reply) pairs that carry
    content are returned for the caller to parse. Raises FederationError when no site
    is connected.
    """
    nodes = site_nodes(grid, node_ids)
    messages = [Message(content=content, dst_node_id=n, message_type=message_type) for n in nodes]
    answers, replied = [], set()
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        node = reply.metadata.src_node_id
        replied.add(node)
        if not reply.has_error():
            answers.append((node, reply))
        elif reply.error.code == SKIPPED_CODE:
            outcome.skipped.append(node)  # a site that was not chosen
        elif reply.error.code == REFUSED_CODE:
            outcome.refusals[node] = str(reply.error.reason)
            log.warning("%s: node %d refused: %s", message_type, node, reply.error.reason)
        else:
            outcome.failures[node] = f"code {reply.error.code}: {reply.error.reason}"
            log.warning("%s: node %d failed: %s", message_type, node, outcome.failures[node])
    for node in set(nodes) - replied:
        outcome.failures[node] = f"no reply within {timeout_s:.0f} s"
    return answers
