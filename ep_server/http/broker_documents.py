"""ExecutionBroker documents: offer sets and sessions, in the draft's form.

An offer set is one Ask: its ``result`` is the verdict, its ``offers`` the
Ask's time-slot offers, each a session. What is stored of it
(:func:`stored_document`) is plain JSON without links or states; what is
sent (:func:`offerset_document`, :func:`session_document`) adds the links
(from the request's base URL) and each session's state, read now:

=====================================  =========
What has become of the offer           ``state``
=====================================  =========
held (unexpired, not yet accepted)     OFFERED
booked, just now by this update        ACCEPTED
booked, its slot not yet started       WAITING
booked, its slot under way             READY
booked, its slot over                  COMPLETED
booked, then cancelled                 CANCELLED
gone before its expiry                 REJECTED
gone, and past its expiry              EXPIRED
=====================================  =========

(Rejected by the client, or released when a sibling was accepted: the
draft says the others of an offer set become REJECTED.)
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from ep_server.http.broker_request import (
    SIMPLE_COMPUTE,
    BrokerRequest,
    Note,
    format_duration,
    parse_time,
)
from ep_server.model import BookingState
from ep_server.schedule.ledger import OfferFate, OfferSet

__all__ = [
    "ENUM_OPTION",
    "SETTABLE",
    "message_item",
    "offerset_document",
    "public_id",
    "session_document",
    "session_state",
    "stored_document",
    "stored_id",
]

GIB = 2**30
#: The option type of a settable state, as the draft's text writes it.
ENUM_OPTION = "uri:enum-value-option"
#: The states a client may set, by the state a session is in.
SETTABLE: Mapping[str, tuple[str, ...]] = {
    "OFFERED": ("ACCEPTED", "REJECTED"),
    "ACCEPTED": ("CANCELLED",),
    "WAITING": ("CANCELLED",),
    "READY": ("CANCELLED",),
}
_LEVEL = {"ERROR": "ERROR", "WARN": "WARN", "INFO": "INFO"}


def public_id(stored: str) -> str:
    """An id as the draft writes it (a UUID with its dashes) when it is a
    UUID's hex, else as it is."""
    try:
        return str(uuid.UUID(hex=stored))
    except ValueError:
        return stored


def stored_id(public: str) -> str:
    """The stored form of an id from a URL: a UUID in any spelling as its
    hex, anything else as it is."""
    try:
        return uuid.UUID(public).hex
    except ValueError:
        return public


def message_item(note: Note, when: datetime, plugin: str = "") -> dict[str, Any]:
    """A draft ``MessageItem``: the text as ``message`` (and, braces
    escaped, as the ``template``), the code and the path among ``values``."""
    values = {"code": note.code}
    if note.path:
        values["path"] = note.path
    if plugin:
        values["plugin"] = plugin
    return {
        "type": f"uri:ep-reason:{note.code}",
        "time": _rfc3339(when),
        "level": _LEVEL.get(note.level, "OTHER"),
        "template": note.text.replace("{", "{{").replace("}", "}}"),
        "values": values,
        "message": note.text,
    }


def stored_document(
    request: BrokerRequest, answer: Mapping[str, Any], now: datetime
) -> dict[str, Any]:
    """What is remembered of an offer set: the request's echo, the verdict,
    the messages, and each offer (with an id) as the session will show it.

    :param answer: the ``AskResponse`` as proto3 JSON (proto field names),
        or empty when the request was refused without asking.
    """
    offers = [_offer(o) for o in answer.get("offers", ()) if o.get("id")]
    # A reason is why not; beside offers, it is why not some other way.
    level = "WARN" if offers else "ERROR"
    messages = [message_item(n, now) for n in request.notes]
    for reason in answer.get("reasons", ()):
        path = request.request_path(reason.get("field", ""))
        note = Note(level, reason.get("code", ""), path, reason.get("message", ""))
        messages.append(message_item(note, now, reason.get("plugin", "")))
    return {
        "request": request.echo,
        "result": "YES" if offers else "NO",
        "messages": messages,
        "offers": offers,
    }


def _offer(offer: Mapping[str, Any]) -> dict[str, Any]:
    slot = offer.get("slot", {})
    resources = offer.get("resources", {})
    return {
        "id": offer["id"],
        "expires": offer.get("expire_time", ""),
        "start": slot.get("start", ""),
        "end": slot.get("end", ""),
        "cores": _ints(resources.get("cores", {})),
        "memory": _ints(resources.get("memory", {})),
        "servicetype": offer.get("servicetype", ""),
        "serviceinfo": offer.get("serviceinfo", {}),
        "plugin": offer.get("plugin", ""),
        "message": offer.get("message", ""),
    }


def _ints(ranged: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(v) for k, v in ranged.items() if k in ("min", "max")}


def session_state(
    offer: Mapping[str, Any], fate: OfferFate, now: datetime, accepted: bool = False
) -> str:
    """A session's state, read now (see the module's table)."""
    booking = fate.booking
    if booking is not None:
        if booking.state is BookingState.CANCELLED:
            return "CANCELLED"
        if booking.state is BookingState.FINISHED or booking.slot.end <= now:
            return "COMPLETED"
        if accepted:
            return "ACCEPTED"
        return "WAITING" if now < booking.slot.start else "READY"
    if fate.held:
        return "OFFERED"
    return "EXPIRED" if now >= parse_time(offer["expires"]) else "REJECTED"


def offerset_document(
    record: OfferSet, fates: Mapping[str, OfferFate], now: datetime, base: str
) -> dict[str, Any]:
    """An offer set as the draft's ``OfferSetResponse``."""
    document = record.document
    out: dict[str, Any] = {
        "uuid": public_id(record.id),
        "href": f"{base}/offersets/{public_id(record.id)}",
    }
    if "name" in document["request"]:
        out["name"] = document["request"]["name"]
    out["created"] = _rfc3339(record.create_time)
    out["expires"] = _rfc3339(record.expire_time)
    out["result"] = document["result"]
    if document["messages"]:
        out["messages"] = list(document["messages"])
    out["offers"] = [
        _session(record, offer, fates.get(offer["id"], OfferFate()), now, base)
        for offer in document["offers"]
    ]
    return out


def session_document(
    record: OfferSet,
    offer_id: str,
    fate: OfferFate,
    now: datetime,
    base: str,
    accepted: bool = False,
) -> dict[str, Any]:
    """One session of an offer set as the draft's ``ExecutionSessionResponse``."""
    offer = next(o for o in record.document["offers"] if o["id"] == offer_id)
    return _session(record, offer, fate, now, base, accepted)


def _session(
    record: OfferSet,
    offer: Mapping[str, Any],
    fate: OfferFate,
    now: datetime,
    base: str,
    accepted: bool = False,
) -> dict[str, Any]:
    request = record.document["request"]
    state = session_state(offer, fate, now, accepted)
    sid, oid = public_id(offer["id"]), public_id(record.id)
    out: dict[str, Any] = {"uuid": sid, "href": f"{base}/sessions/{sid}"}
    if "name" in request:
        out["name"] = request["name"]
    out["created"] = _rfc3339(record.create_time)
    if offer.get("message"):
        note = Note("INFO", "OFFER_NOTE", "", offer["message"])
        out["messages"] = [message_item(note, record.create_time, offer.get("plugin", ""))]
    out["offerset"] = {"uuid": oid, "href": f"{base}/offersets/{oid}"}
    out["state"] = state
    out["expires"] = offer["expires"]
    if "executable" in request:
        out["executable"] = request["executable"]
    out["resources"] = {"compute": [_compute(request, offer)]}
    out["schedule"] = _schedule(request, offer)
    if state in SETTABLE:
        out["options"] = [{"type": ENUM_OPTION, "path": "state", "values": list(SETTABLE[state])}]
    out["service"] = {
        "servicetype": offer["servicetype"],
        "serviceinfo": offer["serviceinfo"],
        "plugin": offer["plugin"],
    }
    return out


def _compute(request: Mapping[str, Any], offer: Mapping[str, Any]) -> dict[str, Any]:
    asked: Sequence[Mapping[str, Any]] = request.get("resources", {}).get("compute", [{}])
    compute = dict(asked[0]) if asked else {}
    compute.setdefault("type", SIMPLE_COMPUTE)
    for name, unit in (("cores", 1), ("memory", GIB)):
        ranged = {k: v // unit for k, v in offer[name].items()}
        if ranged:
            compute[name] = {**compute.get(name, {}), "offered": ranged}
    return compute


def _schedule(request: Mapping[str, Any], offer: Mapping[str, Any]) -> dict[str, Any]:
    start, end = parse_time(offer["start"]), parse_time(offer["end"])
    return {
        "requested": request.get("schedule", {}).get("requested", {}),
        "executing": {
            "start": f"{_rfc3339(start)}/PT0S",
            "duration": format_duration(end - start),
        },
    }


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
