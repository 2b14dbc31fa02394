"""The client's protobuf edge.

A taskinfo no site would take (NaN, integers too large for a double, keys
that are not strings, nesting past the protocol's limit) is refused before
anything is sent.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from ep_server.client.convert import MAX_TASKINFO_DEPTH, answer_from_proto, request_from_query
from ep_server.model import Cause, IntRange, Resources, TaskQuery
from ep_server.pb import execution_planner_pb2 as pb


def test_request_carries_taskinfo_and_only_bounded_ranges() -> None:
    query = TaskQuery(
        "uri://t", {"image": "x", "env": {"A": [1, True, None]}}, Resources(IntRange(2))
    )
    request = request_from_query(query)
    assert request.tasktype == "uri://t"
    assert request.taskinfo["env"]["A"][0] == 1
    assert request.resources.cores.HasField("min")
    assert not request.resources.cores.HasField("max")
    assert not request.resources.HasField("memory")


def test_unbounded_request_has_no_resources() -> None:
    request = request_from_query(TaskQuery("uri://t"))
    assert not request.HasField("resources")
    assert not request.HasField("taskinfo")


def test_answer_from_proto() -> None:
    msg = pb.AskResponse(
        responseword=pb.NO,
        reasons=[pb.Reason(code="X", cause=pb.REASON_CAUSE_POLICY, retryable=True, field="f")],
        offers=[pb.Offer(servicetype="uri://s", plugin="p")],
    )
    msg.offers[0].resources.memory.max = 5
    answer = answer_from_proto(msg)
    assert answer.word == "NO"
    assert not answer.yes
    assert answer.reasons[0].cause is Cause.POLICY
    assert answer.reasons[0].retryable
    assert answer.offers[0].resources == Resources(memory=IntRange(None, 5))
    assert answer.offers[0].serviceinfo == {}
    assert answer.raw is msg


def test_unspecified_cause_is_none() -> None:
    answer = answer_from_proto(pb.AskResponse(reasons=[pb.Reason(code="X")]))
    assert answer.reasons[0].cause is None
    assert answer.word == "RESPONSE_WORD_UNSPECIFIED"


@pytest.mark.parametrize(
    ("taskinfo", "problem"),
    [
        ({"a": float("nan")}, "taskinfo.a: nan is not a JSON number"),
        ({"a": [1, float("inf")]}, "taskinfo.a[1]: inf"),
        ({"a": 2**60}, "too large to send exactly"),
        ({"a": {1: 2}}, "key 1 is not a string"),
        ({"a": object()}, "is not JSON"),
    ],
)
def test_a_taskinfo_no_site_would_take_is_refused_before_sending(
    taskinfo: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        request_from_query(TaskQuery("uri://x", taskinfo))


def test_nesting_is_checked_against_the_protocols_limit() -> None:
    def nested(levels: int) -> dict[str, Any]:
        value: dict[str, Any] = {}
        for _ in range(levels - 1):
            value = {"a": value}
        return value

    request_from_query(TaskQuery("uri://x", nested(MAX_TASKINFO_DEPTH)))
    with pytest.raises(ValueError, match="nested deeper than 32 levels"):
        request_from_query(TaskQuery("uri://x", nested(MAX_TASKINFO_DEPTH + 1)))
    with pytest.raises(ValueError, match="nested deeper"):  # never a RecursionError
        request_from_query(TaskQuery("uri://x", nested(5000)))
