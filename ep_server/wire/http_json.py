"""The HTTP door's edge: proto3 JSON in and out, errors as ``google.rpc.Status``.

Requests are built from a JSON body, the route's path variables and the
query string, as ``google.api.http`` rules say (AIP-127): the body (when the
rule names one) and the query parameters fill the message's fields by
protobuf's JSON mapping, so the proto field name and its lowerCamelCase JSON
name are both accepted, 64-bit integers as numbers or strings, enums by name
or number, and a field the message does not have is an error. Whatever
protobuf refuses becomes an :class:`~ep_server.errors.InvalidArgument`
naming the field, as gRPC's edge names it; the message built is then
validated by the same ``*_from_request`` functions as a gRPC request, so
nothing reaches a plugin that gRPC would have refused.

Responses are protobuf's JSON mapping with the proto field names
(``offer_id``, ``expire_time``: what Envoy's transcoder writes with
``preserve_proto_field_names`` and grpc-gateway v2 by default), fields at
their default value left out.

Errors are the JSON form of ``google.rpc.Status`` (``code`` is the gRPC
code's number, ``details`` the packed ErrorInfo, BadRequest, RetryInfo),
sent with the HTTP status AIP-193 maps the code to: what a client of the
same API behind Envoy's transcoder or grpc-gateway receives.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from ep_server.errors import EPError, FieldViolation, InvalidArgument
from ep_server.wire.proto_json import message_dict, parse_dict
from ep_server.wire.status import status_proto

__all__ = [
    "HTTP_STATUS",
    "JSON_DEPTH_SLACK",
    "error_json",
    "json_too_deep",
    "message_dict",
    "message_json",
    "request_from_http",
]

M = TypeVar("M", bound=Message)

#: The HTTP status of each gRPC code (AIP-193, as google.rpc.Code documents).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}

#: How much deeper than the taskinfo limit a JSON body may nest: the
#: deepest field outside taskinfo (``schedule.windows[0].start``) lies
#: four levels down.
JSON_DEPTH_SLACK = 4

#: What ``json.dumps(data, ensure_ascii=False, separators=(",", ":"))``
#: builds on every call, built once.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

_NESTED_FIELD = re.compile(r"Failed to parse (\w+) field: ")
_AT_PATH = re.compile(r" at (?:\w+\.)?([\w.\[\]]+?)\.*$")
_UNKNOWN_FIELD = re.compile(r'has no field named "([^"]*)" at "\w+(?:\.([\w.\[\]]+))?"')


def request_from_http(
    cls: type[M],
    what: str,
    body: bytes | None,
    path: Mapping[str, str],
    query: Sequence[tuple[str, str]],
    max_depth: int,
) -> M:
    """The ``cls`` request that ``body`` (JSON, None for a rule without a
    body), the path variables and the query parameters describe.

    :param what: the request's name in errors (``"AskRequest"``).
    :param max_depth: the deepest nesting a body may have (the taskinfo
        limit plus :data:`JSON_DEPTH_SLACK`), checked before protobuf's
        recursive parser sees it.
    :raises InvalidArgument: naming each field that cannot be read.
    """
    data: dict[str, Any] = {}
    depth = 1  # how deep data nests, at most
    if body is not None and body.strip():
        data = _json_object(what, body, max_depth)
        depth = max_depth
    for name, value in query:
        if name in path:
            raise InvalidArgument(what, [FieldViolation(name, "is set by the URL's path")])
        _set_dotted(data, name, value)
        depth = max(depth, name.count(".") + 1)
    for name, value in path.items():
        data[name] = value
    try:
        message = parse_dict(cls, data, depth)
    except json_format.ParseError as exc:
        raise InvalidArgument(what, [_violation(str(exc))]) from None
    except RecursionError:  # deeper than the check above let through
        raise InvalidArgument(what, [FieldViolation("", "is nested too deeply")]) from None
    except OverflowError:  # an integer no double holds, for a Struct's number
        found = FieldViolation(_huge_number(data), "is a number too large for a JSON number")
        raise InvalidArgument(what, [found]) from None
    return message


def _huge_number(data: dict[str, Any]) -> str:
    """The path of the first integer in ``data`` that no double holds
    (``taskinfo.n``, ``taskinfo.list[2]``), or "" when there is none."""
    stack: list[tuple[str, Any]] = [(str(key), value) for key, value in data.items()]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{key}", child) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", child) for i, child in enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                float(value)
            except OverflowError:
                return path
    return ""


def message_json(message: Message) -> bytes:
    """``message`` in protobuf's JSON mapping, with the proto field names:
    ``json.dumps(json_format.MessageToDict(message,
    preserving_proto_field_name=True), ensure_ascii=False,
    separators=(",", ":"))``, encoded, byte for byte, in a fraction of the
    time (see :mod:`ep_server.wire.proto_json`)."""
    return _ENCODER.encode(message_dict(message)).encode()


def error_json(exc: EPError) -> tuple[int, bytes]:
    """The HTTP status and the ``google.rpc.Status`` JSON body of ``exc``."""
    body = json_format.MessageToDict(status_proto(exc), preserving_proto_field_name=True)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return HTTP_STATUS.get(exc.code, 500), text


def _json_object(what: str, body: bytes, max_depth: int) -> dict[str, Any]:
    try:
        # UTF-8 only (RFC 8259), a byte order mark ignored: json.loads would
        # guess UTF-16 and UTF-32 from bytes.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(what, [FieldViolation("", f"is not UTF-8: {exc.reason}")]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        found = FieldViolation(
            "", f"is not valid JSON: {exc.msg} (line {exc.lineno} column {exc.colno})"
        )
        raise InvalidArgument(what, [found]) from None
    except ValueError as exc:  # an integer longer than Python converts (4300 digits)
        raise InvalidArgument(what, [FieldViolation("", f"is not valid JSON: {exc}")]) from None
    except RecursionError:  # deeper than json's parser goes: find under which field
        found = _depth_violation(_deep_key(text, max_depth), max_depth)
        raise InvalidArgument(what, [found]) from None
    if not isinstance(data, dict):
        found = FieldViolation("", f"must be a JSON object, not {type(data).__name__}")
        raise InvalidArgument(what, [found])
    deep = json_too_deep(data, max_depth)
    if deep is not None:
        raise InvalidArgument(what, [_depth_violation(deep, max_depth)])
    return data


def _depth_violation(deep: str, max_depth: int) -> FieldViolation:
    """What is wrong with a body nested past ``max_depth`` under its
    top-level field ``deep`` ("" when not under a field)."""
    if deep == "taskinfo":
        limit = max_depth - JSON_DEPTH_SLACK
        return FieldViolation("taskinfo", f"is nested deeper than {limit} levels")
    return FieldViolation(deep, "is nested too deeply")


#: A JSON string (with the colon after it when it is a key), or a bracket.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"\s*:?|[\[\]{}]')


def _deep_key(text: str, limit: int) -> str:
    """The top-level key under which the JSON ``text`` first nests more than
    ``limit`` levels, or "" (not under a key of a top-level object). A scan
    of strings and brackets, not a parse: ``text`` is too deep for
    :func:`json.loads`, and may be malformed too."""
    depth, key = 0, ""
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in ("{", "["):
            depth += 1
            if depth > limit:
                return key
        elif token in ("}", "]"):
            depth -= 1
        elif depth == 1 and token.endswith(":"):
            try:
                key = str(json.loads(token[:-1]))
            except ValueError:
                key = ""
    return ""


def json_too_deep(data: Any, limit: int) -> str | None:
    """The top-level key under which the JSON value ``data`` nests more than
    ``limit`` levels (the top level is 1; "" when the top is not an
    object), or None. Iterative: a body may be deeper than Python's
    recursion allows."""
    tops = data.items() if isinstance(data, dict) else [("", data)]
    for key, value in tops:
        stack: list[tuple[Any, int]] = [(value, 2 if isinstance(data, dict) else 1)]
        while stack:
            item, depth = stack.pop()
            if isinstance(item, dict):
                children: Any = item.values()
            elif isinstance(item, list):
                children = item
            else:
                continue
            if depth > limit:
                return str(key)
            stack.extend((child, depth + 1) for child in children)
    return None


def _set_dotted(data: dict[str, Any], name: str, value: str) -> None:
    """Set ``a.b.c=value`` from a query parameter; a repeated one becomes a
    list (for repeated fields; protobuf refuses it for single ones)."""
    *parents, leaf = name.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise InvalidArgument("query", [FieldViolation(name, "mixes a value and subfields")])
        node = child
    if leaf in node:
        previous = node[leaf]
        node[leaf] = [*previous, value] if isinstance(previous, list) else [previous, value]
    else:
        node[leaf] = value


def _violation(error: str) -> FieldViolation:
    """A :class:`FieldViolation` from protobuf's ParseError text, which names
    the field as a chain of "Failed to parse X field: " and, sometimes, a
    trailing "at Message.path"."""
    unknown = _UNKNOWN_FIELD.search(error)
    if unknown:
        name, parent = unknown.group(1), unknown.group(2)
        return FieldViolation(
            f"{parent}.{name}" if parent else name, "is not a field of this request"
        )
    names = _NESTED_FIELD.findall(error)
    detail = _NESTED_FIELD.sub("", error).split("\n")[0].rstrip(".")
    at = _AT_PATH.search(detail)
    if at:
        detail = detail[: at.start()]
        path = at.group(1)
    else:
        path = ".".join(names)
    return FieldViolation(path, detail.strip() or "cannot be parsed")
