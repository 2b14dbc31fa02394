"""Requests at the edge: the seed's JSON, validation of every field, conversion
to plain objects, and requests protobuf refused to decode."""

from __future__ import annotations

import json
import math

import pytest
from google.protobuf import json_format, struct_pb2
from request_generation.encoding import nested, taskinfo_field

from ep_server import Resources
from ep_server.errors import InvalidArgument
from ep_server.model import IntRange
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.wire import Limits, Undecodable, decoder, query_from_request

LIMITS = Limits()
decode_ask = decoder(pb.AskRequest)

# The IVOA note's examples, as Dave Morris wrote them in the seed discussion.
SEED_REQUESTS = [
    """
    {
    "tasktype": "uri://docker-container",
    "taskinfo": {
        "image": "docker.io/example:1.0"
        }
    }
    """,
    """
    {
    "tasktype": "uri://complex-kubernetes-deploy",
    "taskinfo": {
        "config": "http:///github.com/Zarquan/complicated-project"
        }
    }
    """,
]
# The seed's YES answers: the note's text has a trailing comma (not JSON) and
# spells "reponseword"; our answer wraps the offer in "offers".
SEED_OFFERS = [
    ("uri://docker-uws", {"endpoint": "http://example.org/dkuws"}),
    ("uri://complex-kubernetes-service", {"endpoint": "http://cloud.ed.ac.uk/controller"}),
]


def violations(request) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        query_from_request(request, LIMITS)
    return {v.field: v.description for v in info.value.violations}


@pytest.mark.parametrize("text", SEED_REQUESTS)
def test_the_seed_requests_parse_as_written(text):
    request = json_format.Parse(text, pb.AskRequest())
    query = query_from_request(request, LIMITS)
    assert query.tasktype == json.loads(text)["tasktype"]
    assert query.taskinfo == json.loads(text)["taskinfo"]


def test_resources_are_converted():
    request = json_format.ParseDict(
        {
            "tasktype": "uri://x",
            "resources": {"cores": {"min": 2, "max": 4}, "memory": {"max": "1024"}},
        },
        pb.AskRequest(),
    )
    assert query_from_request(request, LIMITS).resources == Resources(
        IntRange(2, 4), IntRange(None, 1024)
    )


@pytest.mark.parametrize(
    ("tasktype", "problem"),
    [
        ("", "empty"),
        ("docker-container", "absolute URI"),
        ("uri://has space", "absolute URI"),
        ("uri://caf\u00e9", "absolute URI"),
        ("uri://%zz", "absolute URI"),
        ("uri://" + "x" * 2043, "at most 2048"),
    ],
)
def test_bad_tasktypes(tasktype, problem):
    assert problem in violations(pb.AskRequest(tasktype=tasktype))["tasktype"]


def test_a_tasktype_of_exactly_2048_characters_is_fine():
    query_from_request(pb.AskRequest(tasktype="uri://" + "x" * 2042), LIMITS)


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"cores": {"min": -1}}, "resources.cores.min"),
        ({"cores": {"max": -2}}, "resources.cores.max"),
        ({"memory": {"min": 10, "max": 9}}, "resources.memory"),
    ],
)
def test_bad_resources(resources, field):
    request = json_format.ParseDict(
        {"tasktype": "uri://x", "resources": resources}, pb.AskRequest()
    )
    assert field in violations(request)


def test_every_bad_field_is_named_in_one_answer():
    request = json_format.ParseDict(
        {
            "tasktype": "not a uri",
            "taskinfo": {"n": 1},
            "resources": {"cores": {"min": 4, "max": 2}, "memory": {"min": -1}},
        },
        pb.AskRequest(),
    )
    request.taskinfo.fields["n"].number_value = math.nan
    assert set(violations(request)) == {
        "tasktype",
        "taskinfo.n",
        "resources.cores",
        "resources.memory.min",
    }


def test_32_levels_are_accepted_and_33_refused():
    ok = pb.AskRequest(tasktype="uri://x", taskinfo=nested(32))
    assert query_from_request(ok, LIMITS).taskinfo["a"]["a"]
    too_deep = pb.AskRequest(tasktype="uri://x", taskinfo=nested(33))
    assert "deeper than 32" in violations(too_deep)["taskinfo"]


def test_lists_count_as_levels():
    value = struct_pb2.Value()
    value.list_value.values.add()
    node = value
    for _ in range(40):
        node = node.list_value.values.add()
    request = pb.AskRequest(tasktype="uri://x")
    request.taskinfo.fields["l"].CopyFrom(value)
    assert "deeper than 32" in violations(request)["taskinfo"]


def test_a_taskinfo_too_deep_for_the_decoder_names_taskinfo():
    # protobuf refuses this before any handler runs; it must still be
    # INVALID_ARGUMENT naming taskinfo, with the other fields checked too.
    data = pb.AskRequest(tasktype="not a uri").SerializeToString() + taskinfo_field(nested(60))
    decoded = decode_ask(data)
    assert isinstance(decoded, Undecodable)
    bad = violations(decoded)
    assert "decoded" in bad["taskinfo"]
    assert "absolute URI" in bad["tasktype"]


def test_garbage_bytes_are_invalid_not_a_crash():
    assert violations(decode_ask(b"\xff\xff\xff\xff")) != {}


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_are_refused_with_their_path(number):
    request = pb.AskRequest(tasktype="uri://x")
    request.taskinfo.fields["a"].list_value.values.add().number_value = number
    assert "taskinfo.a[0]" in violations(request)


def test_an_oversize_taskinfo_is_refused():
    request = pb.AskRequest(tasktype="uri://x")
    request.taskinfo.fields["blob"].string_value = "x" * (256 * 1024)
    assert "at most 262144" in violations(request)["taskinfo"]


def test_taskinfo_values_become_plain_python():
    request = json_format.ParseDict(
        {
            "tasktype": "uri://x",
            "taskinfo": {"s": "a", "n": 2, "b": True, "z": None, "l": [1, {"k": "v"}]},
        },
        pb.AskRequest(),
    )
    taskinfo = query_from_request(request, LIMITS).taskinfo
    assert taskinfo == {"s": "a", "n": 2.0, "b": True, "z": None, "l": [1.0, {"k": "v"}]}
    assert type(taskinfo["l"]) is list
    assert type(taskinfo["l"][1]) is dict
