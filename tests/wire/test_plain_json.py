"""The EP's JSON form for people, the same from the test kit and from ep."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ep_server.client.render import results_json
from ep_server.client.results import Answer, Reason, Result
from ep_server.client.sites import Site
from ep_server.model import Cause, Slot
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.wire.plain_json import enum_prefix, plain_json, rfc3339

T = datetime(2031, 3, 4, 9, tzinfo=UTC)


def test_enums_are_short_and_integers_are_numbers() -> None:
    answer = pb.AskResponse(responseword=pb.NO)
    reason = answer.reasons.add(code="NO_SLOT", cause=pb.REASON_CAUSE_CAPACITY, retryable=True)
    reason.earliest_slot.start.FromDatetime(T)
    reason.earliest_slot.end.FromDatetime(T.replace(hour=11))
    offer = answer.offers.add(servicetype="uri://x")
    offer.resources.memory.max = 2**40
    offer.hold["cores"] = 4
    doc = plain_json(answer)
    assert doc["responseword"] == "NO"
    assert doc["reasons"][0]["cause"] == "CAPACITY"
    assert doc["reasons"][0]["earliest_slot"] == {
        "start": "2031-03-04T09:00:00Z",
        "end": "2031-03-04T11:00:00Z",
    }
    assert doc["offers"][0]["resources"] == {"memory": {"max": 2**40}}
    assert doc["offers"][0]["hold"] == {"cores": 4}


def test_service_info_states_are_short() -> None:
    info = pb.GetServiceInfoResponse()
    info.plugins.add(name="p", state=pb.PLUGIN_STATE_LOADED)
    assert plain_json(info)["plugins"][0]["state"] == "LOADED"


def test_enum_prefixes_follow_the_style_guide() -> None:
    assert enum_prefix(pb.ReasonCause.DESCRIPTOR) == "REASON_CAUSE_"
    assert enum_prefix(pb.BookingState.DESCRIPTOR) == "BOOKING_STATE_"


def test_ep_json_writes_causes_slots_and_times_as_the_test_kit_does() -> None:
    slot = Slot(T, T.replace(hour=11))
    reason = Reason("NO_SLOT", "no", "", Cause.CAPACITY, True, "schedule.windows", slot)
    result = Result(Site("s", "h:1"), Answer("NO", reasons=(reason,)), 0.1)
    written = json.loads(results_json([result]))["results"][0]["answer"]["reasons"][0]
    assert written["cause"] == "CAPACITY"
    assert written["earliest_slot"] == {"start": rfc3339(T), "end": "2031-03-04T11:00:00Z"}
