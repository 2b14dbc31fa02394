"""REST routes read from ``google.api.http`` rules: the service's own, and
rules built here for the template grammar and the refusals."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, descriptor_pool

from ep_server.http.routes import rest_routes
from ep_server.servicer import SERVICE


def test_every_rpc_of_the_service_has_its_route():
    routes = {r.rpc: r for r in rest_routes(SERVICE)}
    assert set(routes) == {m.name for m in SERVICE.methods}
    accept = routes["AcceptOffer"]
    assert (accept.method, accept.template, accept.body) == (
        "POST",
        "/v1/offers/{offer_id}:accept",
        "*",
    )
    assert accept.variables == (("v0", "offer_id"),)
    assert accept.path == "/v1/offers/{v0:[^/]+}:accept"
    assert routes["ListBookings"].body == ""


def test_the_template_grammar_becomes_route_patterns():
    rule = http_pb2.HttpRule(get="/v1/{parent.id=shelves/*}/books/{name=**}")
    rule.additional_bindings.add(post="/v1/{name}:do", body="parent")
    file = _file_with(rule)
    [first, second] = rest_routes(file.services_by_name["S"])
    assert first.variables == (("v0", "parent.id"), ("v1", "name"))
    pattern = re.sub(r"\{v(\d):([^}]*)\}", r"(?P<v\1>\2)", first.path)
    assert re.fullmatch(pattern, "/v1/shelves/7/books/a/b").groupdict() == {
        "v0": "shelves/7",
        "v1": "a/b",
    }
    assert re.fullmatch(pattern, "/v1/racks/7/books/a") is None
    assert (second.method, second.body) == ("POST", "parent")


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (http_pb2.HttpRule(get="/v1/{nope}"), "names no field 'nope'"),
        (http_pb2.HttpRule(get="/v1/{parent.nope}"), "names no field 'parent.nope'"),
        (http_pb2.HttpRule(post="/v1/x", body="nope"), "names no field 'nope'"),
        (http_pb2.HttpRule(get="v1/{name}"), "must start with /"),
        (http_pb2.HttpRule(get="/v1/{name"), "cannot read the path template"),
        (http_pb2.HttpRule(), "without a pattern"),
    ],
)
def test_a_rule_that_cannot_be_served_fails_at_start_up(rule, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        rest_routes(_file_with(rule).services_by_name["S"])


_COUNT = iter(range(10_000))


def _file_with(rule: http_pb2.HttpRule):
    """A file in the default pool (which has google/api/annotations.proto)
    with a service S whose one method M carries ``rule``."""
    n = next(_COUNT)
    file = descriptor_pb2.FileDescriptorProto(
        name=f"routes_test_{n}.proto", package=f"routes_test{n}", syntax="proto3"
    )
    file.dependency.append("google/api/annotations.proto")
    parent = file.message_type.add(name="Parent")
    parent.field.add(name="id", number=1, type=9, label=1)
    request = file.message_type.add(name="Req")
    request.field.add(name="name", number=1, type=9, label=1)
    request.field.add(
        name="parent", number=2, type=11, label=1, type_name=f".routes_test{n}.Parent"
    )
    service = file.service.add(name="S")
    method = service.method.add(
        name="M", input_type=f".routes_test{n}.Req", output_type=f".routes_test{n}.Req"
    )
    method.options.Extensions[annotations_pb2.http].CopyFrom(rule)
    pool = descriptor_pool.Default()
    pool.Add(file)
    return pool.FindFileByName(file.name)


def test_a_body_route_refuses_query_parameters(ep_server):
    url = ep_server(entry_points=False).http_url
    request = urllib.request.Request(
        f"{url}/v1/ask?tasktype=uri://x", data=b'{"tasktype": "uri://x"}',
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    error = json.loads(caught.value.read())
    [bad] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    assert bad["field_violations"][0]["field"] == "tasktype"
