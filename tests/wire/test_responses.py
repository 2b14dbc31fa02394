"""Responses at the edge: answers as the seed's JSON, offers and reasons."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from ep_server import Cause, Offer, Reason, Resources
from ep_server.model import IntRange
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.planner import Answer
from ep_server.wire import answer_to_proto

# The seed's YES answers: the note's text has a trailing comma (not JSON) and
# spells "reponseword"; our answer wraps the offer in "offers".
SEED_OFFERS = [
    ("uri://docker-uws", {"endpoint": "http://example.org/dkuws"}),
    ("uri://complex-kubernetes-service", {"endpoint": "http://cloud.ed.ac.uk/controller"}),
]


@pytest.mark.parametrize(("servicetype", "serviceinfo"), SEED_OFFERS)
def test_a_yes_prints_as_the_seed_answer(servicetype, serviceinfo):
    answer = Answer([("static", Offer(servicetype, serviceinfo))], [])
    printed = json.loads(json_format.MessageToJson(answer_to_proto(answer)))
    assert printed["responseword"] == "YES"
    assert printed["offers"][0]["servicetype"] == servicetype
    assert printed["offers"][0]["serviceinfo"] == serviceinfo
    assert printed["offers"][0]["plugin"] == "static"


def test_a_no_prints_with_its_reasons():
    reason = Reason("INSUFFICIENT_CORES", "too many", Cause.CAPACITY, True, "resources.cores.min")
    printed = json.loads(json_format.MessageToJson(answer_to_proto(Answer([], [("p", reason)]))))
    assert printed == {
        "responseword": "NO",
        "reasons": [
            {
                "code": "INSUFFICIENT_CORES",
                "plugin": "p",
                "cause": "REASON_CAUSE_CAPACITY",
                "retryable": True,
                "message": "too many",
                "field": "resources.cores.min",
            }
        ],
    }


def test_offered_resources_are_sent():
    offer = Offer("uri://s", {}, Resources(IntRange(1, 4), IntRange(None, 2048)), "capped")
    [sent] = answer_to_proto(Answer([("p", offer)], [])).offers
    assert (sent.resources.cores.min, sent.resources.cores.max) == (1, 4)
    assert not sent.resources.memory.HasField("min")
    assert sent.resources.memory.max == 2048
    assert sent.message == "capped"


def test_an_offer_with_unusable_serviceinfo_becomes_a_reason():
    answer = Answer(
        [("bad", Offer("uri://s", {"when": object()})), ("good", Offer("uri://t", {"n": 1}))], []
    )
    response = answer_to_proto(answer)
    assert response.responseword == pb.YES
    assert [o.plugin for o in response.offers] == ["good"]
    assert [(r.plugin, r.code) for r in response.reasons] == [("bad", "PLUGIN_ERROR")]
