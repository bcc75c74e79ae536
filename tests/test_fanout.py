"""``hub.flower.fanout``: one query to many SuperNodes; every kind of non-answer is filed.

A grid stand-in routes each message to a per-node function in this process (as in
``test_federated_audit``); the messages are Flower's own.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flwr.app import ConfigRecord, Error, Message, RecordDict

from hub.flower.fanout import SiteReplies, ask_sites, site_nodes
from shared.audit_records import REFUSED_CODE, SKIPPED_CODE
from shared.errors import FederationError

QUERY = "query.test"

Site = Callable[[Message], Message | None]


class _Grid:
    """Hands each message to its node's function; a node whose function returns None is silent."""

    def __init__(self, sites: dict[int, Site]) -> None:
        self.sites = sites
        self.asked: list[int] = []

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def send_and_receive(self, messages, timeout=None):
        for msg in messages:
            assert msg.metadata.message_type == QUERY
            self.asked.append(msg.metadata.dst_node_id)
            reply = self.sites[msg.metadata.dst_node_id](msg)
            if reply is not None:
                yield reply


@pytest.fixture
def task_identity():
    """Flower stamps messages with the running task's identity; set one for in-process use."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._run_id = TaskIdentity._task_id = TaskIdentity._node_id = None


def _answer(msg: Message) -> Message:
    return Message(RecordDict({"answer": ConfigRecord({"n": 1})}), reply_to=msg)


def _error(code: int, reason: str) -> Site:
    return lambda msg: Message(error=Error(code=code, reason=reason), reply_to=msg)


def test_answers_are_returned_and_every_non_answer_is_filed(task_identity):
    grid = _Grid({
        1: _answer,
        2: _error(SKIPPED_CODE, "not chosen"),
        3: _error(REFUSED_CODE, "site c: rule max_samples, value 9, limit 5"),
        4: _error(99, "boom"),
        5: lambda msg: None,  # never answers
    })  # fmt: skip
    outcome = SiteReplies()
    answers = ask_sites(grid, RecordDict(), QUERY, outcome, timeout_s=7)
    assert [node for node, _ in answers] == [1]
    assert dict(answers[0][1].content.config_records["answer"]) == {"n": 1}
    assert outcome.skipped == [2]
    assert outcome.refusals == {3: "site c: rule max_samples, value 9, limit 5"}
    assert outcome.failures == {4: "code 99: boom", 5: "no reply within 7 s"}


def test_only_the_named_nodes_are_asked(task_identity):
    grid = _Grid({1: _answer, 2: _answer, 3: _answer})
    answers = ask_sites(grid, RecordDict(), QUERY, SiteReplies(), node_ids=[3, 1])
    assert grid.asked == [3, 1]
    assert sorted(node for node, _ in answers) == [1, 3]


def test_no_connected_site_is_an_error():
    with pytest.raises(FederationError, match="no site is connected to the SuperLink"):
        ask_sites(_Grid({}), RecordDict(), QUERY, SiteReplies())
    assert site_nodes(_Grid({4: _answer, 2: _answer})) == [4, 2]
