"""Requests: protobuf in, plain objects out, every field validated.

Decoding reports *all* problems of a request at once as an
:class:`~ep_server.errors.InvalidArgument`. Requests protobuf refused to
decode arrive as :class:`Undecodable` (from :func:`decoder`, the one
deserializer of every RPC), so that the caller gets INVALID_ARGUMENT naming
the field rather than gRPC's bare UNKNOWN; each ``*_from_request`` function
turns one into that error (:mod:`~ep_server.wire.undecodable` explains
what is wrong with the bytes).

Each taskinfo ``Struct`` is converted to Python values in one walk that also
checks its depth and rejects NaN and infinities (which JSON, and so the
taskinfo's JSON form, cannot carry). That walk builds no field paths: only
when it meets a bad value does a second walk (:class:`_StructWalker`) name
every bad field. The other fields' paths, too, are built only for a field
that is wrong.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from google.protobuf import struct_pb2
from google.protobuf.message import Message

from ep_server.errors import FieldViolation, InvalidArgument
from ep_server.model import (
    ANONYMOUS,
    MAX_TASKINFO_DEPTH,
    Identity,
    IntRange,
    Resources,
    Schedule,
    TaskQuery,
    Window,
)
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.uri import uri_problem
from ep_server.wire.undecodable import diagnose

__all__ = [
    "MAX_PAGE_SIZE",
    "PAGE_SIZE",
    "Limits",
    "Undecodable",
    "bookings_page_from_request",
    "decoder",
    "id_from_request",
    "info_request_checked",
    "query_from_request",
]

M = TypeVar("M", bound=Message)


@dataclass(frozen=True, slots=True)
class Limits:
    """What a request may hold (from ``[server]`` in the config)."""

    max_taskinfo_bytes: int = 256 * 1024
    max_taskinfo_depth: int = MAX_TASKINFO_DEPTH
    #: Task types already known to be valid URIs (the claimed ones, checked
    #: at start-up), so the usual request skips the URI grammar.
    known_tasktypes: frozenset[str] = frozenset()
    #: Longest task duration a schedule may ask for.
    max_duration: timedelta = timedelta(days=366)
    #: Most start windows in one schedule.
    max_windows: int = 100


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A request whose bytes protobuf refused to decode."""

    #: The request message's name (``"AskRequest"``).
    message: str
    data: bytes
    error: str


def decoder(cls: type[M]) -> Callable[[bytes], M | Undecodable]:
    """The request deserializer for messages of ``cls``: never raises.

    protobuf's decoder refuses messages nested past its recursion limit
    (each level of a Struct costs it about three), so a taskinfo nested ~33
    levels deep fails here, before any handler could run; the handler then
    answers INVALID_ARGUMENT naming the field, where gRPC would say UNKNOWN.
    """
    parse, name = cls.FromString, cls.DESCRIPTOR.name

    def decode(data: bytes) -> M | Undecodable:
        try:
            return parse(data)
        except Exception as exc:  # DecodeError, and anything else protobuf raises
            return Undecodable(name, data, str(exc))

    return decode


def _decoded(request: M | Undecodable, limits: Limits | None = None) -> M:
    """``request``, unless protobuf could not decode it: then the
    INVALID_ARGUMENT that says why (for an Ask, naming each bad field)."""
    if isinstance(request, Undecodable):
        if request.message == "AskRequest":
            limits = limits or Limits()
            validators = _ask_validators(limits)
            found = diagnose(request.data, request.error, validators, limits.max_taskinfo_depth)
        else:
            found = [FieldViolation("", f"undecodable: {request.error}")]
        raise InvalidArgument(request.message, found)
    return request


def query_from_request(
    request: pb.AskRequest | Undecodable, limits: Limits, identity: Identity = ANONYMOUS
) -> TaskQuery:
    """Validate an ``AskRequest`` and convert it to a :class:`TaskQuery`.

    :raises InvalidArgument: naming every bad field.
    """
    if isinstance(request, Undecodable):
        request = _decoded(request, limits)  # raises
    bad: list[FieldViolation] = []
    tasktype = request.tasktype
    if tasktype not in limits.known_tasktypes:
        _check_tasktype(tasktype, bad)
    taskinfo = _struct(request.taskinfo, limits, bad) if request.HasField("taskinfo") else {}
    resources = _resources(request.resources, bad) if request.HasField("resources") else _ANY
    schedule = _schedule(request.schedule, limits, bad) if request.HasField("schedule") else None
    if bad:
        raise InvalidArgument("AskRequest", bad)
    return TaskQuery(tasktype, taskinfo, resources, identity, schedule)


#: The resources of a request that asks for none (immutable, so shared).
_ANY = Resources()
_OPEN = IntRange()


def _check_tasktype(tasktype: str, bad: list[FieldViolation]) -> None:
    problem = uri_problem(tasktype)
    if problem:
        bad.append(FieldViolation("tasktype", problem))


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
    try:
        return _plain_struct(taskinfo, limits.max_taskinfo_depth - 1)
    except _NotPlain:
        pass
    walker = _StructWalker(limits.max_taskinfo_depth)
    result = walker.struct(taskinfo, "taskinfo", 1)
    bad.extend(walker.bad)
    return result


class _NotPlain(Exception):
    """A taskinfo value too deep, or a number JSON cannot carry."""


_isfinite = math.isfinite


def _plain_struct(msg: struct_pb2.Struct, room: int) -> dict[str, Any]:
    """``msg`` as a dict, its values at most ``room`` levels further down.

    :raises _NotPlain: at the first bad value (see :class:`_StructWalker`).
    """
    if room < 0:
        raise _NotPlain
    # Iterating a map's keys and indexing it is several times cheaper than
    # its items(); strings, the usual values, are read here without a call.
    fields = msg.fields
    result = {}
    for key in fields:
        value = fields[key]
        kind = value.WhichOneof("kind")
        result[key] = value.string_value if kind == "string_value" else _plain(value, kind, room)
    return result


def _plain(value: struct_pb2.Value, kind: str | None, room: int) -> Any:
    """``value``, of that ``kind``, in a container ``room`` levels above the limit."""
    if kind == "number_value":
        number = value.number_value
        if not _isfinite(number):
            raise _NotPlain
        return number
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return _plain_struct(value.struct_value, room - 1)
    if kind == "list_value":
        if room < 1:
            raise _NotPlain
        items = []
        for item in value.list_value.values:
            kind = item.WhichOneof("kind")
            items.append(
                item.string_value if kind == "string_value" else _plain(item, kind, room - 1)
            )
        return items
    return None  # null_value, or a Value with no kind set


class _StructWalker:
    """Converts a Struct to Python values, checking depth and numbers, and
    names each bad value's field: for a taskinfo :func:`_plain_struct`
    refused."""

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
        cores=_range(res.cores, "cores", bad) if res.HasField("cores") else _OPEN,
        memory=_range(res.memory, "memory", bad) if res.HasField("memory") else _OPEN,
    )


def _range(msg: pb.Range, name: str, bad: list[FieldViolation]) -> IntRange:
    low = msg.min if msg.HasField("min") else None
    high = msg.max if msg.HasField("max") else None
    if (low is not None and low < 0) or (high is not None and (high < 0 or (low or 0) > high)):
        _range_problems(name, low, high, bad)
    return IntRange(low, high)


def _range_problems(
    name: str, low: int | None, high: int | None, bad: list[FieldViolation]
) -> None:
    path = f"resources.{name}"
    for end, value in (("min", low), ("max", high)):
        if value is not None and value < 0:
            bad.append(FieldViolation(f"{path}.{end}", f"must not be negative, got {value}"))
    if low is not None and high is not None and 0 <= high < low:
        bad.append(FieldViolation(path, f"min ({low}) is greater than max ({high})"))


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
        start = _time(window, "start", i, bad)
        end = _time(window, "end", i, bad)
        if start is not None and end is not None:
            if end < start:
                bad.append(FieldViolation(f"schedule.windows[{i}].end", "is before start"))
            else:
                yield Window(start, end)


def _time(msg: Any, name: str, i: int, bad: list[FieldViolation]) -> datetime | None:
    """Window ``i``'s ``name``."""
    if not msg.HasField(name):
        bad.append(FieldViolation(f"schedule.windows[{i}].{name}", "is required"))
        return None
    try:
        value: datetime = getattr(msg, name).ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        bad.append(FieldViolation(f"schedule.windows[{i}].{name}", "is not a valid timestamp"))
        return None
    return value


def _duration(
    msg: pb.Schedule, name: str, limits: Limits, bad: list[FieldViolation], required: bool
) -> timedelta | None:
    if not msg.HasField(name):
        if required:
            bad.append(FieldViolation(f"schedule.{name}", "is required"))
        return None
    field = getattr(msg, name)
    if field.seconds < 0 or field.nanos < 0 or (field.seconds == 0 and field.nanos == 0):
        bad.append(FieldViolation(f"schedule.{name}", "must be positive"))
        return None
    if field.seconds > limits.max_duration.total_seconds():
        bad.append(
            FieldViolation(f"schedule.{name}", f"must be at most {limits.max_duration.days} days")
        )
        return None
    value: timedelta = field.ToTimedelta()
    return value


def _ask_validators(limits: Limits) -> dict[str, Callable[[Any, list[FieldViolation]], object]]:
    """How each top-level field of an AskRequest is validated, for
    explaining a request protobuf refused (:mod:`ep_server.wire.undecodable`)."""
    return {
        "tasktype": _check_tasktype,
        "taskinfo": lambda msg, bad: _struct(msg, limits, bad),
        "resources": _resources,
        "schedule": lambda msg, bad: _schedule(msg, limits, bad),
    }


# --- the other requests ------------------------------------------------------

_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: ListBookings pages: the default and the largest.
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


def id_from_request(request: Any, name: str) -> str:
    """The offer or booking id a request names (its field ``name``), checked."""
    request = _decoded(request)
    value = getattr(request, name)
    if not _ID.fullmatch(value):
        problem = "is required" if not value else "is not an id (1-128 of A-Z a-z 0-9 _ -)"
        raise InvalidArgument(type(request).__name__, [FieldViolation(name, problem)])
    return str(value)


def bookings_page_from_request(request: pb.ListBookingsRequest | Undecodable) -> tuple[int, str]:
    """A ListBookings request's page size (the default when 0, at most
    :data:`MAX_PAGE_SIZE`) and page token."""
    request = _decoded(request)
    if request.page_size < 0:
        raise InvalidArgument(
            "ListBookingsRequest", [FieldViolation("page_size", "must not be negative")]
        )
    return min(request.page_size or PAGE_SIZE, MAX_PAGE_SIZE), request.page_token


def info_request_checked(request: pb.GetServiceInfoRequest | Undecodable) -> None:
    """A GetServiceInfo request carries nothing; it must only decode."""
    _decoded(request)
