"""The HTTP door's JSON edge (ep_server.wire.http_json), without a server:
a request body, path and query either build the request message or raise
InvalidArgument naming the field, whatever they hold; nesting too deep for
json's own parser is still traced to the top-level field it is under."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ep_server.errors import InvalidArgument
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.wire import http_json
from ep_server.wire.http_json import _deep_key

DEPTH = 32 + http_json.JSON_DEPTH_SLACK


def violations(body: bytes, cls: Any = pb.AskRequest, query: Any = ()) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        http_json.request_from_http(cls, cls.__name__, body, {}, list(query), DEPTH)
    return {v.field: v.description for v in info.value.violations}


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('{"taskinfo": ' + '{"a": ' * 50, "taskinfo"),
        ('{"tasktype": "x", "taskinfo": ' + "[" * 50, "taskinfo"),
        ('{"x": "[[[[[[", "y": "\\"{{{{", "taskinfo": ' + "[" * 50, "taskinfo"),
        ('{"taskinfo": {"a": 1}, "resources": ' + '{"a": ' * 50, "resources"),
        ('{"ta\\u0073kinfo" : ' + "[" * 50, "taskinfo"),
        ("[" * 50, ""),
        ('{"taskinfo": ' + "[" * 5 + "]" * 5 + "}", ""),
    ],
    ids=["objects", "arrays", "brackets in strings", "a later key", "escaped key", "no key", "ok"],
)
def test_the_key_a_deep_nesting_is_under(text, key):
    assert _deep_key(text, 8) == key


@pytest.mark.parametrize("levels", [1_000, 100_000])
def test_nesting_past_json_s_parser_under_taskinfo_names_taskinfo(levels):
    body = b'{"tasktype": "uri://x", "taskinfo": {"a": ' + b"[" * levels + b"]" * levels + b"}}"
    assert violations(body) == {"taskinfo": "is nested deeper than 32 levels"}


SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4)
NAMES = st.sampled_from(
    [
        "tasktype",
        "taskinfo",
        "resources",
        "schedule",
        "cores",
        "memory",
        "min",
        "max",
        "windows",
        "start",
        "end",
        "min_duration",
        "maxDuration",
        "page_size",
        "offer_id",
        "x",
    ]
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES | st.text(), inner),
    max_leaves=12,
)
QUERY = st.lists(
    st.tuples(st.sampled_from(["tasktype", "taskinfo.a", "resources", "a.b", "a"]), st.text()),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(NAMES, JSON, max_size=4) | JSON, QUERY)
def test_any_json_builds_a_request_or_names_what_is_wrong(body, query):
    data = json.dumps(body).encode()
    for cls in (pb.AskRequest, pb.ListBookingsRequest, pb.AcceptOfferRequest):
        try:
            http_json.request_from_http(cls, cls.__name__, data, {}, query, DEPTH)
        except InvalidArgument as exc:  # anything else fails the test
            refused = exc
            assert refused.violations
