"""An ExecutionBroker execution request, read into the Ask it stands for.

Reads the IVOA ExecutionBroker draft's ``OfferSetRequest`` and Calycopis's
form of it (see ``docs/executionbroker.md`` for every difference read):

* ``executable``: its ``type`` (the draft) or ``kind`` (Calycopis) becomes
  the Ask's task type (:data:`TASKTYPES` maps the draft's and Calycopis's
  docker-container and jupyter-notebook URIs to the EP's; any other URI is
  asked as it is, so an unclaimed type gets the planner's NO); the rest of
  it, less the component's own fields (``name``, ``uuid``, ...), is the
  taskinfo, or its ``spec`` object when it has one (the draft text's form);
* compute ``cores`` and ``memory`` (GiB unless ``units`` says otherwise),
  as ``{min, max}`` or ``{requested: {min, max}}``, from the draft's
  ``resources.compute`` list or Calycopis's ``compute``, become the Ask's
  resources;
* ``schedule.requested``: its ``start`` (ISO 8601 intervals, a list or one)
  become the start windows, its ``duration`` (one ISO 8601 duration, or
  ``{min, max}``) the duration.

What the request asks that this site never offers (storage, data, volumes,
more than one compute resource, a compute type it does not know) is not an
error: it is a reason to answer NO (:attr:`BrokerRequest.refusals`), as the
draft says a site may. Values of the wrong type are errors (400), each
named by its path in the request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ep_server.errors import FieldViolation, InvalidArgument

__all__ = [
    "COMPUTE_TYPES",
    "DEFAULT_DURATION",
    "DEFAULT_WINDOW",
    "TASKTYPES",
    "BrokerRequest",
    "Note",
    "format_duration",
    "parse_duration",
    "parse_time",
    "read_request",
]

WHAT = "OfferSetRequest"
_PURL = "https://www.purl.org/ivoa.net"

#: Executable type URIs (the draft's OpenAPI and text, Calycopis's types and
#: kinds) -> the EP task type they are asked as.
TASKTYPES: dict[str, str] = {
    f"{_PURL}/EB/schema/types/executables/docker-container-1.0.yaml": "uri://docker-container",
    f"{_PURL}/EB/schema/v1.0/types/executable/docker-container-1.0": "uri://docker-container",
    f"{_PURL}/Calycopis-openapi/schema/v1.0/kinds/executable/docker-container.yaml": (
        "uri://docker-container"
    ),
    f"{_PURL}/executable-types/docker-container": "uri://docker-container",
    f"{_PURL}/executable-types/oci-container": "uri://docker-container",
    f"{_PURL}/EB/schema/types/executables/jupyter-notebook-1.0.yaml": "uri://jupyter-notebook",
    f"{_PURL}/EB/schema/v1.0/types/executable/jupyter-notebook-1.0": "uri://jupyter-notebook",
    f"{_PURL}/Calycopis-openapi/schema/v1.0/kinds/executable/jupyter-notebook.yaml": (
        "uri://jupyter-notebook"
    ),
    f"{_PURL}/executable-types/jupyter-notebook": "uri://jupyter-notebook",
}

#: Compute resource types read as cores and memory (none given is one too).
COMPUTE_TYPES = frozenset(
    {
        f"{_PURL}/EB/schema/types/resources/compute/simple-compute-1.0.yaml",
        f"{_PURL}/EB/schema/types/resources/compute/simple-compute-resource-1.0.yaml",
        f"{_PURL}/EB/schema/v1.0/types/compute/simple-compute-resource-1.0",
        f"{_PURL}/Calycopis-openapi/schema/v1.0/kinds/compute/simple-compute-resource.yaml",
        f"{_PURL}/resource-types/generic-compute",
        "uri:simple-compute-resource-0.1",
    }
)

#: The compute type written when a request names none (the draft's).
SIMPLE_COMPUTE = f"{_PURL}/EB/schema/types/resources/compute/simple-compute-1.0.yaml"

#: A component's own fields (the draft's AbstractComponent, Calycopis's
#: metadata and lifecycle): never part of the taskinfo.
_COMPONENT_FIELDS = frozenset(
    {"type", "kind", "name", "uuid", "href", "created", "messages", "meta", "phase", "schedule"}
)
#: The request's fields read; others are noted in the answer, not refused.
_TOP_FIELDS = frozenset(
    {"name", "executable", "resources", "compute", "storage", "volumes", "data", "schedule"}
)
_UNITS = {
    "kB": 10**3, "kiB": 2**10, "KiB": 2**10, "MB": 10**6, "MiB": 2**20, "GB": 10**9,
    "GiB": 2**30, "TB": 10**12, "TiB": 2**40, "PB": 10**15, "PiB": 2**50,
}  # fmt: skip

#: The start window when none is asked: from now, for a day.
DEFAULT_WINDOW = timedelta(days=1)
#: The duration when none is asked.
DEFAULT_DURATION = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Note:
    """Something to say in the answer's messages: a reason not to ask
    (``ERROR``), or a field not read (``WARN``)."""

    level: str
    code: str
    path: str
    text: str


@dataclass
class BrokerRequest:
    """What an execution request asks, read."""

    #: The ``AskRequest`` it stands for, as proto3 JSON.
    ask: dict[str, Any]
    #: The request as sessions repeat it, in the draft's form.
    echo: dict[str, Any]
    #: Where the taskinfo came from (``executable`` or ``executable.spec``),
    #: and the compute resource's path, for naming fields in reasons.
    taskinfo_path: str = "executable"
    compute_path: str = "resources.compute[0]"
    #: Reasons to answer NO without asking (ERROR), and notes (WARN).
    notes: list[Note] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return any(n.level == "ERROR" for n in self.notes)

    def request_path(self, ep_field: str) -> str:
        """The request's path of a field of the Ask (a reason's ``field``)."""
        for prefix, there in (
            ("taskinfo", self.taskinfo_path),
            ("tasktype", "executable.type"),
            ("resources", self.compute_path),
            ("schedule", "schedule.requested"),
        ):
            if ep_field == prefix or ep_field.startswith((f"{prefix}.", f"{prefix}[")):
                return there + ep_field[len(prefix) :]
        return ep_field


def read_request(data: Any, now: datetime) -> BrokerRequest:
    """Read an execution request (a parsed JSON or YAML document).

    :raises InvalidArgument: naming every field of the wrong type.
    """
    bad: list[FieldViolation] = []
    if isinstance(data, Mapping) and set(data) == {"request"}:
        data = data["request"]  # the draft text's examples wrap it
    if data is None:
        raise InvalidArgument(WHAT, [FieldViolation("", "is empty: send an execution request")])
    if not isinstance(data, Mapping):
        raise InvalidArgument(WHAT, [FieldViolation("", "must be a mapping (an object)")])
    request = BrokerRequest({}, {})
    for key in data:
        if key not in _TOP_FIELDS:
            request.notes.append(Note("WARN", "FIELD_IGNORED", str(key), f"{key} is not read"))
    name = data.get("name")
    if isinstance(name, str):
        request.echo["name"] = name
    elif name is not None:
        bad.append(FieldViolation("name", "must be a string"))
    _executable(data.get("executable"), request, bad)
    _resources(data, request, bad)
    _schedule(data.get("schedule"), request, now, bad)
    if bad:
        raise InvalidArgument(WHAT, bad)
    return request


# --- executable --------------------------------------------------------------


def _executable(value: Any, request: BrokerRequest, bad: list[FieldViolation]) -> None:
    if value is None:
        request.notes.append(Note("ERROR", "NO_EXECUTABLE", "executable", "no executable given"))
        return
    if not isinstance(value, Mapping):
        bad.append(FieldViolation("executable", "must be a mapping (an object)"))
        return
    kind, typed = value.get("kind"), value.get("type")
    for name, given in (("type", typed), ("kind", kind)):
        if given is not None and not isinstance(given, str):
            bad.append(FieldViolation(f"executable.{name}", "must be a string (a URI)"))
    if isinstance(typed, str) and isinstance(kind, str) and typed != kind:
        bad.append(FieldViolation("executable.kind", "differs from executable.type"))
    uri = typed if isinstance(typed, str) else kind if isinstance(kind, str) else None
    echo = {k: v for k, v in value.items() if k != "kind"}
    if uri is not None:
        echo["type"] = uri
    request.echo["executable"] = echo
    spec = value.get("spec")
    if isinstance(spec, Mapping):
        taskinfo, request.taskinfo_path = dict(spec), "executable.spec"
    else:
        taskinfo = {k: v for k, v in value.items() if k not in _COMPONENT_FIELDS}
    if uri is None:
        note = Note("ERROR", "NO_EXECUTABLE_TYPE", "executable.type", "the executable has no type")
        request.notes.append(note)
        return
    request.ask["tasktype"] = TASKTYPES.get(uri, uri)
    request.ask["taskinfo"] = taskinfo


# --- resources -----------------------------------------------------------------


def _resources(data: Mapping[str, Any], request: BrokerRequest, bad: list[FieldViolation]) -> None:
    resources = data.get("resources")
    if resources is not None and not isinstance(resources, Mapping):
        bad.append(FieldViolation("resources", "must be a mapping (an object)"))
        resources = None
    # The draft's places (under resources) and Calycopis's (at the top):
    # key -> (its path, its value).
    parts = {key: (f"resources.{key}", value) for key, value in (resources or {}).items()}
    for key in ("compute", "storage", "volumes", "data"):
        if data.get(key) is None:
            continue
        if parts.get(key, ("", None))[1] is not None:
            bad.append(FieldViolation(key, f"is given both here and as resources.{key}"))
        parts[key] = (key, data[key])
    where, compute = parts.pop("compute", ("", None))
    items = [compute] if isinstance(compute, Mapping) else compute
    if items is not None and not isinstance(items, list):
        bad.append(FieldViolation(where, "must be a list or a mapping"))
        items = None
    for key, (path, value) in parts.items():
        listed = key in ("storage", "volumes", "data")
        if listed and value is not None and not isinstance(value, list):
            bad.append(FieldViolation(path, "must be a list"))
        elif value:
            text = f"this site offers no {key} resources"
            request.notes.append(Note("ERROR", "RESOURCE_NOT_OFFERED", path, text))
    if not items:
        return
    first = where if isinstance(compute, Mapping) else f"{where}[0]"
    request.compute_path = first
    if len(items) > 1:
        text = f"{len(items)} compute resources; this site offers one per session"
        request.notes.append(Note("ERROR", "ONE_COMPUTE_RESOURCE", where, text))
    _compute(items[0], first, request, bad)


#: A compute resource's fields read (with the component's own).
_COMPUTE_FIELDS = frozenset({"cores", "memory", "volumes", "spec", "replicas"}) | _COMPONENT_FIELDS


def _compute(item: Any, path: str, request: BrokerRequest, bad: list[FieldViolation]) -> None:
    if not isinstance(item, Mapping):
        bad.append(FieldViolation(path, "must be a mapping (an object)"))
        return
    uri = item.get("type", item.get("kind"))
    if uri is not None and (not isinstance(uri, str) or uri not in COMPUTE_TYPES):
        text = f"compute resources of type {uri} are not offered here"
        request.notes.append(Note("ERROR", "RESOURCE_NOT_OFFERED", f"{path}.type", text))
    spec: Mapping[str, Any] = item
    if isinstance(item.get("spec"), Mapping):
        spec, path = item["spec"], f"{path}.spec"
    _unoffered(spec, path, request)
    echo: dict[str, Any] = {k: v for k, v in item.items() if k not in ("kind", "spec")}
    echo["type"] = uri if isinstance(uri, str) else SIMPLE_COMPUTE
    asked: dict[str, Any] = {}
    for name, unit in (("cores", 1), ("memory", _UNITS["GiB"])):
        value = spec.get(name)
        if value is None:
            continue
        ranged = _range(value, f"{path}.{name}", name, unit, bad)
        if ranged is not None:
            got, requested = ranged
            asked[name] = got
            echo[name] = {"requested": requested}
    request.echo["resources"] = {"compute": [echo]}
    if asked:
        request.ask["resources"] = asked


def _unoffered(spec: Mapping[str, Any], path: str, request: BrokerRequest) -> None:
    """What a compute resource asks that this site never offers: volumes,
    replicas, extras (a GPU, an FPGA) or any field it does not know. The
    draft: a site that does not understand a resource may answer NO."""
    for key, value in spec.items():
        if key == "replicas" and value in (None, 1):
            continue
        if key == "volumes" and not value:
            continue
        if key in ("volumes", "replicas") or key not in _COMPUTE_FIELDS:
            text = f"this site offers no compute {key}"
            request.notes.append(Note("ERROR", "RESOURCE_NOT_OFFERED", f"{path}.{key}", text))


def _range(
    value: Any, path: str, name: str, unit: int, bad: list[FieldViolation]
) -> tuple[dict[str, int], dict[str, Any]] | None:
    """A ``{min, max}`` (or ``{requested: {min, max}}``) of whole cores or of
    memory in ``units`` (GiB by default): the Ask's range, and the request's."""
    if isinstance(value, Mapping) and isinstance(value.get("requested"), Mapping):
        value, path = value["requested"], f"{path}.requested"
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = {"min": value}  # the draft text's "size: 1024"
    if not isinstance(value, Mapping):
        bad.append(FieldViolation(path, "must be a mapping of min and max"))
        return None
    if name == "memory":
        units = value.get("units", "GiB")
        if units not in _UNITS:
            bad.append(FieldViolation(f"{path}.units", f"must be one of {', '.join(_UNITS)}"))
            return None
        unit = _UNITS[units]
    got: dict[str, int] = {}
    for end in ("min", "max"):
        amount = value.get(end)
        if amount is None:
            continue
        if isinstance(amount, bool) or not isinstance(amount, int | float) or amount < 0:
            bad.append(FieldViolation(f"{path}.{end}", "must be a number, 0 or more"))
        elif name == "cores" and not float(amount).is_integer():
            bad.append(FieldViolation(f"{path}.{end}", "must be a whole number of cores"))
        elif not math.isfinite(amount) or amount * unit >= 2**63:
            bad.append(FieldViolation(f"{path}.{end}", "is too large"))
        else:
            got[end] = round(amount * unit)
    requested = {k: value[k] for k in ("min", "max", "units", "minimal") if k in value}
    return got, requested


# --- schedule ------------------------------------------------------------------


def _schedule(value: Any, request: BrokerRequest, now: datetime, bad: list[FieldViolation]) -> None:
    requested: Any = None
    if value is not None:
        if not isinstance(value, Mapping):
            bad.append(FieldViolation("schedule", "must be a mapping (an object)"))
            return
        requested = value.get("requested")
        if requested is not None and not isinstance(requested, Mapping):
            bad.append(FieldViolation("schedule.requested", "must be a mapping (an object)"))
            return
    requested = requested or {}
    starts = requested.get("start")
    if isinstance(starts, str):
        starts = [starts]  # Calycopis: one interval
    if starts is not None and not isinstance(starts, list):
        bad.append(FieldViolation("schedule.requested.start", "must be a list of intervals"))
        starts = None
    windows = []
    for i, text in enumerate(starts or ()):
        where = f"schedule.requested.start[{i}]"
        try:
            windows.append(_interval(text, where))
        except ValueError as exc:
            bad.append(FieldViolation(where, str(exc)))
    if not starts:
        windows = [(now, now + DEFAULT_WINDOW)]
    low, high = _durations(requested.get("duration"), bad)
    schedule: dict[str, Any] = {
        "windows": [{"start": _rfc3339(a), "end": _rfc3339(b)} for a, b in windows],
        "min_duration": f"{int(low.total_seconds())}s",
    }
    if high is not None:
        schedule["max_duration"] = f"{int(high.total_seconds())}s"
    request.ask["schedule"] = schedule
    # The draft's form: start/duration intervals, one duration.
    echo: dict[str, Any] = {}
    if starts and len(windows) == len(starts):
        echo["start"] = [f"{_rfc3339(a)}/{format_duration(b - a)}" for a, b in windows]
    if "duration" in requested:
        echo["duration"] = format_duration(low)
    request.echo["schedule"] = {"requested": echo}


def _durations(value: Any, bad: list[FieldViolation]) -> tuple[timedelta, timedelta | None]:
    path = "schedule.requested.duration"
    if value is None:
        return DEFAULT_DURATION, None
    pairs = value.items() if isinstance(value, Mapping) else [("", value)]
    got: dict[str, timedelta] = {}
    for end, text in pairs:
        where = f"{path}.{end}" if end else path
        if end not in ("", "min", "max"):
            bad.append(FieldViolation(where, "is not read (min, max)"))
            continue
        try:
            got[end] = parse_duration(text)
        except ValueError as exc:
            bad.append(FieldViolation(where, str(exc)))
    if "" in got:
        return got[""], None
    low = got.get("min", DEFAULT_DURATION)
    return low, got.get("max")


_DURATION = re.compile(
    r"P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:(?P<hours_>\d+)H)?"  # "P1H", as the draft text writes it
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)


def parse_duration(text: Any) -> timedelta:
    """An ISO 8601 duration (``PT2H``, ``P1DT30M``; the draft text's
    ``P1H`` too). Years and months have no fixed length: refused.

    :raises ValueError: saying why.
    """
    if not isinstance(text, str):
        raise ValueError("must be an ISO 8601 duration such as PT2H")
    match = _DURATION.fullmatch(text.strip())
    if match is None or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as PT2H")
    part = {k: v for k, v in match.groupdict().items() if v is not None}
    if "years" in part or "months" in part:
        raise ValueError(f"{text!r}: years and months have no fixed length; give days or hours")
    hours = float(part.get("hours", 0)) + float(part.get("hours_", 0))
    return timedelta(
        weeks=float(part.get("weeks", 0)),
        days=float(part.get("days", 0)),
        hours=hours,
        minutes=float(part.get("minutes", 0)),
        seconds=float(part.get("seconds", 0)),
    )


def format_duration(span: timedelta) -> str:
    """``span`` in whole seconds as an ISO 8601 duration (``PT2H30M``)."""
    seconds = max(0, int(span.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (seconds, "S")) if n)
    return f"PT{text or '0S'}"


def parse_time(text: str) -> datetime:
    """An ISO 8601 date and time (a date alone is its midnight); one with
    no offset is taken as UTC.

    :raises ValueError: saying why.
    """
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 date and time") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _interval(text: Any, path: str) -> tuple[datetime, datetime]:
    """An ISO 8601 start interval: ``start/end``, ``start/duration``, or a
    start alone (that instant); an end of ``T12:00Z`` is on the start's day."""
    if not isinstance(text, str):
        raise ValueError("must be an ISO 8601 interval such as 2030-01-01T10:00Z/PT1H")
    first, _, second = text.partition("/")
    start = parse_time(first)
    if not second:
        return start, start
    if second.startswith("P"):
        end = start + parse_duration(second)
    elif second.startswith("T"):
        end = parse_time(first.partition("T")[0] + second)
    else:
        end = parse_time(second)
    if end < start:
        raise ValueError(f"{text!r} ends before it starts")
    return start, end


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
