"""Bodies protobuf cannot decode, through a real server (ep_server.wire):
INVALID_ARGUMENT naming every bad field, never UNKNOWN.

gRPC alone answers a body its deserializer refuses with UNKNOWN; the EP
decodes ``Ask`` itself and names what it could not read: random bytes,
mutated valid requests, taskinfo nested past protobuf's recursion limit,
strings that are not UTF-8 beside other bad fields. A message over gRPC's
4 MiB receive limit is gRPC's to refuse, and the EP carries on.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import event, given, settings
from hypothesis import strategies as st
from request_generation.encoding import Ask, BadUtf8, length_delimited
from request_generation.harness import CALL_TIMEOUT, MAX_MESSAGE, Harness, serving
from request_generation.strategies import ROBUST, mutated_requests

from ep_server.pb import execution_planner_pb2 as pb


@pytest.fixture(scope="module")
def ep() -> Iterator[Harness]:
    with serving("undecodable requests") as harness:
        yield harness


def test_garbage_bodies_are_invalid_argument_never_unknown(ep):
    """Random bytes and mutated requests as the whole body. What protobuf
    cannot decode must be INVALID_ARGUMENT (gRPC alone would say UNKNOWN);
    for a body with no decodable field at all, BadRequest may name the
    whole request (field "")."""

    @settings(ROBUST, max_examples=1200)
    @given(
        st.one_of(
            st.binary(max_size=64),
            st.binary(max_size=2048),
            mutated_requests(),
            st.sampled_from([b"\x0a", b"\x0a\xff", b"\x12\x80\x80\x80\x80\x10", b"\x1a\x01\x08"]),
            st.sampled_from([b"\x0b", b"\x0c", b"\x00", b"\x07\x00", b"\xff" * 11]),
        )
    )
    def prop(data: bytes) -> None:
        outcome = ep.send(data)
        ep.check(outcome, data, named_field=False)
        try:
            pb.AskRequest.FromString(data)
        except DecodeError:
            event("undecodable")
            assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, outcome
        event(outcome.code.name)

    prop()
    ep.assert_healthy()


def _chain(levels: int) -> dict[str, Any]:
    """``levels`` objects nested in one another: {"a": {"a": ... None}}."""
    node: Any = None
    for _ in range(levels):
        node = {"a": node}
    return node


@pytest.mark.parametrize(
    ("ask", "field"),
    [
        # 34 levels: one list, then 32 objects. AskRequest.FromString refuses
        # it; Struct.FromString of the same taskinfo bytes does not.
        pytest.param(
            Ask("uri://docker-container", {"l": [_chain(32)]}), "taskinfo", id="decoder-edge"
        ),
        pytest.param(Ask(BadUtf8(b"\x80"), {"n": math.nan}), "taskinfo.n", id="bad-utf8+nan"),
        pytest.param(Ask(BadUtf8(b"\x80"), _chain(33)), "taskinfo", id="bad-utf8+33-levels"),
        pytest.param(Ask(BadUtf8(b"\x80"), {"b": "x" * 300_000}), "taskinfo", id="bad-utf8+300KiB"),
        pytest.param(
            Ask(BadUtf8(b"\x80"), schedule={"windows": [], "min": (60, 0)}),
            "schedule.windows",
            id="bad-utf8+no-windows",
        ),
        # A schedule (field 4) that is not a valid message: named "schedule",
        # not "" (the whole request).
        pytest.param(
            Ask("uri://docker-container", unknown=length_delimited(4, b"\x00")),
            "schedule",
            id="bad-schedule",
        ),
    ],
)
def test_undecodable_requests_name_every_bad_field(ep, ask, field):
    outcome = ep.send(ask.encode())
    ep.check(outcome, ask, named_field=False)
    assert field in {f for f, _ in outcome.violations}, outcome.violations


def test_a_message_over_4_mib_is_resource_exhausted_and_harmless(ep):
    """gRPC's own receive limit answers a >4 MiB message; the EP carries on."""
    body = Ask("uri://docker-container", {"blob": "x" * (MAX_MESSAGE + 1024)}).encode()
    with pytest.raises(grpc.RpcError) as info:
        ep.raw_ask(body, timeout=CALL_TIMEOUT)
    assert info.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    ep.assert_healthy()
