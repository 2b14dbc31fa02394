"""The edge: protobuf messages in, plain objects out, and back.

This is the only module that reads or builds ``ivoa.ep.v1`` messages for
``Ask``; the planner and plugins never see protobuf. Decoding validates
every field and reports *all* problems at once as an
:class:`~ep_server.errors.InvalidArgument`.

Each taskinfo ``Struct`` is converted to Python values exactly once, in the
same walk that checks its depth and rejects NaN and infinities (which JSON,
and so the taskinfo's JSON form, cannot carry).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import struct_pb2
from google.protobuf.message import DecodeError

from ep_server.errors import FieldViolation, InvalidArgument
from ep_server.model import (
    ANONYMOUS,
    Booking,
    BookingState,
    Cause,
    Identity,
    IntRange,
    Resources,
    Schedule,
    Slot,
    TaskQuery,
    Window,
)
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.planner import Answer
from ep_server.schedule.ledger import HeldOffer
from ep_server.uri import uri_problem

__all__ = [
    "Limits",
    "Undecodable",
    "answer_to_proto",
    "booking_to_proto",
    "decode_ask",
    "query_from_request",
]

#: Longest reason message or field path sent; plugins' text is cut to it.
MAX_TEXT = 1000

_CAUSE = {
    Cause.REQUEST: pb.REASON_CAUSE_REQUEST,
    Cause.POLICY: pb.REASON_CAUSE_POLICY,
    Cause.CAPACITY: pb.REASON_CAUSE_CAPACITY,
    Cause.INTERNAL: pb.REASON_CAUSE_INTERNAL,
}


@dataclass(frozen=True, slots=True)
class Limits:
    """What a request may hold (from ``[server]`` in the config)."""

    max_taskinfo_bytes: int = 256 * 1024
    max_taskinfo_depth: int = 32
    #: Task types already known to be valid URIs (the claimed ones, checked
    #: at start-up), so the usual request skips the URI grammar.
    known_tasktypes: frozenset[str] = frozenset()
    #: Longest task duration a schedule may ask for.
    max_duration: timedelta = timedelta(days=366)
    #: Most start windows in one schedule.
    max_windows: int = 100


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A request whose bytes protobuf refused to decode. The handler, not
    gRPC, answers it, so the caller gets INVALID_ARGUMENT naming the field
    instead of UNKNOWN."""

    data: bytes
    error: str


def decode_ask(data: bytes) -> pb.AskRequest | Undecodable:
    """gRPC request deserializer for ``Ask`` that never raises.

    protobuf's decoder refuses messages nested past its recursion limit, and
    each level of a Struct costs it about three, so a taskinfo nested ~33
    levels deep fails here, before any handler could run.
    """
    try:
        request: pb.AskRequest = pb.AskRequest.FromString(data)
    except DecodeError as exc:
        return Undecodable(data, str(exc))
    return request


def query_from_request(
    request: pb.AskRequest | Undecodable, limits: Limits, identity: Identity = ANONYMOUS
) -> TaskQuery:
    """Validate an ``AskRequest`` and convert it to a :class:`TaskQuery`.

    :raises InvalidArgument: naming every bad field.
    """
    if isinstance(request, Undecodable):
        raise InvalidArgument("AskRequest", _diagnose(request, limits))
    bad: list[FieldViolation] = []
    if request.tasktype not in limits.known_tasktypes:
        _check_tasktype(request.tasktype, bad)
    taskinfo = _taskinfo(request, limits, bad)
    resources = _resources(request.resources, bad) if request.HasField("resources") else Resources()
    schedule = _schedule(request.schedule, limits, bad) if request.HasField("schedule") else None
    if bad:
        raise InvalidArgument("AskRequest", bad)
    return TaskQuery(request.tasktype, taskinfo, resources, identity, schedule)


def _check_tasktype(tasktype: str, bad: list[FieldViolation]) -> None:
    problem = uri_problem(tasktype)
    if problem:
        bad.append(FieldViolation("tasktype", problem))


def _taskinfo(request: pb.AskRequest, limits: Limits, bad: list[FieldViolation]) -> dict[str, Any]:
    if not request.HasField("taskinfo"):
        return {}
    return _struct(request.taskinfo, limits, bad)


def _struct(
    taskinfo: struct_pb2.Struct, limits: Limits, bad: list[FieldViolation]
) -> dict[str, Any]:
    size = taskinfo.ByteSize()
    if size > limits.max_taskinfo_bytes:
        bad.append(
            FieldViolation(
                "taskinfo",
                f"is {size} bytes encoded; this site accepts at most {limits.max_taskinfo_bytes}",
            )
        )
        return {}
    walker = _StructWalker(limits.max_taskinfo_depth)
    result = walker.struct(taskinfo, "taskinfo", 1)
    bad.extend(walker.bad)
    return result


class _StructWalker:
    """Converts a Struct to Python values, checking depth and numbers."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.bad: list[FieldViolation] = []

    def struct(self, msg: struct_pb2.Struct, path: str, depth: int) -> dict[str, Any]:
        if depth > self.max_depth:
            self._too_deep()
            return {}
        return {k: self.value(v, f"{path}.{k}", depth) for k, v in msg.fields.items()}

    def value(self, v: struct_pb2.Value, path: str, depth: int) -> Any:
        kind = v.WhichOneof("kind")
        if kind == "string_value":
            return v.string_value
        if kind == "number_value":
            number = v.number_value
            if not math.isfinite(number):
                self.bad.append(FieldViolation(path, f"{number} is not a JSON number"))
            return number
        if kind == "bool_value":
            return v.bool_value
        if kind == "struct_value":
            return self.struct(v.struct_value, path, depth + 1)
        if kind == "list_value":
            if depth + 1 > self.max_depth:
                self._too_deep()
                return []
            return [
                self.value(x, f"{path}[{i}]", depth + 1) for i, x in enumerate(v.list_value.values)
            ]
        return None  # null_value, or a Value with no kind set

    def _too_deep(self) -> None:
        if not any(b.field == "taskinfo" for b in self.bad):
            self.bad.append(
                FieldViolation("taskinfo", f"is nested deeper than {self.max_depth} levels")
            )


def _resources(res: pb.Resources, bad: list[FieldViolation]) -> Resources:
    return Resources(
        cores=_range(res, "cores", bad),
        memory=_range(res, "memory", bad),
    )


def _range(res: pb.Resources, name: str, bad: list[FieldViolation]) -> IntRange:
    if not res.HasField(name):
        return IntRange()
    msg = getattr(res, name)
    low = msg.min if msg.HasField("min") else None
    high = msg.max if msg.HasField("max") else None
    path = f"resources.{name}"
    for end, value in (("min", low), ("max", high)):
        if value is not None and value < 0:
            bad.append(FieldViolation(f"{path}.{end}", f"must not be negative, got {value}"))
    if low is not None and high is not None and 0 <= high < low:
        bad.append(FieldViolation(path, f"min ({low}) is greater than max ({high})"))
    return IntRange(low, high)


def _schedule(msg: pb.Schedule, limits: Limits, bad: list[FieldViolation]) -> Schedule | None:
    before = len(bad)
    windows = tuple(_windows(msg, limits, bad))
    low = _duration(msg, "min_duration", limits, bad, required=True)
    high = _duration(msg, "max_duration", limits, bad, required=False)
    if low is not None and high is not None and high < low:
        bad.append(FieldViolation("schedule.max_duration", "is shorter than min_duration"))
    if len(bad) > before or low is None:
        return None
    return Schedule(windows, low, high)


def _windows(msg: pb.Schedule, limits: Limits, bad: list[FieldViolation]) -> Iterator[Window]:
    if not msg.windows:
        bad.append(FieldViolation("schedule.windows", "needs at least one start window"))
    if len(msg.windows) > limits.max_windows:
        bad.append(FieldViolation("schedule.windows", f"at most {limits.max_windows} windows"))
        return
    for i, window in enumerate(msg.windows):
        path = f"schedule.windows[{i}]"
        start = _time(window, "start", path, bad)
        end = _time(window, "end", path, bad)
        if start is not None and end is not None:
            if end < start:
                bad.append(FieldViolation(f"{path}.end", "is before start"))
            else:
                yield Window(start, end)


def _time(msg: Any, name: str, path: str, bad: list[FieldViolation]) -> datetime | None:
    if not msg.HasField(name):
        bad.append(FieldViolation(f"{path}.{name}", "is required"))
        return None
    try:
        value: datetime = getattr(msg, name).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        bad.append(FieldViolation(f"{path}.{name}", "is not a valid timestamp"))
        return None
    return value


def _duration(
    msg: pb.Schedule, name: str, limits: Limits, bad: list[FieldViolation], required: bool
) -> timedelta | None:
    path = f"schedule.{name}"
    if not msg.HasField(name):
        if required:
            bad.append(FieldViolation(path, "is required"))
        return None
    field = getattr(msg, name)
    if field.seconds < 0 or field.nanos < 0 or (field.seconds == 0 and field.nanos == 0):
        bad.append(FieldViolation(path, "must be positive"))
        return None
    if field.seconds > limits.max_duration.total_seconds():
        bad.append(FieldViolation(path, f"must be at most {limits.max_duration.days} days"))
        return None
    value: timedelta = field.ToTimedelta()
    return value


# A view of AskRequest's wire format that does not recurse into taskinfo:
# fields 1-3 as raw bytes. Used only to explain a request protobuf refused.
_SHALLOW_FIELDS = {1: "tasktype", 2: "taskinfo", 3: "resources", 4: "schedule"}
_PARTS: dict[int, Any] = {2: struct_pb2.Struct, 3: pb.Resources, 4: pb.Schedule}


def _diagnose(request: Undecodable, limits: Limits) -> list[FieldViolation]:
    """Name what is wrong with a request protobuf refused: decode each
    top-level field on its own and validate what decodes, as for any
    request. If every part decodes alone, the whole failed on depth: the
    taskinfo, one level deeper inside AskRequest, is to blame."""
    try:
        fields = _shallow_fields(request.data)
    except ValueError:
        return [FieldViolation("", f"not a valid AskRequest: {request.error}")]
    bad: list[FieldViolation] = []
    try:
        _check_tasktype(fields.get(1, b"").decode("utf-8"), bad)
    except UnicodeDecodeError:
        bad.append(FieldViolation("tasktype", "is not valid UTF-8"))
    parts = {n: _decode_part(n, data, bad) for n, data in fields.items() if n in _PARTS}
    if parts.get(2) is not None:
        _struct(parts[2], limits, bad)
    if parts.get(3) is not None:
        _resources(parts[3], bad)
    if parts.get(4) is not None:
        _schedule(parts[4], limits, bad)
    if not bad and 2 in fields:
        bad.append(FieldViolation("taskinfo", _TOO_DEEP.format(limits.max_taskinfo_depth)))
    return bad or [FieldViolation("", f"not a valid AskRequest: {request.error}")]


_TOO_DEEP = (
    "could not be decoded: nested deeper than protobuf's decoder allows "
    "(this site accepts {} levels)"
)


def _decode_part(number: int, data: bytes, bad: list[FieldViolation]) -> Any:
    try:
        return _PARTS[number].FromString(data)
    except DecodeError:
        name = _SHALLOW_FIELDS[number]
        if number == 2:
            bad.append(FieldViolation(name, _TOO_DEEP.format(32) + " or malformed"))
        else:
            bad.append(FieldViolation(name, "could not be decoded"))
        return None


def _shallow_fields(data: bytes) -> dict[int, bytes]:
    """Split a message's top level into {field number: last value's bytes},
    keeping only length-delimited fields 1-3 and skipping the rest."""
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _varint(data, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            if number in _SHALLOW_FIELDS:
                fields[number] = data[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        if pos > len(data):
            raise ValueError("truncated message")
    return fields


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def answer_to_proto(answer: Answer) -> pb.AskResponse:
    """Build the ``AskResponse``. An offer whose serviceinfo cannot become a
    Struct is dropped with a PLUGIN_ERROR reason, never an RPC failure."""
    response = pb.AskResponse()
    offers, reasons = response.offers, response.reasons
    for held in answer.held:
        try:
            _held_offer(offers.add(), held)
        except (TypeError, ValueError, AttributeError) as exc:
            del offers[-1]
            reasons.add(
                code="PLUGIN_ERROR",
                plugin=held.candidate.plugin,
                cause=pb.REASON_CAUSE_INTERNAL,
                message=f"offer of {held.candidate.servicetype!r} is unusable: {exc}",
            )
    for plugin, offer in () if answer.held else answer.offers:
        # add() builds in place; append() would copy each offer once more.
        msg = offers.add(servicetype=offer.servicetype, plugin=plugin, message=offer.message)
        try:
            _fill_struct(msg.serviceinfo, offer.serviceinfo)
        except (TypeError, ValueError, AttributeError) as exc:
            del offers[-1]
            reasons.add(
                code="PLUGIN_ERROR",
                plugin=plugin,
                cause=pb.REASON_CAUSE_INTERNAL,
                message=f"offer of {offer.servicetype!r} has unusable serviceinfo: {exc}",
            )
            continue
        if offer.resources is not None:
            _set_resources(msg.resources, offer.resources)
    for plugin, reason in answer.reasons:
        reason_msg = reasons.add(
            code=reason.code,
            plugin=plugin,
            cause=_CAUSE.get(reason.cause, pb.REASON_CAUSE_UNSPECIFIED),
            retryable=reason.retryable,
            message=reason.message[:MAX_TEXT],
            field=reason.field[:MAX_TEXT],
        )
        if reason.earliest_slot is not None:
            _set_slot(reason_msg.earliest_slot, reason.earliest_slot)
    response.responseword = pb.YES if offers else pb.NO
    return response


def _held_offer(msg: pb.Offer, held: HeldOffer) -> None:
    candidate = held.candidate
    msg.servicetype = candidate.servicetype
    msg.plugin = candidate.plugin
    msg.id = held.id
    _fill_struct(msg.serviceinfo, candidate.serviceinfo)
    _set_slot(msg.slot, held.slot)
    msg.hold.update({pool: amount for pool, amount in candidate.need.items() if amount})
    need = candidate.need
    _set_resources(
        msg.resources,
        # A pool the offer holds nothing of is left out, as in ``hold``.
        Resources(_exact(need.get("cores") or None), _exact(need.get("memory") or None)),
    )
    if held.expire_time is not None:
        msg.expire_time.FromDatetime(held.expire_time)
    else:
        msg.message = "not held: ask with credentials for an offer you can accept"


def _exact(amount: int | None) -> IntRange:
    return IntRange(amount, amount)


def _set_slot(msg: pb.TimeSlot, slot: Slot) -> None:
    msg.start.FromDatetime(slot.start)
    msg.end.FromDatetime(slot.end)


_BOOKING_STATE = {
    BookingState.BOOKED: pb.BOOKING_STATE_BOOKED,
    BookingState.CANCELLED: pb.BOOKING_STATE_CANCELLED,
    BookingState.FINISHED: pb.BOOKING_STATE_FINISHED,
}


def booking_to_proto(booking: Booking) -> pb.Booking:
    """A :class:`Booking` as an ``ivoa.ep.v1.Booking``."""
    msg = pb.Booking(
        id=booking.id,
        offer_id=booking.offer_id,
        servicetype=booking.servicetype,
        state=_BOOKING_STATE[booking.state],
        owner=booking.owner,
        plugin=booking.plugin,
    )
    _fill_struct(msg.serviceinfo, booking.serviceinfo)
    _set_slot(msg.slot, booking.slot)
    msg.hold.update({pool: amount for pool, amount in booking.need.items() if amount})
    msg.create_time.FromDatetime(booking.create_time)
    return msg


def _fill_struct(target: struct_pb2.Struct, info: Mapping[str, Any]) -> None:
    """``Struct.update`` with a fast path for the usual flat string values."""
    if not isinstance(info, Mapping):
        raise TypeError(f"serviceinfo must be a mapping, not {type(info).__name__}")
    fields = target.fields
    for key, value in info.items():
        if type(value) is str:
            fields[key].string_value = value
        else:
            target.update({key: value})


def _set_resources(msg: pb.Resources, resources: Resources) -> None:
    for name in ("cores", "memory"):
        rng: IntRange = getattr(resources, name)
        if rng.min is None and rng.max is None:
            continue
        target = getattr(msg, name)
        target.SetInParent()
        if rng.min is not None:
            target.min = rng.min
        if rng.max is not None:
            target.max = rng.max
