"""The RPC methods on plain calls: protobuf in and out, no gRPC server."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from fake_plugins.common import Declining, Offering, SlowAsync

from ep_server.errors import FailedPrecondition, InvalidArgument
from ep_server.model import ANONYMOUS, Identity
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pipeline import Call
from ep_server.planner import Planner
from ep_server.plugins import PluginCaller
from ep_server.servicer import SERVICE, ExecutionPlannerServicer, grpc_handler
from ep_server.wire import Limits, decoder, service_info_to_proto

DOCKER = "uri://docker-container"


@dataclass
class Inbound:
    remaining: float | None = None
    request_id: str = ""

    def time_remaining(self) -> float | None:
        return self.remaining


class Answers:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def answer(self, word: str, offers: int) -> None:
        self.seen.append((word, offers))


@pytest.fixture
def servicer(registry_of):
    registry = registry_of(yes=Offering("uri://uws", DOCKER), no=Declining(DOCKER))
    caller = PluginCaller(deadline=1.0)
    info = service_info_to_proto(registry, {"cores": 4}, "1.2.3")
    made = ExecutionPlannerServicer(
        Planner(registry, caller),
        Limits(),
        info,
        metrics=Answers(),  # type: ignore[arg-type]
    )
    yield made
    caller.close()


def call(identity: Identity = ANONYMOUS, remaining: float | None = None) -> Call:
    return Call(identity, Inbound(remaining))  # type: ignore[arg-type]


async def test_ask_decodes_asks_the_planner_and_encodes_the_answer(servicer):
    response = await servicer.Ask(pb.AskRequest(tasktype=DOCKER), call())
    assert response.responseword == pb.YES
    assert [(o.plugin, o.servicetype) for o in response.offers] == [("yes", "uri://uws")]
    assert [(r.plugin, r.code) for r in response.reasons] == [("no", "NOPE")]
    assert servicer.metrics.seen == [("YES", 1)]


async def test_ask_answers_within_the_callers_deadline_less_a_margin_to_reply(registry_of):
    slow = SlowAsync(DOCKER, 5)
    caller = PluginCaller(deadline=2.0)
    registry = registry_of(slow=slow)
    info = service_info_to_proto(registry, {}, "1")
    servicer = ExecutionPlannerServicer(Planner(registry, caller), Limits(), info)
    started = time.monotonic()
    response = await servicer.Ask(pb.AskRequest(tasktype=DOCKER), call(remaining=0.2))
    took = time.monotonic() - started
    caller.close()
    assert [r.code for r in response.reasons] == ["PLUGIN_TIMEOUT"]
    assert 0.1 < took < 1.0  # by the caller's 0.2 s less a margin to reply, not the 2 s


async def test_a_request_protobuf_refused_is_invalid_argument_naming_its_message(servicer):
    undecodable = decoder(pb.GetServiceInfoRequest)(b"\xff\xff")
    with pytest.raises(InvalidArgument) as info:
        await servicer.GetServiceInfo(undecodable, call())
    assert info.value.message.startswith("invalid GetServiceInfoRequest")
    assert "undecodable" in info.value.message


async def test_service_info_is_built_once(servicer):
    first = await servicer.GetServiceInfo(pb.GetServiceInfoRequest(), call())
    assert first is await servicer.GetServiceInfo(pb.GetServiceInfoRequest(), call())
    assert (first.server_version, dict(first.pools)) == ("1.2.3", {"cores": 4})


@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("AcceptOffer", pb.AcceptOfferRequest(offer_id="o1")),
        ("RejectOffer", pb.RejectOfferRequest(offer_id="o1")),
        ("GetBooking", pb.GetBookingRequest(booking_id="b1")),
        ("ListBookings", pb.ListBookingsRequest()),
        ("CancelBooking", pb.CancelBookingRequest(booking_id="b1")),
    ],
)
async def test_a_site_without_bookings_says_so_on_every_booking_rpc(servicer, method, request_):
    with pytest.raises(FailedPrecondition) as info:
        await getattr(servicer, method)(request_, call(Identity("alice", "token")))
    assert info.value.reason == "SCHEDULING_UNSUPPORTED"


@pytest.mark.parametrize("offer_id", ["", "has space", "x" * 129])
async def test_ids_are_checked_before_anything_is_looked_up(servicer, offer_id):
    with pytest.raises(InvalidArgument) as info:
        await servicer.AcceptOffer(pb.AcceptOfferRequest(offer_id=offer_id), call())
    assert [v.field for v in info.value.violations] == ["offer_id"]


def test_every_rpc_of_the_service_has_a_method_and_a_grpc_handler(servicer):
    from ep_server.pipeline import CallPipeline

    handler: Any = grpc_handler(servicer, CallPipeline())
    for method in SERVICE.methods:
        assert callable(getattr(servicer, method.name))
        details = type("Details", (), {"method": f"/{SERVICE.full_name}/{method.name}"})()
        assert handler.service(details) is not None, method.name
