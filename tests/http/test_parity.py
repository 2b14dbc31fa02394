"""The same question over gRPC and over HTTP gets the same answer: the
answer's JSON over HTTP is the gRPC answer in protobuf's JSON mapping, and
a request both doors refuse gets the same ``google.rpc.Status`` (code,
message, field violations, ErrorInfo) on both."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from http_site import DOCKER, SEED, Site
from request_generation.encoding import nested, taskinfo_field
from schedule.rpc_site import who

from ep_server.pb import execution_planner_pb2 as pb
from ep_server.servicer import SERVICE


def as_dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def deep(levels: int) -> dict[str, Any]:
    """A taskinfo ``levels`` deep (the top-level object is level 1)."""
    return as_dict(nested(levels))


def window(start: str, end: str) -> dict[str, Any]:
    return {"windows": [{"start": start, "end": end}], "min_duration": "3600s"}


ANSWERED = {
    "yes": SEED,
    "no, unknown task type": {"tasktype": "uri://no-such-type"},
    "32 levels of taskinfo": {"tasktype": DOCKER, "taskinfo": deep(32)},
}

REFUSED = {
    "empty tasktype": {"tasktype": ""},
    "relative tasktype": {"tasktype": "docker"},
    "not a URI": {"tasktype": "uri://bad uri with spaces"},
    "cores min above max": {"tasktype": DOCKER, "resources": {"cores": {"min": "3", "max": "2"}}},
    "negative memory": {"tasktype": DOCKER, "resources": {"memory": {"min": "-5"}}},
    "33 levels of taskinfo": {"tasktype": DOCKER, "taskinfo": deep(33)},
    "taskinfo too large": {"tasktype": DOCKER, "taskinfo": {"padding": "x" * (300 * 1024)}},
    "window ends before it starts": {
        **SEED,
        "schedule": window("2031-03-04T17:00:00Z", "2031-03-04T09:00:00Z"),
    },
    "several at once": {
        "tasktype": "",
        "resources": {"cores": {"min": "-1"}, "memory": {"min": "2", "max": "1"}},
    },
}


def bad_request(status: status_pb2.Status) -> list[error_details_pb2.BadRequest.FieldViolation]:
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            found = error_details_pb2.BadRequest()
            detail.Unpack(found)
            return list(found.field_violations)
    return []


async def grpc_answer(site: Site, request: dict[str, Any]) -> dict[str, Any]:
    return as_dict(await site.stub.Ask(json_format.ParseDict(request, pb.AskRequest()), timeout=10))


async def grpc_status(site: Site, request: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await site.stub.Ask(json_format.ParseDict(request, pb.AskRequest()), timeout=10)
    status = rpc_status.from_call(info.value)
    assert status is not None
    return as_dict(status)


@pytest.mark.parametrize("case", ANSWERED)
async def test_an_answer_is_the_same_on_both_doors(site, case):
    s = await site()
    reply = await s.post("/v1/ask", json=ANSWERED[case])
    assert reply.status == 200
    assert reply.json == await grpc_answer(s, ANSWERED[case])


@pytest.mark.parametrize("case", REFUSED)
async def test_a_refusal_is_the_same_status_on_both_doors(site, case):
    s = await site()
    reply = await s.post("/v1/ask", json=REFUSED[case])
    assert reply.status == 400
    expected = await grpc_status(s, REFUSED[case])
    assert reply.violations(), reply.json
    assert reply.json == expected


async def test_a_scheduled_answer_is_the_same_on_both_doors(booking_site):
    request = {**SEED, "schedule": window("2031-03-04T09:00:00Z", "2031-03-04T17:00:00Z")}
    reply = await booking_site.post("/v1/ask", json=request, user="alice")
    assert reply.status == 200
    expected = as_dict(
        await booking_site.stub.Ask(
            json_format.ParseDict(request, pb.AskRequest()), metadata=who("alice"), timeout=10
        )
    )
    # Each Ask holds offers of its own: the same slots, under new ids.
    answer = reply.json
    assert [o.pop("id") for o in answer["offers"]] != [o.pop("id") for o in expected["offers"]]
    assert answer == expected
    assert len(expected["offers"]) == 3


async def test_a_taskinfo_too_deep_for_protobuf_s_decoder_names_taskinfo_on_both_doors(site):
    """Past 33 levels protobuf's binary decoder refuses the gRPC request
    before the depth check can count (so its description differs); both
    doors name taskinfo, and only taskinfo."""
    s = await site()
    tasktype = pb.AskRequest(tasktype=DOCKER).SerializeToString()
    raw = s.channel.unary_unary(f"/{SERVICE.full_name}/Ask")  # bytes protobuf would not encode
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await raw(tasktype + taskinfo_field(nested(40)), timeout=10)
    status = rpc_status.from_call(info.value)
    reply = await s.post("/v1/ask", json={"tasktype": DOCKER, "taskinfo": deep(40)})
    assert reply.status == 400
    assert list(reply.violations()) == ["taskinfo"] == [v.field for v in bad_request(status)]


async def test_service_info_is_the_same_on_both_doors(site):
    s = await site()
    reply = await s.get("/v1/serviceinfo")
    assert reply.status == 200
    assert reply.json == as_dict(await s.stub.GetServiceInfo(pb.GetServiceInfoRequest()))
