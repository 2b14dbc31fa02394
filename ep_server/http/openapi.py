"""The HTTP door's OpenAPI 3.1 document, generated from the proto.

Each ``/v1`` route is the ``google.api.http`` rule of an RPC of
``ivoa.ep.v1.ExecutionPlannerService``, and :func:`build_document` reads the
same rules with the server's own reader (:mod:`ep_server.http.routes`): one
operation per RPC (operationId: the RPC's name), its path and query
parameters from the rule's template and the request's other fields, its
body and answer from the request and response messages
(:mod:`~ep_server.http.openapi_schemas`), and its text from the proto
comments.

Those comments are not in the descriptors compiled into ``ep_server.pb``
(protoc leaves source info out of generated code), so the document is built
when the stubs are, not at run time: ``tools/genopenapi.py`` compiles
``protos/`` with source info, calls :func:`build_document` and writes
``openapi.json`` beside this module, which is committed. Installing
ep-server then needs no protoc, serving the document is a file read
(:func:`openapi_json`), and ``make lint`` (``genopenapi.py --check``) fails
when the committed file is not what the proto gives.

What no descriptor says is written here, in two tables marked as
hand-described, and nowhere else: :data:`ERRORS`, the error statuses of the
HTTP door (AIP-193's mapping of the gRPC codes this server gives), and
:func:`hand_described_paths`, the routes no RPC annotates (the IVOA note's
``/accepts`` and ``/accept``, the ExecutionBroker draft's offer sets and
sessions, this document and the operator's page).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import MethodDescriptor

from ep_server.config import RPC_NAMES
from ep_server.http import openapi_broker
from ep_server.http.openapi_schemas import ProtoIndex, Schema, Schemas, ref
from ep_server.http.routes import RestRoute, rest_routes

__all__ = [
    "ERRORS",
    "ERROR_HEADERS",
    "SERVICE",
    "build_document",
    "hand_described_paths",
    "openapi_document",
    "openapi_json",
    "openapi_path",
    "render",
]

#: The service whose RPCs the ``/v1`` routes serve.
SERVICE = "ivoa.ep.v1.ExecutionPlannerService"
#: The error body, and the messages its details hold
#: (:func:`ep_server.wire.status_proto`).
STATUS = "google.rpc.Status"
ERROR_DETAILS = ("google.rpc.BadRequest", "google.rpc.ErrorInfo", "google.rpc.RetryInfo")
_JSON = "application/json"
# A path template's variable: {field} or {field=segments}.
_VARIABLE = re.compile(r"\{[^}]*\}")
_REQUEST_ID = {"x-request-id": {"$ref": "#/components/headers/x-request-id"}}
_BEARER: dict[str, list[str]] = {"bearer": []}
# Query parameters take scalars, enums, and these messages written as one string.
_QUERY_MESSAGES = ("google.protobuf.Timestamp", "google.protobuf.Duration")
_F = descriptor_pb2.FieldDescriptorProto


def openapi_json() -> bytes:
    """The document as served at ``GET /openapi.json``: ``openapi.json``,
    committed beside this module."""
    return _committed()


def openapi_document() -> dict[str, Any]:
    """The document, parsed (a fresh copy each call)."""
    document: dict[str, Any] = json.loads(_committed())
    return document


@cache
def _committed() -> bytes:
    return resources.files(__package__).joinpath("openapi.json").read_bytes()


def render(document: dict[str, Any]) -> str:
    """The document as committed: indented JSON, keys in building order."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# --- operations from the google.api.http rules ------------------------------------


def build_document(files: Sequence[descriptor_pb2.FileDescriptorProto]) -> dict[str, Any]:
    """The OpenAPI document of the HTTP door, from the compiled ``files``
    (with source info, and every file they import, imports first)."""
    index = ProtoIndex.of(files)
    schemas = Schemas(index, packed=ERROR_DETAILS)
    paths: dict[str, dict[str, Any]] = {}
    named: set[str] = set()
    for route, method in _routes(files):
        operation = _operation(route, method, index, schemas)
        if route.rpc in named:  # an additional binding of an RPC
            operation["operationId"] = f"{route.rpc}_{len(named)}"
        named.add(route.rpc)
        paths.setdefault(openapi_path(route), {})[route.method.lower()] = operation
    schemas.ref(STATUS, "output")
    extra = hand_described_paths(schemas)
    if clash := set(extra) & set(paths):
        raise ValueError(f"hand-described paths clash with RPC routes: {sorted(clash)}")
    about = index.comment(SERVICE)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "IVOA ExecutionPlanner",
            "version": SERVICE.split(".")[-2],
            "summary": _first_sentence(about),
            "description": f"{about}\n\n{_CONVENTIONS}",
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": SERVICE, "description": about},
            {"name": _NOTE_TAG, "description": _NOTE_ABOUT},
            {"name": openapi_broker.TAG, "description": openapi_broker.TAG_ABOUT},
        ],
        "paths": paths | extra,
        "components": {
            "schemas": dict(sorted(schemas.components.items())),
            "responses": {f"Error{code}": _error(code, text) for code, text in ERRORS.items()},
            "headers": {"x-request-id": _REQUEST_ID_HEADER},
            "securitySchemes": {"bearer": _BEARER_SCHEME},
        },
    }


def _routes(
    files: Sequence[descriptor_pb2.FileDescriptorProto],
) -> list[tuple[RestRoute, MethodDescriptor]]:
    """The service's routes read as the server reads them
    (:func:`~ep_server.http.routes.rest_routes`), from the compiled files."""
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    service = pool.FindServiceByName(SERVICE)
    return [(route, service.methods_by_name[route.rpc]) for route in rest_routes(service)]


def openapi_path(route: RestRoute) -> str:
    """A route's path as OpenAPI writes it, each variable ``{field}``
    whatever its segment pattern: ``/v1/offers/{offer_id}:accept``."""
    fields = iter([field for _, field in route.variables])
    return _VARIABLE.sub(lambda _: "{" + next(fields) + "}", route.template)


def _operation(
    route: RestRoute, method: MethodDescriptor, index: ProtoIndex, schemas: Schemas
) -> Schema:
    request, response = method.input_type.full_name, method.output_type.full_name
    in_path = [field for _, field in route.variables]
    text = index.comment(method.full_name)
    operation: Schema = {
        "operationId": method.name,
        "summary": _first_sentence(text),
        "description": text,
        "tags": [SERVICE],
    }
    parameters = [_path_parameter(name, index, request, schemas) for name in in_path]
    if route.body != "*":
        query = _query(index, request, {*in_path, route.body})
        parameters += [_query_parameter(one, index, request, schemas) for one in query]
    if parameters:
        operation["parameters"] = parameters
    if route.body:
        operation["requestBody"] = _request_body(route.body, in_path, index, request, schemas)
    answer = _first_sentence(index.comment(response))
    operation["responses"] = {
        "200": _ok(answer, {_JSON: {"schema": schemas.ref(response, "output")}}),
        **_error_refs(_error_statuses(bool(in_path), bool(route.body))),
    }
    # Anonymous callers may make these RPCs unless [auth].anonymous says otherwise.
    operation["security"] = [{}, _BEARER] if method.name in RPC_NAMES else [_BEARER]
    return operation


def _field(index: ProtoIndex, message: str, path: str) -> descriptor_pb2.FieldDescriptorProto:
    """The field at a dotted ``path`` from ``message``."""
    *outer, last = path.split(".")
    for name in outer:
        message = _field(index, message, name).type_name.lstrip(".")
    [found] = [one for one in index.messages[message].field if one.name == last]
    return found


def _path_parameter(name: str, index: ProtoIndex, request: str, schemas: Schemas) -> Schema:
    one = _field(index, request, name)
    schema = schemas.field(one, "input")
    if one.type == _F.TYPE_STRING:
        schema = {**schema, "minLength": 1}  # an empty path segment matches no route
    described = index.comment(f"{request}.{name}")
    parameter = {"name": name, "in": "path", "required": True, "description": described}
    return parameter | {"schema": schema}


def _query(
    index: ProtoIndex, request: str, skip: set[str]
) -> Iterator[descriptor_pb2.FieldDescriptorProto]:
    """The request's fields sent as query parameters: all that are neither in
    the path nor the body. Only those a query string can carry are served."""
    for one in index.messages[request].field:
        if one.name in skip:
            continue
        type_name = one.type_name.lstrip(".")
        if one.type == _F.TYPE_MESSAGE and type_name not in _QUERY_MESSAGES:
            raise ValueError(f"{request}.{one.name}: a {type_name} cannot be a query parameter")
        yield one


def _query_parameter(
    one: descriptor_pb2.FieldDescriptorProto, index: ProtoIndex, request: str, schemas: Schemas
) -> Schema:
    # Every query value is text; the output form names the plain one
    # (a number, an enum value's name, "3600s").
    schema = schemas.field(one, "output")
    described = index.comment(f"{request}.{one.name}")
    return {"name": one.name, "in": "query", "description": described, "schema": schema}


def _request_body(
    body: str, in_path: list[str], index: ProtoIndex, request: str, schemas: Schemas
) -> Schema:
    if body != "*":
        schema = schemas.field(_field(index, request, body), "input")
        return {"required": True, "content": {_JSON: {"schema": schema}}}
    if not in_path:
        return {"required": True, "content": {_JSON: {"schema": schemas.ref(request, "input")}}}
    # The path holds some fields; the body may hold the others, or be empty.
    schema = schemas.message(request, "input", omit=in_path)
    schema["description"] = f"The request's fields other than {', '.join(in_path)} (in the path)."
    return {"required": bool(schema["properties"]), "content": {_JSON: {"schema": schema}}}


def _first_sentence(text: str) -> str:
    flat = " ".join(text.split())
    found = re.match(r"(.+?\.)(\s|$)", flat)
    return found[1] if found else flat


def _ok(description: str, content: dict[str, Any]) -> Schema:
    return {"description": description, "headers": _REQUEST_ID, "content": content}


def _error(code: int, description: str) -> Schema:
    return {
        "description": description,
        "headers": _REQUEST_ID | ERROR_HEADERS.get(code, {}),
        "content": {_JSON: {"schema": ref(STATUS)}},
    }


def _error_ref(code: int) -> Schema:
    return {"$ref": f"#/components/responses/Error{code}"}


# --- hand-described: what no descriptor says -------------------------------------


def _error_statuses(has_path_fields: bool, has_body: bool) -> list[int]:
    """The error statuses a route can answer: every route those of a
    malformed request, bad credentials, a limit, a fault and an unreachable
    ledger; a route with an id in its path NOT_FOUND; one with a body those
    of a body too large or not JSON."""
    codes = [400, 401]
    if has_path_fields:
        codes.append(404)
    if has_body:
        codes += [413, 415]
    return [*codes, 429, 500, 503]


#: Each error status of the HTTP door, with the gRPC codes (AIP-193) this
#: server answers with it. Its body is the ``google.rpc.Status``.
ERRORS: dict[int, str] = {
    400: "INVALID_ARGUMENT: the request is malformed (not JSON, not the request message's"
    " JSON form, or fields the server refuses: a google.rpc.BadRequest names each);"
    " or FAILED_PRECONDITION: the request cannot be done in the present state (an expired"
    " offer, OFFER_EXPIRED; too many outstanding offers; a site that takes no bookings).",
    401: "UNAUTHENTICATED: the operation needs credentials and has none, or those given"
    " are not valid (an unknown token, an expired JWT...).",
    404: "NOT_FOUND: no such offer or booking for this caller (another caller's are not"
    " found either).",
    413: "The request body is larger than the server reads.",
    415: "The request body is not of a media type the operation reads.",
    429: "RESOURCE_EXHAUSTED: over a rate limit, the failed-credentials limit or the"
    " server's concurrency limit; a google.rpc.RetryInfo says when asking again can work.",
    500: "INTERNAL: a fault on the server's side, logged with the request id.",
    503: "UNAVAILABLE: something the answer needs cannot be reached now (the booking"
    " ledger's database); a google.rpc.RetryInfo says when asking again can work.",
}

_RETRY_AFTER = {
    "description": "Seconds after which asking again can work (RetryInfo's delay, rounded up).",
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
#: The headers an error status carries beside x-request-id.
ERROR_HEADERS: dict[int, dict[str, Schema]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with: Bearer.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {"Retry-After": _RETRY_AFTER},
    503: {"Retry-After": _RETRY_AFTER},
}

_CONVENTIONS = """\
Each /v1 route is the google.api.http rule of an RPC, and its bodies are the \
proto3 JSON mapping of the RPC's messages \
(https://protobuf.dev/programming-guides/json/): written with the proto field \
names, fields at their default value left out, 64-bit integers as strings, \
enum values by name, times in RFC 3339, durations as "3600s"; read with the \
proto or the lowerCamelCase field names, integers as numbers or strings, enum \
values by name or number. An error is a google.rpc.Status (its code the gRPC \
code, its details a google.rpc.ErrorInfo and, where they apply, a \
google.rpc.BadRequest and a google.rpc.RetryInfo) under the HTTP status \
AIP-193 gives that code. Every answer to a /v1 route or the note's has an \
x-request-id header: the request's id in the server's logs."""

_REQUEST_ID_HEADER = {
    "description": "The request's id, as the server logs it.",
    "required": True,
    "schema": {"type": "string"},
}
_BEARER_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "A static token ([auth] tokens_file) or a JWT ([auth] jwks_file). Booking"
    " operations always need credentials; Ask and GetServiceInfo only when the site's"
    " [auth] anonymous leaves them out.",
}

_NOTE_TAG = "IVOA ExecutionPlanner note"
_NOTE_ABOUT = (
    "The interface of the IVOA ExecutionPlanner note: Ask's question and answer in the"
    " note's shape, through the same validation, limits and errors as the /v1 routes."
)
_NOTE_ERRORS = (400, 401, 429, 500, 503)
_ASK = "ivoa.ep.v1.AskRequest"
_OFFER = "ivoa.ep.v1.Offer"
_YAML = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def hand_described_paths(schemas: Schemas) -> dict[str, dict[str, Schema]]:
    """The routes no RPC annotates: the IVOA note's interface, the
    ExecutionBroker draft's (:mod:`~ep_server.http.openapi_broker`), this
    document and the operator's page. Their schemas join ``schemas``."""
    schemas.components |= _note_schemas(schemas) | openapi_broker.components()
    answer = {_JSON: {"schema": ref("IvoaNoteAnswer")}}
    note: Schema = {"tags": [_NOTE_TAG], "security": [{}, _BEARER]}
    question = schemas.ref(_ASK, "input")
    form = {
        "type": "object",
        "properties": {
            "tasktype": {"type": "string", "description": "The task type, an absolute URI."},
            "taskinfo": {"type": "string", "description": "The taskinfo, a JSON or YAML text."},
        },
        "additionalProperties": False,
    }
    bodies = {_JSON: question} | dict.fromkeys(_YAML, question) | dict.fromkeys(_FORMS, form)
    document = {_JSON: {"schema": {"type": "object"}}}
    page = {"text/html": {"schema": {"type": "string"}}}
    return {
        "/accepts": {
            "get": {
                "operationId": "Accepts",
                "summary": "Ask, with the question in the query string.",
                "description": "Query values are text: an integer in its plain form is read"
                " as a number and true/false as booleans; dotted names nest"
                ' (taskinfo.a.b=1 is {"a": {"b": 1}}); a name given twice is a list.',
                "parameters": [
                    _text_parameter("tasktype", "The task type, an absolute URI.", required=True),
                    _text_parameter(
                        "taskinfo",
                        "The whole taskinfo as a JSON object, or instead"
                        " one taskinfo.KEY=VALUE parameter per key.",
                    ),
                ],
                "responses": {"200": _ok("The note's answer.", answer)} | _error_refs(_NOTE_ERRORS),
                **note,
            }
        },
        "/accept": {
            "post": {
                "operationId": "Accept",
                "summary": "Ask, with the question in the body.",
                "description": "A JSON or YAML body is an AskRequest (tasktype and"
                " taskinfo, and resources or a schedule if wanted); a form has the fields"
                " tasktype and taskinfo.",
                "requestBody": {
                    "required": True,
                    "content": {kind: {"schema": schema} for kind, schema in bodies.items()},
                },
                "responses": {"200": _ok("The note's answer.", answer)}
                | _error_refs((*_NOTE_ERRORS, 413, 415)),
                **note,
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "OpenApi",
                "summary": "This document.",
                # Served as a file, outside the call pipeline: no request id.
                "responses": {"200": {"description": "This document.", "content": document}},
            }
        },
        "/": {
            "get": {
                "operationId": "Page",
                "summary": "The operator's page: the site at a glance.",
                "responses": {"200": {"description": "An HTML document.", "content": page}},
            }
        },
    } | openapi_broker.broker_paths(_ok, _error_refs)


def _note_schemas(schemas: Schemas) -> dict[str, Schema]:
    """The note's answer: the first offer's fields at the top, with the
    verdict twice (``responseword``, and ``reponseword`` as the note's
    examples spell it), the other offers under ``interfaces``, in the same
    shape, and ``reasons`` as in an AskResponse."""
    offer = schemas.message(_OFFER, "output")
    schemas.ref("ivoa.ep.v1.Reason", "output")
    word = {"type": "string", "enum": ["YES", "NO"]}
    interface = {**offer, "required": ["servicetype", "serviceinfo"]}
    interface["description"] = "An offer in the note's shape: " + offer.get("description", "")
    answer = {
        "type": "object",
        "description": "The note's answer to Ask's question.",
        "properties": {
            "responseword": {**word, "description": "YES or NO."},
            "reponseword": {**word, "description": "responseword again, as the note spells it."},
            **offer["properties"],
            "interfaces": {
                "type": "array",
                "items": ref("IvoaNoteInterface"),
                "description": "The other offers, in the site's order of preference.",
            },
            "reasons": {"type": "array", "items": ref("ivoa.ep.v1.Reason")},
        },
        "required": ["responseword", "reponseword", "interfaces"],
        "additionalProperties": False,
    }
    return {"IvoaNoteAnswer": answer, "IvoaNoteInterface": interface}


def _text_parameter(name: str, description: str, *, required: bool = False) -> Schema:
    parameter = {"name": name, "in": "query", "description": description}
    return parameter | {"required": required, "schema": {"type": "string"}}


def _error_refs(codes: Iterable[int]) -> dict[str, Schema]:
    return {str(code): _error_ref(code) for code in codes}
