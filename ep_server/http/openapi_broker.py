"""The ExecutionBroker draft's routes in the HTTP door's OpenAPI document
(hand-described: no RPC annotates them; see :mod:`ep_server.http.broker`).

Their schemas say what the door reads and writes, not the whole draft
(whose own schemas, with the differences from Calycopis's, are described in
``docs/executionbroker.md`` and checked by ``tests/executionbroker/``): a
request is an object whose known fields have the types read; an offer set
and a session have the fields always written, with the draft's names.
Answers are YAML unless the request's ``Accept`` names JSON and not YAML.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["TAG", "TAG_ABOUT", "broker_paths"]

Schema = dict[str, Any]

TAG = "IVOA ExecutionBroker draft"
TAG_ABOUT = (
    "The interface of the IVOA ExecutionBroker draft (and Calycopis's forms of it): an"
    " offer set is an Ask, its sessions the Ask's time-slot offers, an accepted session a"
    " booking. Answers are YAML unless Accept names JSON and not YAML; errors are"
    " google.rpc.Status JSON."
)
_ANSWER_TYPES = ("application/yaml", "application/json")
_REQUEST_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml",
                  "application/json")  # fmt: skip
_STATES = [
    "PROPOSED", "OFFERED", "ACCEPTED", "REJECTED", "EXPIRED", "WAITING", "PREPARING",
    "READY", "RUNNING", "RELEASING", "COMPLETED", "FAILED", "CANCELLED",
]  # fmt: skip
_STRING = {"type": "string"}
_OBJECT = {"type": "object"}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(required: list[str], **properties: Any) -> Schema:
    return {"type": "object", "required": required, "properties": properties}


def components() -> dict[str, Schema]:
    """The schemas of the draft's routes, by name."""
    message = _object(
        [],
        type=_STRING,
        time=_STRING,
        level={"type": "string", "enum": ["DEBUG", "WARN", "ERROR", "INFO", "OTHER"]},
        template=_STRING,
        values={"type": "object", "additionalProperties": _STRING},
        message=_STRING,
    )
    messages = {"type": "array", "items": _ref("EbMessage")}
    session = _object(
        ["uuid", "href", "created", "offerset", "state", "expires", "resources", "schedule"],
        uuid=_STRING,
        href=_STRING,
        name=_STRING,
        created=_STRING,
        messages=messages,
        offerset=_object(["uuid", "href"], uuid=_STRING, href=_STRING),
        state={"type": "string", "enum": _STATES},
        expires=_STRING,
        executable=_OBJECT,
        resources=_OBJECT,
        schedule=_OBJECT,
        options={"type": "array", "items": _OBJECT},
        service=_object(
            ["servicetype", "serviceinfo", "plugin"],
            servicetype=_STRING,
            serviceinfo=_OBJECT,
            plugin=_STRING,
        ),
    )
    offerset = _object(
        ["uuid", "href", "created", "expires", "result", "offers"],
        uuid=_STRING,
        href=_STRING,
        name=_STRING,
        created=_STRING,
        expires=_STRING,
        result={"type": "string", "enum": ["YES", "NO"]},
        messages=messages,
        offers={"type": "array", "items": _ref("EbSession")},
    )
    # A field given as null is read as absent (as clients that write every
    # field of their model send the ones not set).
    listed = {"type": ["array", "null"]}
    one_or_more = {"type": ["object", "array", "null"]}
    text = {"type": ["string", "null"]}
    anything = {"type": ["object", "null"]}
    request = {
        "type": "object",
        "description": "An execution request: the draft's OfferSetRequest or Calycopis's.",
        "properties": {
            "name": text,
            "executable": {**_object([], type=text, kind=text), "type": ["object", "null"]},
            "resources": {
                **_object([], compute=one_or_more, storage=listed, data=listed),
                "type": ["object", "null"],
            },
            "compute": one_or_more,
            "storage": listed,
            "volumes": listed,
            "data": listed,
            "schedule": {**_object([], requested=anything), "type": ["object", "null"]},
        },
    }
    change = _object([], type=_STRING, kind=_STRING, path=_STRING, value=_STRING)
    update = {
        "type": "object",
        "description": "The draft's {update: {type, path, value}}, or Calycopis's"
        " {kind, path, value}: an enum-value update of the state (or phase) to ACCEPTED,"
        " REJECTED or CANCELLED.",
        "properties": {"update": change, **change["properties"]},
    }
    return {
        "EbMessage": message,
        "EbSession": session,
        "EbOfferSet": offerset,
        "EbRequest": request,
        "EbUpdate": update,
    }


def broker_paths(
    ok: Callable[[str, dict[str, Any]], Schema], errors: Callable[[list[int]], dict[str, Schema]]
) -> dict[str, dict[str, Schema]]:
    """The draft's paths; ``ok`` and ``errors`` make the document's 200 and
    error responses."""
    tagged: Schema = {"tags": [TAG], "security": [_BEARER]}

    def answers(name: str) -> dict[str, Any]:
        return {kind: {"schema": _ref(name)} for kind in _ANSWER_TYPES}

    def body(name: str) -> Schema:
        content = {kind: {"schema": _ref(name)} for kind in _REQUEST_TYPES}
        return {"required": True, "content": content}

    redirect = {
        "description": "The offer set, made: its address in Location, and the offer set.",
        "headers": {
            "Location": {"required": True, "schema": _STRING},
            "x-request-id": {"$ref": "#/components/headers/x-request-id"},
        },
        "content": answers("EbOfferSet"),
    }
    create = {
        "summary": "Ask, in an execution request; the answer an offer set of sessions.",
        "description": "303 with the offer set at Location; 200 with Prefer:"
        " return=representation. A body of no stated type is read as YAML.",
        "requestBody": body("EbRequest"),
        "responses": {"303": redirect, "200": ok("The offer set.", answers("EbOfferSet"))}
        | errors([400, 401, 413, 415, 429, 500, 503]),
        **tagged,
    }
    uuid = [{"name": "uuid", "in": "path", "required": True, "schema": _STRING}]
    read_errors = errors([401, 404, 429, 500, 503])
    return {
        "/offersets": {"post": {"operationId": "OfferSetPost", **create}},
        "/requests": {"post": {"operationId": "OfferSetPost_requests", **create}},
        "/request": {"post": {"operationId": "OfferSetPost_request", **create}},
        "/offersets/{uuid}": {
            "get": {
                "operationId": "OfferSetGet",
                "summary": "An offer set of the caller's, its sessions' states read now.",
                "parameters": uuid,
                "responses": {"200": ok("The offer set.", answers("EbOfferSet"))} | read_errors,
                **tagged,
            }
        },
        "/sessions/{uuid}": {
            "get": {
                "operationId": "ExecutionSessionGet",
                "summary": "A session of the caller's, its state read now.",
                "parameters": uuid,
                "responses": {"200": ok("The session.", answers("EbSession"))} | read_errors,
                **tagged,
            },
            "post": {
                "operationId": "ExecutionSessionPost",
                "summary": "Accept, reject or cancel a session, by an update of its state.",
                "parameters": uuid,
                "requestBody": body("EbUpdate"),
                "responses": {"200": ok("The session.", answers("EbSession"))}
                | errors([400, 401, 404, 413, 415, 429, 500, 503]),
                **tagged,
            },
        },
    }


_BEARER: dict[str, list[str]] = {"bearer": []}
