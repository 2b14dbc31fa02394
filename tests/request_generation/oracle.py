"""The oracle: from a generated request alone, what the server must answer.

:func:`expected_violations` says which fields the server must name in
INVALID_ARGUMENT (it may name more) and whether the request is certainly well
formed, so that it must get a verdict. Only what the protocol makes certain is
demanded; cases near a limit are left to the server.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from request_generation.encoding import Ask, BadUtf8

MAX_TASKINFO_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_TASKTYPE = 2048
#: Task types the default install claims (static, docker and jupyter plugins).
CLAIMED = (
    "uri://docker-container",
    "uri://jupyter-notebook",
    "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0",
    "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/jupyter-notebook-1.0",
)
#: Absolute URIs that nobody claims: well-formed, so a NO, not an error.
UNCLAIMED = ("uri://docker-uws", "https://example.org/task?x=1#f", "urn:ivoa:x", "a:b")
KNOWN_GOOD_TASKTYPES = CLAIMED + UNCLAIMED

#: google.protobuf.Timestamp's range: 0001-01-01 to 9999-12-31.
TIMESTAMP_MIN, TIMESTAMP_MAX = -62135596800, 253402300799
DURATION_MAX = 315576000000  # 10,000 years, protobuf's Duration limit


def _valid_time(value: tuple[int | None, int | None], low: int, high: int) -> float | None:
    """A Timestamp or Duration as seconds, or None when out of its range."""
    seconds, nanos = value[0] or 0, value[1] or 0
    if not low <= seconds <= high or not 0 <= nanos <= 999_999_999:
        return None
    return seconds + nanos / 1e9


def schedule_expectation(schedule: dict[str, Any]) -> tuple[set[str], bool]:
    """(fields the server must name, whether the schedule is plainly sane).

    Only what the protocol makes certain is demanded: at least one window,
    each with a start and an end, not ending before it starts; a positive
    min_duration; a max_duration not shorter than it. Timestamps out of
    protobuf's range, bad nanos or huge durations may be named or not; a sane
    schedule (windows in the coming year, durations up to a day) must pass.
    """
    must: set[str] = set()
    sane = True
    windows = schedule.get("windows", [])
    if not windows:
        must.add("schedule.windows")
    now = time.time()
    for i, (start, end) in enumerate(windows):
        path = f"schedule.windows[{i}]"
        times = []
        for name, value in (("start", start), ("end", end)):
            if value is None:
                must.add(f"{path}.{name}")
            else:
                times.append(_valid_time(value, TIMESTAMP_MIN, TIMESTAMP_MAX))
        if len(times) == 2 and None not in times:
            if times[1] < times[0]:
                must.add(f"{path}.end")
            sane = sane and now + 60 <= times[0] <= now + 300 * 86400
        else:
            sane = False
    durations = {}
    for name in ("min", "max"):
        value = schedule.get(name)
        if value is None:
            continue
        seconds, nanos = value[0] or 0, value[1] or 0
        if seconds < 0 or nanos < 0 or seconds == nanos == 0:
            must.add(f"schedule.{name}_duration")  # negative or zero
        durations[name] = _valid_time(value, 0, 86400)
        sane = sane and durations[name] is not None and durations[name] > 0
    if "min" not in durations:
        must.add("schedule.min_duration")
    elif durations.get("min") and durations.get("max") and durations["max"] < durations["min"]:
        must.add("schedule.max_duration")
    return must, sane and not must


def taskinfo_shape(taskinfo: dict[Any, Any]) -> tuple[int, list[str], bool]:
    """(depth, paths of non-finite numbers, whether some string is not UTF-8).

    Levels as the spec counts them: the top-level object is level 1, and each
    nested object or list is one level more.
    """
    deepest, bad_numbers, bad_utf8 = 1, [], False

    def walk(value: Any, path: str, level: int) -> None:
        nonlocal deepest, bad_utf8
        deepest = max(deepest, level)
        if isinstance(value, BadUtf8):
            bad_utf8 = True
        elif isinstance(value, float) and not math.isfinite(value):
            bad_numbers.append(path)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, BadUtf8):
                    bad_utf8 = True
                    continue
                walk_child(item, f"{path}.{key}", level)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk_child(item, f"{path}[{i}]", level)

    def walk_child(value: Any, path: str, level: int) -> None:
        walk(value, path, level + 1 if isinstance(value, dict | list) else level)

    walk(taskinfo, "taskinfo", 1)
    return deepest, bad_numbers, bad_utf8


def obviously_bad_tasktype(tasktype: str) -> bool:
    """Not an absolute URI by any reading of RFC 3986 (or too long)."""
    return (
        not tasktype
        or len(tasktype) > MAX_TASKTYPE
        or ":" not in tasktype
        or not tasktype[0].isascii()
        or not tasktype[0].isalpha()
        or any(ord(c) <= 0x20 or ord(c) >= 0x7F for c in tasktype)
    )


@dataclass
class Expectation:
    #: Fields the server must name (it may name more).
    must_name: set[str]
    #: True when the request is certainly well formed: it must get a verdict.
    must_answer: bool


def expected_violations(ask: Ask) -> Expectation:
    """What the server must say about ``ask``."""
    must: set[str] = set()
    uncertain = False
    if isinstance(ask.tasktype, BadUtf8) or obviously_bad_tasktype(ask.tasktype):
        must.add("tasktype")
    if ask.taskinfo is not None:
        size = len(ask.taskinfo_bytes())
        depth, bad_numbers, bad_utf8 = taskinfo_shape(ask.taskinfo)
        taskinfo_bad = set()
        # Sizes near the limit are left alone: protobuf's own ByteSize() may
        # differ from this encoder's by a few bytes.
        if size > MAX_TASKINFO_BYTES + 64 or depth > MAX_DEPTH or bad_utf8:
            taskinfo_bad.add("taskinfo")
        elif size < MAX_TASKINFO_BYTES - 64:
            taskinfo_bad.update(bad_numbers)
        else:
            uncertain = True
        must |= taskinfo_bad
    for name, rng in (ask.resources or {}).items():
        low, high = rng.get("min"), rng.get("max")
        for end, value in (("min", low), ("max", high)):
            if value is not None and value < 0:
                must.add(f"resources.{name}.{end}")
        if low is not None and high is not None and 0 <= high < low:
            must.add(f"resources.{name}")
    well_formed = ask.tasktype in KNOWN_GOOD_TASKTYPES and not ask.unknown
    if ask.schedule is not None:
        schedule_must, sane = schedule_expectation(ask.schedule)
        must.update(schedule_must)
        well_formed = well_formed and sane
    must_answer = well_formed and not must and not uncertain
    return Expectation(must, must_answer)
