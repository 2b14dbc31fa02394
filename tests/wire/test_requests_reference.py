"""``query_from_request`` against a straightforward reference conversion.

The reference below is the plain form of the conversion: every value walked
with its field path built as it goes, every check written out. The server's
conversion builds paths only for a bad field; on generated requests (those of
tests/request_generation: adversarial task types, taskinfo with NaN, deep
nesting, non-UTF-8 strings and unknown fields, absurd resources and
schedules) and under generated limits, both must give the same TaskQuery
(the same values, of the same types, with keys in the same order) or the
same INVALID_ARGUMENT, violation for violation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st
from request_generation.strategies import ROBUST, asks

from ep_server.errors import FieldViolation, InvalidArgument
from ep_server.model import IntRange, Resources, Schedule, TaskQuery, Window
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.uri import uri_problem
from ep_server.wire import Limits, Undecodable, decoder, query_from_request
from ep_server.wire.undecodable import diagnose

decode_ask = decoder(pb.AskRequest)

# --- the reference ------------------------------------------------------------


def reference_query(request: pb.AskRequest | Undecodable, limits: Limits) -> TaskQuery:
    if isinstance(request, Undecodable):
        found = diagnose(
            request.data, request.error, _validators(limits), limits.max_taskinfo_depth
        )
        raise InvalidArgument(request.message, found)
    bad: list[FieldViolation] = []
    if request.tasktype not in limits.known_tasktypes:
        _check_tasktype(request.tasktype, bad)
    taskinfo = _struct(request.taskinfo, limits, bad) if request.HasField("taskinfo") else {}
    resources = _resources(request.resources, bad) if request.HasField("resources") else Resources()
    schedule = _schedule(request.schedule, limits, bad) if request.HasField("schedule") else None
    if bad:
        raise InvalidArgument("AskRequest", bad)
    return TaskQuery(request.tasktype, taskinfo, resources, schedule=schedule)


def _check_tasktype(tasktype: str, bad: list[FieldViolation]) -> None:
    problem = uri_problem(tasktype)
    if problem:
        bad.append(FieldViolation("tasktype", problem))


def _struct(taskinfo: struct_pb2.Struct, limits: Limits, bad: list[FieldViolation]) -> Any:
    size = taskinfo.ByteSize()
    if size > limits.max_taskinfo_bytes:
        bad.append(
            FieldViolation(
                "taskinfo",
                f"is {size} bytes encoded; this site accepts at most {limits.max_taskinfo_bytes}",
            )
        )
        return {}
    walker = _Walker(limits.max_taskinfo_depth)
    result = walker.struct(taskinfo, "taskinfo", 1)
    bad.extend(walker.bad)
    return result


class _Walker:
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
            if not math.isfinite(v.number_value):
                self.bad.append(FieldViolation(path, f"{v.number_value} is not a JSON number"))
            return v.number_value
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
        return None

    def _too_deep(self) -> None:
        if not any(b.field == "taskinfo" for b in self.bad):
            self.bad.append(
                FieldViolation("taskinfo", f"is nested deeper than {self.max_depth} levels")
            )


def _resources(res: pb.Resources, bad: list[FieldViolation]) -> Resources:
    return Resources(cores=_range(res, "cores", bad), memory=_range(res, "memory", bad))


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


def _validators(limits: Limits) -> dict[str, Callable[[Any, list[FieldViolation]], object]]:
    return {
        "tasktype": _check_tasktype,
        "taskinfo": lambda msg, bad: _struct(msg, limits, bad),
        "resources": _resources,
        "schedule": lambda msg, bad: _schedule(msg, limits, bad),
    }


# --- the comparison -----------------------------------------------------------


def outcome(convert: Callable[[], TaskQuery]) -> tuple[str, object]:
    """What a conversion gives: the query (with its taskinfo's repr, which
    shows key order and types: ``1.0`` is not ``True``), or the error."""
    try:
        query = convert()
    except InvalidArgument as exc:
        return "invalid", (str(exc), [(v.field, v.description) for v in exc.violations])
    return "query", (query, repr(query.taskinfo))


LIMITS = st.builds(
    Limits,
    max_taskinfo_bytes=st.sampled_from([256 * 1024, 4096, 64, 0]),
    max_taskinfo_depth=st.integers(0, 32),
    known_tasktypes=st.sampled_from([frozenset(), frozenset({"uri://docker-container"})]),
    max_duration=st.sampled_from([timedelta(days=366), timedelta(hours=1)]),
    max_windows=st.sampled_from([100, 1]),
)


@settings(ROBUST, max_examples=600)
@given(ask=asks(), limits=LIMITS)
def test_the_conversion_matches_the_reference_on_generated_requests(ask, limits):
    request = decode_ask(ask.encode())
    expected = outcome(lambda: reference_query(request, limits))
    assert outcome(lambda: query_from_request(request, limits)) == expected


@settings(ROBUST, max_examples=300)
@given(ask=asks())
def test_the_conversion_matches_the_reference_under_the_default_limits(ask):
    request = decode_ask(ask.encode())
    limits = Limits()
    expected = outcome(lambda: reference_query(request, limits))
    assert outcome(lambda: query_from_request(request, limits)) == expected


def test_a_bad_value_beside_good_ones_is_named_as_the_reference_names_it():
    """The fast walk gives up at a bad value; the named walk then finds it
    and every other one, in the same order."""
    taskinfo = struct_pb2.Struct()
    taskinfo.update({"a": "x", "n": [1.0, math.nan, {"b": math.inf}], "m": {"c": -math.inf}})
    request = pb.AskRequest(tasktype="uri://x", taskinfo=taskinfo)
    got = outcome(lambda: query_from_request(request, Limits()))
    assert got == outcome(lambda: reference_query(request, Limits()))
    assert got[0] == "invalid"
    assert {field for field, _ in got[1][1]} == {  # type: ignore[index]
        "taskinfo.n[1]",
        "taskinfo.n[2].b",
        "taskinfo.m.c",
    }
