"""The client's protobuf edge."""

from __future__ import annotations

from ep_server.client.convert import answer_from_proto, request_from_query
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
