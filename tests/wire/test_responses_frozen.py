"""A FrozenInfo serviceinfo is encoded for the wire once and merged into
every answer that offers it; any other mapping is encoded for each answer.
Either way the answer, on both doors, and the ledger's copy hold the same."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.protobuf import json_format

from ep_server import FrozenInfo, Offer, Resources
from ep_server.model import IntRange, Schedule, Window
from ep_server.planner import Answer
from ep_server.schedule.ledger import Candidate, Placement
from ep_server.schedule.sqlite import SQLiteLedger
from ep_server.wire import answer_to_proto, booking_to_proto, responses
from ep_server.wire.proto_json import message_dict

INFO = {
    "endpoint": "http://example.org/dkuws",
    "queue": "short",
    "limits": {"cores": 4, "gpu": False, "tags": ["a", "b", None, 1.5, {"x": []}]},
    "empty": {},
}


def serviceinfo_of(answer: Answer) -> list[object]:
    return [json_format.MessageToDict(o.serviceinfo) for o in answer_to_proto(answer).offers]


def test_the_encoding_is_the_plain_mappings():
    offer = Offer("uri://s", FrozenInfo(INFO), Resources(IntRange(1, 2)), "m")
    plain = Offer("uri://s", INFO, Resources(IntRange(1, 2)), "m")
    frozen_reply = answer_to_proto(Answer([("p", offer)], []))
    plain_reply = answer_to_proto(Answer([("p", plain)], []))
    assert json_format.MessageToDict(frozen_reply) == json_format.MessageToDict(plain_reply)
    assert json_format.MessageToDict(frozen_reply.offers[0].serviceinfo) == INFO
    assert message_dict(frozen_reply) == message_dict(plain_reply)


def test_a_frozen_info_is_encoded_once_for_every_answer(monkeypatch):
    made = []
    encode = responses._encoded

    def counting(info: FrozenInfo) -> bytes:
        made.append(info)
        return encode(info)

    monkeypatch.setattr(responses, "_encoded", counting)
    info = FrozenInfo(INFO)
    answer = Answer([("p", Offer("uri://s", info)), ("q", Offer("uri://t", info))], [])
    first = serviceinfo_of(answer)
    assert serviceinfo_of(answer) == first == [INFO, INFO]
    assert made == [info]


def test_a_plain_mapping_is_encoded_for_each_answer():
    info = {"endpoint": "a"}
    answer = Answer([("p", Offer("uri://s", info))], [])
    assert serviceinfo_of(answer) == [{"endpoint": "a"}]
    info["endpoint"] = "b"
    assert serviceinfo_of(answer) == [{"endpoint": "b"}]


def test_answers_share_no_message():
    """Changing one answer's serviceinfo leaves the next answer's as it was."""
    answer = Answer([("p", Offer("uri://s", FrozenInfo(INFO)))], [])
    first = answer_to_proto(answer)
    first.offers[0].serviceinfo.fields["endpoint"].string_value = "changed"
    del first.offers[0].serviceinfo.fields["queue"]
    assert serviceinfo_of(answer) == [INFO]


def test_a_frozen_info_of_a_bad_shape_never_reaches_the_wire():
    with pytest.raises(ValueError, match="nan"):
        FrozenInfo({"x": float("nan")})


def test_a_held_offer_of_a_frozen_info_goes_through_the_sqlite_ledger(tmp_path: Path):
    now = datetime(2030, 1, 7, tzinfo=UTC)
    info = FrozenInfo(INFO)
    ledger = SQLiteLedger(tmp_path / "ledger.db", {"cores": 8})
    try:
        placement = Placement(
            "alice",
            "ask-1",
            (Candidate("p", "uri://s", info, {"cores": 1}),),
            Schedule((Window(now, now),), timedelta(hours=1)),
        )
        [held] = ledger.place(placement, now)
        [sent] = answer_to_proto(Answer([("p", held)], [])).offers
        assert json_format.MessageToDict(sent.serviceinfo) == INFO
        assert sent.id == held.id
        booking, created = ledger.accept(held.id, "alice", now)
        assert created
        assert booking.serviceinfo == INFO  # read back as JSON: lists, plain dicts
        assert json.dumps(booking.serviceinfo, sort_keys=True) == json.dumps(INFO, sort_keys=True)
        assert json_format.MessageToDict(booking_to_proto(booking).serviceinfo) == INFO
    finally:
        ledger.close()


def test_an_integer_no_json_number_holds_drops_its_offer_with_a_reason():
    # The contract lets any int through; a Struct holds doubles only.
    answer = Answer(
        [("huge", Offer("uri://s", {"x": 10**400})), ("fine", Offer("uri://s", INFO))], []
    )
    response = answer_to_proto(answer)
    assert [o.plugin for o in response.offers] == ["fine"]
    [reason] = response.reasons
    assert (reason.plugin, reason.code) == ("huge", "PLUGIN_ERROR")
    assert "unusable serviceinfo" in reason.message
