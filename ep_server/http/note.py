"""The IVOA ExecutionPlanner note's own interface: ``GET /accepts`` and ``POST /accept``.

The note's clients ask with a task type and a taskinfo, and read back a
flat answer::

    GET /accepts?tasktype=uri://docker-container&taskinfo.image=docker.io/example:1.0

    {"responseword": "YES", "reponseword": "YES",
     "servicetype": "uri://docker-uws",
     "serviceinfo": {"endpoint": "http://example.org/dkuws"},
     "interfaces": []}

``POST /accept`` takes the same question as a body: JSON, YAML, or a form
(``multipart/form-data`` or ``application/x-www-form-urlencoded``) with the
fields ``tasktype`` and ``taskinfo`` (the taskinfo a JSON or YAML text). A
JSON or YAML body may carry any field of ``AskRequest`` (``resources``,
``schedule``) beside those two.

Both run the ``Ask`` RPC itself, through the same pipeline: the same
validation, plugins, limits, metrics and errors (``google.rpc.Status``
JSON, as on the ``/v1`` routes).

The answer: the first offer's ``servicetype`` and ``serviceinfo`` at the
top, with its ``resources``, ``plugin`` and ``message`` where set; the
other offers, in the site's order of preference, under ``interfaces``, each
in the same shape; ``reasons`` as in ``AskResponse``. The verdict is
written twice: ``responseword``, the protocol's spelling, and
``reponseword``, the spelling of the note's examples that the clients built
from it read. Where the client reads a verdict
(:func:`ep_server.client.note.verdict`), both are accepted.

Query values are text. ``taskinfo.cores=4`` is read as the number 4 and
``true``/``false`` as booleans (integers only in their plain form:
``007`` and ``1.10`` stay text, so no value is silently changed); dotted
names nest (``taskinfo.a.b=1`` is ``{"a": {"b": 1}}``), a name given twice
is a list, and ``taskinfo={...}`` gives the whole taskinfo as JSON.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import re
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from ep_server.errors import EPError, FieldViolation, InvalidArgument
from ep_server.http.app import (
    PIPELINED,
    Door,
    HttpCall,
    UnsupportedMediaType,
    early_body,
    error_response,
    json_response,
    read_body_early,
)
from ep_server.http.bodies import YAML_TYPES, as_json, is_json, load_yaml
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pipeline import Call
from ep_server.wire import http_json

__all__ = [
    "RESPONSE_WORD_KEYS",
    "note_answer",
    "note_routes",
    "taskinfo_from_query",
]

#: The keys a verdict may be read from: the protocol's spelling, and the
#: note's examples' (which its clients read and write).
RESPONSE_WORD_KEYS = ("responseword", "reponseword")

_WHAT = "AskRequest"
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_ACCEPTED = "application/json, application/yaml, multipart/form-data or a url-encoded form"
#: Largest text part of a form read (the body limit bounds the whole).
_PART_LIMIT = 4 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def note_answer(response: dict[str, Any]) -> dict[str, Any]:
    """The note's answer shape from an ``AskResponse`` in JSON (proto names)."""
    word = response.get("responseword", "NO")
    answer: dict[str, Any] = {"responseword": word, "reponseword": word}
    offers = [_interface(offer) for offer in response.get("offers", ())]
    if offers:
        answer.update(offers[0])
    answer["interfaces"] = offers[1:]
    if response.get("reasons"):
        answer["reasons"] = response["reasons"]
    return answer


def _interface(offer: dict[str, Any]) -> dict[str, Any]:
    shaped = {
        "servicetype": offer.get("servicetype", ""),
        "serviceinfo": offer.get("serviceinfo", {}),
    }
    for key in ("resources", "plugin", "message", "id", "expire_time", "slot", "hold"):
        if key in offer:
            shaped[key] = offer[key]
    return shaped


def taskinfo_from_query(pairs: list[tuple[str, str]]) -> tuple[str | None, dict[str, Any]]:
    """The task type and the taskinfo of ``/accepts``'s query parameters.

    :raises InvalidArgument: for a parameter that is neither, a taskinfo
        given both whole and by keys, or a JSON taskinfo that is not an object.
    """
    tasktype: str | None = None
    whole: dict[str, Any] | None = None
    taskinfo: dict[str, Any] = {}
    bad: list[FieldViolation] = []
    for name, value in pairs:
        if name == "tasktype":
            if tasktype is not None:
                bad.append(FieldViolation("tasktype", "is given more than once"))
            tasktype = value
        elif name == "taskinfo":
            whole = _json_taskinfo(value, bad)
        elif name.startswith("taskinfo."):
            _put(taskinfo, name, name.removeprefix("taskinfo.").split("."), _scalar(value), bad)
        else:
            bad.append(
                FieldViolation(name, "is not a parameter of /accepts (tasktype, taskinfo.*)")
            )
    if whole is not None and taskinfo:
        bad.append(FieldViolation("taskinfo", "is given both whole and by keys"))
    if bad:
        raise InvalidArgument(_WHAT, bad)
    return tasktype, whole if whole is not None else taskinfo


def _scalar(text: str) -> Any:
    if _INTEGER.fullmatch(text):
        return int(text)
    return {"true": True, "false": False}.get(text, text)


def _put(
    node: dict[str, Any], name: str, path: list[str], value: Any, bad: list[FieldViolation]
) -> None:
    if any(not part for part in path):
        bad.append(FieldViolation(name, "has an empty key"))
        return
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            bad.append(FieldViolation(name, "gives both a value and keys inside it"))
            return
        node = child
    leaf = path[-1]
    if leaf not in node:
        node[leaf] = value
    elif isinstance(node[leaf], dict):
        bad.append(FieldViolation(name, "gives both a value and keys inside it"))
    elif isinstance(node[leaf], list):
        node[leaf].append(value)
    else:
        node[leaf] = [node[leaf], value]


def _json_taskinfo(text: str, bad: list[FieldViolation]) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        bad.append(FieldViolation("taskinfo", f"is not a JSON object: {exc}"))
        return None
    if not isinstance(value, dict):
        bad.append(FieldViolation("taskinfo", "must be a JSON object"))
        return None
    return value


def _yaml(text: bytes | str, field: str, max_depth: int) -> Any:
    return load_yaml(text, field, max_depth, _WHAT)


def _question(kind: str, content_type: str, body: bytes, depth: int) -> bytes:
    """``POST /accept``'s body, whatever form it came in, as a JSON AskRequest.

    :param kind: the body's media type (``application/yaml``).
    :param content_type: the whole Content-Type header (with its boundary).
    :param depth: the deepest a body may nest (its top level is 1).
    """
    if kind in _FORM_TYPES:
        return _form(kind, content_type, body, depth)
    if is_json(kind) or (not kind and not body):
        return body
    if kind in YAML_TYPES:
        data = _yaml(body, "", depth)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            found = FieldViolation("", "must be a YAML mapping of tasktype and taskinfo")
            raise InvalidArgument(_WHAT, [found])
        return _as_json(data, "")
    raise UnsupportedMediaType(_WHAT, kind, _ACCEPTED)


def _form(kind: str, content_type: str, body: bytes, depth: int) -> bytes:
    """A form's ``tasktype`` and ``taskinfo`` (JSON or YAML text) as JSON."""
    fields: dict[str, str] = {}
    bad: list[FieldViolation] = []
    if kind == "multipart/form-data":
        for name, text in _multipart(content_type, body):
            _form_field(fields, name, text, bad)
    else:
        try:
            pairs = urllib.parse.parse_qsl(
                body.decode(), keep_blank_values=True, strict_parsing=bool(body)
            )
        except (UnicodeDecodeError, ValueError) as exc:
            found = FieldViolation("", f"is not a readable url-encoded form: {exc}")
            raise InvalidArgument(_WHAT, [found]) from None
        for name, value in pairs:
            _form_field(fields, name, value, bad)
    if bad:
        raise InvalidArgument(_WHAT, bad)
    data: dict[str, Any] = {}
    if "tasktype" in fields:
        data["tasktype"] = fields["tasktype"]
    if "taskinfo" in fields:
        # JSON is YAML too; the form's taskinfo is the taskinfo's top level.
        data["taskinfo"] = _yaml(fields["taskinfo"], "taskinfo", depth - http_json.JSON_DEPTH_SLACK)
    return _as_json(data, "taskinfo")


def _multipart(content_type: str, body: bytes) -> list[tuple[str, str]]:
    """The (name, text) of each part of a multipart/form-data body, read by
    the standard library's MIME parser from the body already read whole."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise InvalidArgument(_WHAT, [FieldViolation("", "is not a readable multipart form")])
    parts = []
    try:
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or part.is_multipart():
                found = FieldViolation("", "holds a part without a name, or nested parts")
                raise InvalidArgument(_WHAT, [found])
            payload = part.get_payload(decode=True)
            charset = part.get_content_charset() or "utf-8"
            text = payload.decode(charset) if isinstance(payload, bytes) else ""
            parts.append((name, text))
    except (LookupError, UnicodeDecodeError, ValueError) as exc:
        found = FieldViolation("", f"is not a readable multipart form: {exc}")
        raise InvalidArgument(_WHAT, [found]) from None
    if not parts:
        raise InvalidArgument(_WHAT, [FieldViolation("", "is a multipart form with no parts")])
    return parts


def _form_field(fields: dict[str, str], name: str, text: str, bad: list[FieldViolation]) -> None:
    if name not in ("tasktype", "taskinfo"):
        bad.append(FieldViolation(name, "is not a field of /accept's form (tasktype, taskinfo)"))
    elif name in fields:
        bad.append(FieldViolation(name, "is given more than once"))
    else:
        fields[name] = text


def _as_json(data: Any, field: str) -> bytes:
    return as_json(data, field, _WHAT)


def note_routes(door: Door) -> list[tuple[str, str, Handler]]:
    """The note's routes: (method, path, handler)."""
    ask = door.servicer.Ask
    pipeline = door.pipeline
    depth = door.max_json_depth

    async def accepts(request: web.Request, call: Call) -> Any:
        tasktype, taskinfo = taskinfo_from_query(list(request.query.items()))
        data: dict[str, Any] = {"taskinfo": taskinfo}
        if tasktype is not None:
            data["tasktype"] = tasktype
        body = _as_json(data, "taskinfo")
        message = http_json.request_from_http(pb.AskRequest, _WHAT, body, {}, [], depth)
        return await ask(message, call)

    async def accept(request: web.Request, call: Call) -> Any:
        body = early_body(request)
        if request.query:
            found = [
                FieldViolation(name, "is not read: POST /accept takes its question from the body")
                for name in request.query
            ]
            raise InvalidArgument(_WHAT, found)
        kind, header = request.content_type, request.headers.get("Content-Type", "")
        question = _question(kind if request.body_exists else "", header, body, depth)
        message = http_json.request_from_http(pb.AskRequest, _WHAT, question, {}, [], depth)
        return await ask(message, call)

    def handler(run: Callable[[web.Request, Call], Awaitable[Any]]) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            call = HttpCall(request, door.mtls)
            request[PIPELINED] = True
            if request.method == "POST":
                await read_body_early(request)
            try:
                response = await pipeline.run("Ask", call, run, request)
            except EPError as exc:
                return error_response(exc, call.request_id)
            answer = note_answer(http_json.message_dict(response))
            return json_response(_dumps(answer), call.request_id)

        handle.__name__ = run.__name__
        return handle

    return [("GET", "/accepts", handler(accepts)), ("POST", "/accept", handler(accept))]


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
