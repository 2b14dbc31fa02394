"""The client's edge: plain objects to ``ivoa.ep.v1`` messages and back.

The only client module that reads or builds protobuf messages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from google.protobuf import json_format, struct_pb2
from google.protobuf.message import Message

from ep_server.client.results import (
    Answer,
    Offer,
    PluginInfo,
    Reason,
    ServiceInfo,
    ServiceType,
    TaskTypeInfo,
)
from ep_server.model import (
    MAX_TASKINFO_DEPTH,
    Booking,
    BookingState,
    Cause,
    HostInfo,
    IntRange,
    Resources,
    Schedule,
    Slot,
    TaskQuery,
)
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.wire.plain_json import plain_json

__all__ = [
    "answer_from_json",
    "answer_from_proto",
    "booking_from_proto",
    "check_taskinfo",
    "message_json",
    "request_from_query",
    "request_json",
    "service_info_from_proto",
    "struct_to_dict",
]

_CAUSE = {c.value: c for c in Cause}


#: Struct numbers are doubles: integers beyond this would arrive changed.
_EXACT_INT = 2**53


def check_taskinfo(taskinfo: Any) -> None:
    """Refuse, before anything is sent, a taskinfo no EP would take as it is:
    nested deeper than :data:`MAX_TASKINFO_DEPTH`, NaN or infinite numbers
    (not JSON), integers a double cannot hold exactly (they would arrive
    changed), keys that are not strings, values that are not JSON-like.

    :raises ValueError: naming the first offending place, as ``taskinfo.a[2]``.
    """
    stack: list[tuple[Any, str, int]] = [(taskinfo, "taskinfo", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, Mapping):
            if depth > MAX_TASKINFO_DEPTH:
                raise ValueError(f"{path} is nested deeper than {MAX_TASKINFO_DEPTH} levels")
            for key, item in value.items():
                if not isinstance(key, str):
                    raise ValueError(f"{path}: key {key!r} is not a string")
                stack.append((item, f"{path}.{key}", depth + 1))
        elif isinstance(value, list | tuple):
            if depth > MAX_TASKINFO_DEPTH:
                raise ValueError(f"{path} is nested deeper than {MAX_TASKINFO_DEPTH} levels")
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, bool) or value is None or isinstance(value, str):
            continue
        elif isinstance(value, int):
            if abs(value) > _EXACT_INT:
                raise ValueError(
                    f"{path}: {value} is too large to send exactly (JSON numbers in protobuf "
                    "are doubles); send it as a string"
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"{path}: {value} is not a JSON number")
        else:
            raise ValueError(f"{path}: a {type(value).__name__} is not JSON")


def request_from_query(query: TaskQuery) -> pb.AskRequest:
    """Build the ``AskRequest`` for ``query``; unbounded ranges are left out.

    :raises ValueError: when the taskinfo cannot be sent (:func:`check_taskinfo`).
    """
    request = pb.AskRequest(tasktype=query.tasktype)
    if query.taskinfo:
        check_taskinfo(query.taskinfo)
        request.taskinfo.update(dict(query.taskinfo))
    _set_range(request.resources.cores, query.resources.cores)
    _set_range(request.resources.memory, query.resources.memory)
    if not request.resources.ListFields():
        request.ClearField("resources")
    if query.schedule is not None:
        _set_schedule(request.schedule, query.schedule)
    return request


def _set_schedule(msg: pb.Schedule, schedule: Schedule) -> None:
    for window in schedule.windows:
        added = msg.windows.add()
        added.start.FromDatetime(window.start)
        added.end.FromDatetime(window.end)
    msg.min_duration.FromTimedelta(schedule.min_duration)
    if schedule.max_duration is not None:
        msg.max_duration.FromTimedelta(schedule.max_duration)


def _slot(msg: pb.TimeSlot) -> Slot:
    return Slot(msg.start.ToDatetime(tzinfo=UTC), msg.end.ToDatetime(tzinfo=UTC))


def booking_from_proto(msg: pb.Booking) -> Booking:
    """A ``Booking`` message as a plain :class:`~ep_server.model.Booking`."""
    return Booking(
        id=msg.id,
        offer_id=msg.offer_id,
        owner=msg.owner,
        plugin=msg.plugin,
        servicetype=msg.servicetype,
        serviceinfo=struct_to_dict(msg.serviceinfo),
        slot=_slot(msg.slot),
        need=dict(msg.hold),
        state=BookingState[pb.BookingState.Name(msg.state).removeprefix("BOOKING_STATE_")],
        create_time=msg.create_time.ToDatetime(tzinfo=UTC),
    )


def _set_range(msg: pb.Range, rng: IntRange) -> None:
    if rng.min is not None:
        msg.min = rng.min
    if rng.max is not None:
        msg.max = rng.max


def answer_from_proto(msg: pb.AskResponse) -> Answer:
    """Convert an ``AskResponse``; the message stays available as ``raw``."""
    return Answer(
        word=pb.ResponseWord.Name(msg.responseword),
        offers=tuple(_offer(o) for o in msg.offers),
        reasons=tuple(_reason(r) for r in msg.reasons),
        raw=msg,
    )


def request_json(request: pb.AskRequest) -> dict[str, Any]:
    """The request in the protocol's JSON with its field names: the note's
    ``{"tasktype": ..., "taskinfo": {...}}``, with ``resources`` and
    ``schedule`` beside them when they are set (64-bit integers as strings)."""
    body: dict[str, Any] = {"tasktype": request.tasktype, "taskinfo": {}}
    body |= json_format.MessageToDict(request, preserving_proto_field_name=True)
    body["taskinfo"] = _whole_numbers(body["taskinfo"])
    return body


def _whole_numbers(value: Any) -> Any:
    """``value`` with whole numbers written as integers: a ``Struct`` holds
    every number as a double, and ``3`` is what was asked, not ``3.0``."""
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, float) and value.is_integer() and abs(value) <= _EXACT_INT:
        return int(value)
    return value


def answer_from_json(data: Mapping[str, Any]) -> Answer:
    """An ``AskResponse`` in the protocol's JSON (as
    :func:`ep_server.client.note.response_json` makes it) as an
    :class:`Answer`; fields and enum values it does not know are ignored.

    :raises google.protobuf.json_format.ParseError: for a value of the
        wrong type, such as a number of cores that is not an integer.
    """
    message = json_format.ParseDict(dict(data), pb.AskResponse(), ignore_unknown_fields=True)
    return answer_from_proto(message)


def _offer(msg: pb.Offer) -> Offer:
    return Offer(
        servicetype=msg.servicetype,
        serviceinfo=struct_to_dict(msg.serviceinfo),
        resources=_resources(msg.resources) if msg.HasField("resources") else None,
        plugin=msg.plugin,
        message=msg.message,
        id=msg.id,
        expire_time=msg.expire_time.ToDatetime(tzinfo=UTC) if msg.HasField("expire_time") else None,
        slot=_slot(msg.slot) if msg.HasField("slot") else None,
        hold=dict(msg.hold),
    )


def _reason(msg: pb.Reason) -> Reason:
    return Reason(
        code=msg.code,
        message=msg.message,
        plugin=msg.plugin,
        cause=_CAUSE.get(msg.cause),
        retryable=msg.retryable,
        field=msg.field,
        earliest_slot=_slot(msg.earliest_slot) if msg.HasField("earliest_slot") else None,
    )


def _resources(msg: pb.Resources) -> Resources:
    return Resources(_range(msg, "cores"), _range(msg, "memory"))


def _range(msg: pb.Resources, name: str) -> IntRange:
    if not msg.HasField(name):
        return IntRange()
    rng: pb.Range = getattr(msg, name)
    return IntRange(
        rng.min if rng.HasField("min") else None, rng.max if rng.HasField("max") else None
    )


def struct_to_dict(msg: struct_pb2.Struct) -> dict[str, Any]:
    """A ``Struct`` as plain JSON-like Python values."""
    result: dict[str, Any] = json_format.MessageToDict(msg)
    return result


def service_info_from_proto(msg: pb.GetServiceInfoResponse) -> ServiceInfo:
    """Convert a ``GetServiceInfoResponse``; the message stays as ``raw``."""
    cap = msg.capacity
    return ServiceInfo(
        server_version=msg.server_version,
        capacity=HostInfo(cap.cores, cap.memory, cap.architecture, cap.os),
        tasktypes=tuple(_tasktype(t) for t in msg.tasktypes),
        plugins=tuple(_plugin(p) for p in msg.plugins),
        raw=msg,
    )


def _tasktype(msg: pb.TaskTypeInfo) -> TaskTypeInfo:
    services = tuple(ServiceType(s.servicetype, s.plugin) for s in msg.services)
    return TaskTypeInfo(msg.tasktype, services)


def _plugin(msg: pb.PluginInfo) -> PluginInfo:
    return PluginInfo(
        name=msg.name,
        distribution=msg.distribution,
        version=msg.version,
        state=pb.PluginState.Name(msg.state).removeprefix("PLUGIN_STATE_"),
        error=msg.error,
        tasktypes=tuple(msg.tasktypes),
        servicetypes=tuple(msg.servicetypes),
    )


def message_json(msg: Message) -> dict[str, Any]:
    """Any message in the EP's JSON form for people
    (:mod:`ep_server.wire.plain_json`)."""
    return plain_json(msg)
