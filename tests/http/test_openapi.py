"""The OpenAPI document: valid OpenAPI 3.1, one operation per HTTP rule,
what the proto gives (and stale when the proto changes), and schemas that
take exactly the proto3 JSON the server writes and reads."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import referencing
import schemathesis
from google.api import annotations_pb2
from google.protobuf import json_format

from ep_server.config import RPC_NAMES
from ep_server.errors import FieldViolation, InvalidArgument, ResourceExhausted
from ep_server.http.openapi import ERRORS, openapi_document, openapi_json
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.wire.status import status_proto
from tools import genopenapi

DOC = openapi_document()
SERVICE = pb.DESCRIPTOR.services_by_name["ExecutionPlannerService"]
_REGISTRY = referencing.Registry().with_resource(
    "urn:ep:openapi", referencing.Resource.from_contents(DOC, referencing.jsonschema.DRAFT202012)
)


def valid(instance: Any, component: str) -> bool:
    """Whether ``instance`` is valid against ``components/schemas/<component>``."""
    schema = {"$ref": f"urn:ep:openapi#/components/schemas/{component}"}
    validator = jsonschema.Draft202012Validator(schema, registry=_REGISTRY)
    return validator.is_valid(instance)


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOC["paths"].items():
        for verb, operation in item.items():
            yield path, verb, operation


def schemas_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema object the document holds: components, parameters,
    bodies and answers."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield value
            else:
                yield from schemas_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from schemas_in(item)


def refs_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs_in(item)


# --- the document as a whole ------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOC["openapi"] == "3.1.0"
    schemathesis.openapi.from_dict(DOC).validate()


def test_the_validator_refuses_an_invalid_document() -> None:
    broken = {**DOC, "paths": {"/v1/ask": {"post": {"responses": {"200": {}}}}}}
    with pytest.raises(Exception, match="description"):
        schemathesis.openapi.from_dict(broken).validate()


def test_every_schema_is_a_valid_json_schema() -> None:
    found = [*DOC["components"]["schemas"].values(), *schemas_in(DOC["paths"])]
    assert len(found) > 40
    for schema in found:
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_reference_resolves() -> None:
    refs = set(refs_in(DOC))
    assert refs
    for ref in refs:
        node: Any = DOC
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def test_every_component_is_used() -> None:
    used = set(refs_in({**DOC, "components": {}}))
    for kind in ("schemas", "responses", "headers"):
        for component in DOC["components"][kind].values():
            used |= set(refs_in(component))
    defined = {
        f"#/components/{kind}/{name}"
        for kind in ("schemas", "responses", "headers")
        for name in DOC["components"][kind]
    }
    assert defined - used == set()


def test_the_committed_document_is_what_the_proto_gives() -> None:
    committed = genopenapi.OUT.read_text(encoding="utf-8")
    assert genopenapi.generate() == committed
    assert openapi_json() == committed.encode()


def test_the_check_fails_when_the_proto_changes(tmp_path: Path) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(genopenapi.PROTO_ROOT, protos)
    assert genopenapi.main(["--check"], protos=protos) == 0
    proto = protos / "ivoa/ep/v1/execution_planner.proto"
    text = proto.read_text()
    changed = text.replace("// GetBooking returns one", "// GetBooking returns exactly one")
    assert changed != text
    proto.write_text(changed)
    assert genopenapi.main(["--check"], protos=protos) == 1


def test_writing_makes_the_check_pass_again(tmp_path: Path) -> None:
    out = tmp_path / "openapi.json"
    out.write_text("{}\n")
    assert genopenapi.main(["--check"], out=out) == 1
    assert genopenapi.main([], out=out) == 0
    assert genopenapi.main(["--check"], out=out) == 0
    assert out.read_text() == genopenapi.OUT.read_text()


# --- operations from the HTTP rules ------------------------------------------------


def test_each_annotated_rpc_is_one_operation_at_its_rule_s_method_and_path() -> None:
    expected = {}
    for method in SERVICE.methods:
        rule = method.GetOptions().Extensions[annotations_pb2.http]
        verb = rule.WhichOneof("pattern")
        expected[method.name] = (verb, getattr(rule, verb))
    found = {op["operationId"]: (verb, path) for path, verb, op in operations()}
    assert len(expected) == 7
    assert {name: found.get(name) for name in expected} == expected


def test_operation_ids_are_unique() -> None:
    ids = [op["operationId"] for _, _, op in operations()]
    assert len(ids) == len(set(ids))


def test_path_fields_are_path_parameters_and_the_body_holds_the_rest() -> None:
    accept = DOC["paths"]["/v1/offers/{offer_id}:accept"]["post"]
    [parameter] = accept["parameters"]
    assert parameter["name"] == "offer_id"
    assert parameter["in"] == "path"
    assert parameter["required"] is True
    assert parameter["schema"] == {"type": "string", "minLength": 1}
    body = accept["requestBody"]
    assert body["required"] is False
    assert body["content"]["application/json"]["schema"]["properties"] == {}


def test_a_get_rule_s_other_fields_are_query_parameters() -> None:
    listing = DOC["paths"]["/v1/bookings"]["get"]
    assert [(p["name"], p["in"]) for p in listing["parameters"]] == [
        ("page_size", "query"),
        ("page_token", "query"),
    ]
    assert listing["parameters"][0]["schema"]["type"] == "integer"
    assert "requestBody" not in listing


def test_ask_reads_the_input_form_of_its_request() -> None:
    ask = DOC["paths"]["/v1/ask"]["post"]
    schema = ask["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/ivoa.ep.v1.AskRequest-input"}
    assert ask["requestBody"]["required"] is True


def test_operations_are_described_by_their_proto_comments() -> None:
    ask = DOC["paths"]["/v1/ask"]["post"]
    assert ask["summary"] == (
        "Ask asks whether this site can perform a task, and if so, which services it offers for it."
    )
    assert "Every plugin that claims the task type is consulted" in ask["description"]
    for path, verb, operation in operations():
        assert operation["summary"], f"{verb} {path}"


def test_booking_operations_need_a_bearer_token_and_the_others_take_one() -> None:
    security = {op["operationId"]: op.get("security") for _, _, op in operations()}
    optional, needed = [{}, {"bearer": []}], [{"bearer": []}]
    for method in SERVICE.methods:
        assert security[method.name] == (optional if method.name in RPC_NAMES else needed)
    assert security["Accepts"] == security["Accept"] == optional
    assert security["OpenApi"] is None
    scheme = DOC["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


def test_every_error_an_operation_gives_is_a_status() -> None:
    for path, verb, operation in operations():
        for status, response in operation["responses"].items():
            if status in ("200", "303"):  # 303: a made offer set, at its Location
                continue
            assert response == {"$ref": f"#/components/responses/Error{status}"}, (verb, path)
    for code in ERRORS:
        answer = DOC["components"]["responses"][f"Error{code}"]
        schema = answer["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/google.rpc.Status"}
        assert answer["headers"]["x-request-id"]


def test_routes_with_an_id_may_be_not_found_and_routes_with_a_body_may_be_too_large() -> None:
    statuses = {op["operationId"]: set(op["responses"]) for _, _, op in operations()}
    assert statuses["GetBooking"] >= {"200", "400", "401", "404", "429", "500", "503"}
    assert "413" not in statuses["GetBooking"]
    assert statuses["AcceptOffer"] >= {"404", "413", "415"}
    assert "404" not in statuses["Ask"]
    assert {"413", "415"} <= statuses["Ask"]


# --- the schemas: proto3 JSON as the server writes and reads it --------------------


def _answer() -> pb.AskResponse:
    request = {
        "responseword": "YES",
        "offers": [
            {
                "servicetype": "uri://docker-uws",
                "serviceinfo": {"endpoint": "http://example.org/dkuws", "n": [1, None, True]},
                "resources": {"cores": {"min": 0, "max": 2}, "memory": {"max": 25276502016}},
                "id": "offer-1",
                "expire_time": "2031-03-04T09:05:00.250Z",
                "slot": {"start": "2031-03-04T10:00:00Z", "end": "2031-03-04T12:00:00Z"},
                "hold": {"cores": 2, "memory": 0},
            }
        ],
        "reasons": [{"code": "NO_SLOT", "cause": "REASON_CAUSE_CAPACITY", "retryable": True}],
    }
    return json_format.ParseDict(request, pb.AskResponse())


def _written(message: Any, **options: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True, **options)


def test_the_output_schema_takes_what_the_server_writes() -> None:
    written = _written(_answer())
    assert written["offers"][0]["hold"] == {"cores": "2", "memory": "0"}
    assert valid(written, "ivoa.ep.v1.AskResponse")
    assert valid({}, "ivoa.ep.v1.AskResponse")


def test_the_output_schema_refuses_what_the_server_never_writes() -> None:
    assert not valid(_written(_answer(), use_integers_for_enums=True), "ivoa.ep.v1.AskResponse")
    camel = json_format.MessageToDict(_answer())  # expireTime, not expire_time
    assert not valid(camel, "ivoa.ep.v1.AskResponse")
    assert not valid({"offers": [{"hold": {"cores": 2}}]}, "ivoa.ep.v1.AskResponse")
    assert not valid({"responseword": "MAYBE"}, "ivoa.ep.v1.AskResponse")
    assert not valid({"offers": [{"expire_time": "tomorrow"}]}, "ivoa.ep.v1.AskResponse")


ASKS = [
    {"tasktype": "uri://x", "taskinfo": {"a": [1, {"b": None}]}},
    {"tasktype": "uri://x", "resources": {"cores": {"min": "2", "max": 4}}},
    {"tasktype": None, "resources": None},
    {
        "schedule": {
            "windows": [{"start": "2031-03-04T09:00:00+01:00", "end": "2031-03-04T18:00:00Z"}],
            "minDuration": "3600s",
            "max_duration": "7200.5s",
        }
    },
]


@pytest.mark.parametrize("request_json", ASKS)
def test_the_input_schema_takes_what_protobuf_parses(request_json: dict[str, Any]) -> None:
    json_format.ParseDict(request_json, pb.AskRequest())
    assert valid(request_json, "ivoa.ep.v1.AskRequest-input")


NOT_ASKS = [
    {"tasktype": "uri://x", "extra": 1},
    {"taskinfo": []},
    {"resources": {"cores": {"min": "two"}}},
    {"schedule": {"min_duration": "1h"}},
    {"schedule": {"windows": [None]}},
]


@pytest.mark.parametrize("request_json", NOT_ASKS)
def test_the_input_schema_refuses_what_protobuf_refuses(request_json: dict[str, Any]) -> None:
    with pytest.raises(json_format.ParseError):
        json_format.ParseDict(request_json, pb.AskRequest())
    assert not valid(request_json, "ivoa.ep.v1.AskRequest-input")


def test_an_enum_is_read_by_name_or_number() -> None:
    schema = DOC["components"]["schemas"]["ivoa.ep.v1.BookingState"]
    assert schema["enum"] == [v.name for v in pb.BookingState.DESCRIPTOR.values]
    assert "BOOKING_STATE_CANCELLED: the booking was cancelled" in schema["description"]


ERRORS_WRITTEN = [
    InvalidArgument("AskRequest", [FieldViolation("tasktype", "is empty")]),
    ResourceExhausted("over the rate limit", 0.1),
]


@pytest.mark.parametrize("error", ERRORS_WRITTEN, ids=lambda e: type(e).__name__)
def test_the_status_schema_takes_every_error_the_server_writes(error: Any) -> None:
    written = _written(status_proto(error))
    assert len(written["details"]) == 2
    assert valid(written, "google.rpc.Status")


def test_the_status_schema_refuses_an_unknown_detail() -> None:
    detail = {"@type": "type.googleapis.com/google.rpc.Help", "links": []}
    assert not valid({"code": 3, "details": [detail]}, "google.rpc.Status")
    assert not valid({"code": 3, "details": [{"reason": "X"}]}, "google.rpc.Status")
