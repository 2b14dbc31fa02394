"""The IVOA ExecutionBroker draft's routes: offer sets and sessions.

``POST /offersets`` (also ``/requests`` and the draft text's ``/request``)
takes an execution request in YAML or JSON and runs it as one ``Ask``
(:mod:`ep_server.http.broker_request`); the answer is remembered in the
ledger as an offer set of the caller's (:meth:`~ep_server.schedule.ledger.Ledger.save_offerset`)
and sent as ``303 See Other`` with ``Location: /offersets/{uuid}`` and the
offer set in the body, or ``200`` with ``Prefer: return=representation``.
``GET /offersets/{uuid}`` and ``GET /sessions/{uuid}`` read them again,
with each session's state read now
(:mod:`ep_server.http.broker_documents`); ``POST /sessions/{uuid}`` with
an enum-value update of the ``state`` (or ``phase``) books the session
(``ACCEPTED``: ``AcceptOffer``), releases it (``REJECTED``:
``RejectOffer``) or cancels its booking (``CANCELLED``: ``CancelBooking``).

Every one runs through the call pipeline under an RPC's name, so it has
that RPC's credentials, limits, metrics and log line: ``Ask`` for a new
offer set, ``GetBooking`` for the reads, the RPC an update maps to for an
update. Offer sets and sessions belong to the caller that made them:
another caller's is 404, and a new offer set needs credentials (401).

Answers are YAML unless the ``Accept`` header names JSON and not YAML (the
draft's default is YAML); errors are ``google.rpc.Status`` JSON, as
everywhere on the HTTP door.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml
from aiohttp import web

from ep_server.errors import (
    EPError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from ep_server.http.app import (
    PIPELINED,
    Door,
    HttpCall,
    UnsupportedMediaType,
    early_body,
    error_response,
    read_body_early,
)
from ep_server.http.bodies import YAML_TYPES, is_json, load_json, load_yaml
from ep_server.http.broker_documents import (
    offerset_document,
    session_document,
    session_state,
    stored_document,
    stored_id,
)
from ep_server.http.broker_request import WHAT, BrokerRequest, parse_time, read_request
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pipeline import REQUEST_ID_KEY, Call
from ep_server.planner import SCHEDULING_UNSUPPORTED
from ep_server.schedule.bookings import Bookings, owner_of
from ep_server.schedule.ledger import (
    OfferExpired,
    OfferFate,
    OfferNotFound,
    OfferSet,
    OfferSetNotFound,
)
from ep_server.wire import http_json

__all__ = ["UPDATE_TYPES", "broker_routes", "read_update"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The update types read: the draft's, and the draft text's ``urn:`` spelling.
UPDATE_TYPES = ("uri:enum-value-update", "urn:enum-value-update")
#: The paths an update of the state may name: the draft's and Calycopis's.
_STATE_PATHS = ("state", "/state", "phase", "/phase")
#: The state a client sets -> the RPC it runs.
_RPC_OF = {"ACCEPTED": "AcceptOffer", "REJECTED": "RejectOffer", "CANCELLED": "CancelBooking"}
#: States a client may name but never set (both spellings of each).
_KNOWN_STATES = (
    "PROPOSED", "INITIAL", "OFFERED", "EXPIRED", "WAITING", "PREPARING", "READY",
    "AVAILABLE", "RUNNING", "RELEASING", "COMPLETED", "FAILED",
)  # fmt: skip
_ACCEPT_ANSWERS = "application/yaml or application/json"
#: An update's body, parsed (or why it could not be).
_UPDATE_KEY = web.RequestKey("ep_broker_update", object)
_UPDATE = "UpdateRequest"


@dataclass(frozen=True, slots=True)
class _Read:
    """An offer set (and maybe one session of it) read for an answer."""

    record: OfferSet
    fates: Mapping[str, OfferFate]
    now: datetime
    session: str = ""
    accepted: bool = False


def broker_routes(door: Door) -> list[tuple[str, str, Handler]]:
    """The draft's routes: (method, path, handler)."""
    create = _handler(door, "Ask", _create_offerset)
    return [
        ("POST", "/offersets", create),
        ("POST", "/requests", create),
        ("POST", "/request", create),
        ("GET", "/offersets/{uuid}", _handler(door, "GetBooking", _read_offerset)),
        ("GET", "/sessions/{uuid}", _handler(door, "GetBooking", _read_session)),
        ("POST", "/sessions/{uuid}", _update_handler(door)),
    ]


Work = Callable[[Door, web.Request, Call], Awaitable[_Read]]


def _handler(door: Door, rpc: str, work: Work) -> Handler:
    async def run(request: web.Request, call: Call) -> _Read:
        return await work(door, request, call)

    async def handle(request: web.Request) -> web.StreamResponse:
        call = HttpCall(request, door.mtls)
        request[PIPELINED] = True
        if request.method == "POST":
            await read_body_early(request)
        try:
            read = await door.pipeline.run(rpc, call, run, request)
        except EPError as exc:
            return error_response(exc, call.request_id)
        return _answer(request, read, call.request_id, created=work is _create_offerset)

    handle.__name__ = work.__name__.lstrip("_")
    return handle


def _update_handler(door: Door) -> Handler:
    async def run(request: web.Request, call: Call) -> _Read:
        update = request[_UPDATE_KEY]
        if isinstance(update, EPError):
            raise update
        return await _update(door, request, call, read_update(update))

    async def handle(request: web.Request) -> web.StreamResponse:
        call = HttpCall(request, door.mtls)
        request[PIPELINED] = True
        # The body is read whole before the call is admitted, and parsed:
        # the state it sets names the RPC the call runs as (one that sets
        # none runs as AcceptOffer, and is refused in it).
        await read_body_early(request)
        try:
            request[_UPDATE_KEY] = update = _document(request, door, _UPDATE, "update")
        except EPError as exc:
            request[_UPDATE_KEY] = update = exc
        named = _named_state(update)
        rpc = _RPC_OF.get(named, "AcceptOffer") if isinstance(named, str) else "AcceptOffer"
        try:
            read = await door.pipeline.run(rpc, call, run, request)
        except EPError as exc:
            return error_response(exc, call.request_id)
        return _answer(request, read, call.request_id)

    handle.__name__ = "update_session"
    return handle


def _named_state(update: Any) -> Any:
    """The value an update sets, however well formed it is otherwise."""
    if isinstance(update, Mapping) and isinstance(update.get("update"), Mapping):
        update = update["update"]
    return update.get("value") if isinstance(update, Mapping) else None


# --- the work ----------------------------------------------------------------------


def _bookings(door: Door) -> Bookings:
    bookings = door.servicer.bookings
    if bookings is None:
        raise FailedPrecondition("this site takes no bookings", reason=SCHEDULING_UNSUPPORTED)
    return bookings


async def _create_offerset(door: Door, request: web.Request, call: Call) -> _Read:
    if call.identity.anonymous:
        raise Unauthenticated(
            "an offer set needs credentials (a bearer token, a JWT or a client certificate):"
            " it holds slots for whoever asked",
            reason="CREDENTIALS_REQUIRED",
        )
    bookings = _bookings(door)
    data = _document(request, door, WHAT, "executable")
    now = bookings.clock()
    asked = read_request(data, now)
    answer = {} if asked.refused else await _ask(door, asked, call)
    document = stored_document(asked, answer, now)
    ids = tuple(offer["id"] for offer in document["offers"])
    expires = max((parse_time(o["expires"]) for o in document["offers"]), default=now)
    record = OfferSet(uuid.uuid4().hex, owner_of(call.identity), now, expires, ids, document)
    await bookings.save_offerset(record)
    return _Read(record, {i: OfferFate(held=True) for i in ids}, now)


async def _ask(door: Door, asked: BrokerRequest, call: Call) -> dict[str, Any]:
    """The Ask the request stands for, answered; its errors name the
    request's fields rather than the Ask's."""
    body = json.dumps(asked.ask).encode()
    try:
        message = http_json.request_from_http(
            pb.AskRequest, "AskRequest", body, {}, [], door.max_json_depth + 1
        )
        response = await door.servicer.Ask(message, call)
    except InvalidArgument as exc:
        found = [FieldViolation(asked.request_path(v.field), v.description) for v in exc.violations]
        raise InvalidArgument(WHAT, found) from None
    answer: dict[str, Any] = http_json.message_dict(response)
    return answer


async def _read_offerset(door: Door, request: web.Request, call: Call) -> _Read:
    bookings = _bookings(door)
    named = request.match_info["uuid"]
    try:
        record = await bookings.offerset(stored_id(named), call.identity)
    except OfferSetNotFound:
        raise OfferSetNotFound(f"no offer set {named}") from None
    fates = await bookings.fates(record.offer_ids, call.identity)
    return _Read(record, fates, bookings.clock())


async def _read_session(door: Door, request: web.Request, call: Call) -> _Read:
    bookings = _bookings(door)
    named = request.match_info["uuid"]
    session = stored_id(named)
    try:
        record = await bookings.offerset_of(session, call.identity)
    except OfferSetNotFound:
        raise NotFound(f"no session {named}", reason="SESSION_NOT_FOUND") from None
    fates = await bookings.fates([session], call.identity)
    return _Read(record, fates, bookings.clock(), session)


async def _update(door: Door, request: web.Request, call: Call, value: str) -> _Read:
    read = await _read_session(door, request, call)
    session = read.session
    offer = next(o for o in read.record.document["offers"] if o["id"] == session)
    fate = read.fates[session]
    state = session_state(offer, fate, read.now)
    ids: dict[str, str] = {"offer_id": session}
    named = request.match_info["uuid"]
    if value == "ACCEPTED":
        if state == "EXPIRED":
            raise OfferExpired(f"session {named} expired at {offer['expires']}")
        if state == "REJECTED":
            raise _rejected(named)
        try:
            await door.servicer.AcceptOffer(_rpc_request(pb.AcceptOfferRequest, ids), call)
        except OfferNotFound:  # released since it was read: a sibling was accepted
            raise _rejected(named) from None
    elif value == "REJECTED" and state == "OFFERED":
        with contextlib.suppress(OfferNotFound):  # released since it was read
            await door.servicer.RejectOffer(_rpc_request(pb.RejectOfferRequest, ids), call)
    elif value == "REJECTED" and fate.booking is not None:
        raise FailedPrecondition(
            f"session is {state}; cancel it (state CANCELLED) instead",
            reason="SESSION_ACCEPTED",
        )
    elif value == "CANCELLED":
        if fate.booking is None:
            raise FailedPrecondition(
                f"session is {state}: only an accepted session can be cancelled"
                " (reject an offered one: state REJECTED)",
                reason="SESSION_NOT_ACCEPTED",
            )
        ids = {"booking_id": fate.booking.id}
        await door.servicer.CancelBooking(_rpc_request(pb.CancelBookingRequest, ids), call)
    bookings = _bookings(door)
    fates = await bookings.fates([session], call.identity)
    return _Read(read.record, fates, bookings.clock(), session, accepted=value == "ACCEPTED")


def _rejected(named: str) -> FailedPrecondition:
    return FailedPrecondition(f"session {named} was rejected", reason="SESSION_REJECTED")


def _rpc_request(cls: Any, ids: Mapping[str, str]) -> Any:
    return http_json.request_from_http(cls, cls.DESCRIPTOR.name, None, ids, [], 2)


# --- bodies in, answers out ----------------------------------------------------------


def _document(request: web.Request, door: Door, what: str, nested: str) -> Any:
    """The request's body (read before the call), JSON or YAML (YAML when
    the type is not stated, as the draft says)."""
    body = early_body(request)
    stated = request.headers.get("Content-Type", "")
    kind = request.content_type
    depth = door.max_json_depth + 1  # the executable's spec: one level deeper
    if stated and is_json(kind):
        return load_json(body, depth, what, nested)
    if not stated or kind in YAML_TYPES:
        return load_yaml(body, "", depth, what, nested)
    raise UnsupportedMediaType(what, kind, _ACCEPT_ANSWERS)


def read_update(data: Any) -> str:
    """The state an update sets: the draft's ``{update: {type, path,
    value}}`` or Calycopis's ``{kind, path, value}``.

    :raises InvalidArgument: for any other update, naming what is wrong.
    """
    prefix = ""
    if isinstance(data, Mapping) and "update" in data:
        data, prefix = data["update"], "update."
    if not isinstance(data, Mapping):
        raise InvalidArgument(_UPDATE, [FieldViolation(prefix.rstrip("."), "must be a mapping")])
    bad = []
    kind = data.get("type", data.get("kind"))
    if kind not in UPDATE_TYPES:
        bad.append(FieldViolation(f"{prefix}type", f"must be {UPDATE_TYPES[0]}"))
    if data.get("path") not in _STATE_PATHS:
        bad.append(FieldViolation(f"{prefix}path", "must be state (or phase): the one path set"))
    value = data.get("value")
    if not isinstance(value, str) or value not in _RPC_OF:
        known = " (a state the site sets)" if value in _KNOWN_STATES else ""
        text = f"must be ACCEPTED, REJECTED or CANCELLED, not {value!r}{known}"
        bad.append(FieldViolation(f"{prefix}value", text))
    if bad:
        raise InvalidArgument(_UPDATE, bad)
    return str(value)


def _answer(
    request: web.Request, read: _Read, request_id: str, created: bool = False
) -> web.Response:
    base = str(request.url.origin())
    if read.session:
        fate = read.fates.get(read.session, OfferFate())
        data = session_document(read.record, read.session, fate, read.now, base, read.accepted)
    else:
        data = offerset_document(read.record, read.fates, read.now, base)
    status = 200
    if created and "return=representation" not in request.headers.get("Prefer", ""):
        status = 303
    response = _encoded(request, data, status)
    if created:
        response.headers["Location"] = f"/offersets/{data['uuid']}"
        response.headers["Content-Location"] = f"/offersets/{data['uuid']}"
    if request_id:
        response.headers[REQUEST_ID_KEY] = request_id
    return response


def _encoded(request: web.Request, data: Any, status: int) -> web.Response:
    """``data`` in YAML, or in JSON when ``Accept`` names JSON and not YAML."""
    named = [
        part.split(";")[0].strip().lower()
        for part in request.headers.get("Accept", "").split(",")
        if part.strip()
    ]
    if any(is_json(t) for t in named) and not any(t in YAML_TYPES for t in named):
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
        return web.Response(body=body, status=status, content_type="application/json")
    text = yaml.dump(data, Dumper=_PlainDumper, sort_keys=False, allow_unicode=True)
    return web.Response(text=text, status=status, content_type="application/yaml")


class _PlainDumper(yaml.SafeDumper):
    """The safe dumper writing a value shared by two places twice, never as
    an anchor and an alias (which this door itself refuses to read, as many
    clients do)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True
