"""Plain Python objects that plugins see: never protobuf.

The servicer converts the wire messages into these at the edge
(:mod:`ep_server.wire`) and back; everything between, the planner and every
plugin, works with these frozen dataclasses only, so plugins depend on this
module's API and not on generated code.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NoReturn

__all__ = [
    "ANONYMOUS",
    "MAX_TASKINFO_DEPTH",
    "Booking",
    "BookingState",
    "Cause",
    "Claim",
    "FrozenInfo",
    "HostInfo",
    "Identity",
    "IntRange",
    "Offer",
    "Reason",
    "Resources",
    "Schedule",
    "Slot",
    "TaskQuery",
    "Verdict",
    "Window",
    "parse_bytes",
]


class Cause(enum.Enum):
    """Where the cause of a :class:`Reason` lies (``ReasonCause`` on the wire)."""

    #: The request cannot be satisfied as written.
    REQUEST = 1
    #: The site's policy refuses it.
    POLICY = 2
    #: The site lacks the resources (now, or ever: see ``Reason.retryable``).
    CAPACITY = 3
    #: A fault on the site's side (a plugin error or timeout).
    INTERNAL = 4


@dataclass(frozen=True, slots=True)
class IntRange:
    """An inclusive range of non-negative integers; ``None`` leaves an end open."""

    min: int | None = None
    max: int | None = None


_UNBOUNDED = IntRange()


@dataclass(frozen=True, slots=True)
class Resources:
    """Cores and memory (bytes), each as a range: asked for, or offered."""

    cores: IntRange = _UNBOUNDED
    memory: IntRange = _UNBOUNDED


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking, as the EP authenticated them.

    ``subject`` is the caller's stable name (a token's name, a JWT's ``sub``
    claim, or a client certificate's subject); ``method`` says how it was
    established: ``"token"``, ``"jwt"``, ``"mtls"`` or ``"anonymous"``.
    """

    subject: str
    method: str = "anonymous"
    groups: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)

    @property
    def anonymous(self) -> bool:
        """True when the caller presented no credentials."""
        return self.method == "anonymous"


#: The identity of a caller that presented no credentials.
ANONYMOUS = Identity("anonymous")

#: The deepest taskinfo nesting any site accepts (the top-level object is
#: level 1). protobuf's decoder refuses messages nested much deeper (each
#: level of a Struct costs it about three of its 100), so a site may lower
#: this (``[server] max_taskinfo_depth``) but never raise it.
MAX_TASKINFO_DEPTH = 32


#: The deepest nesting of a :class:`FrozenInfo` (the mapping itself is
#: level 1): what the plugin contract accepts in a serviceinfo.
MAX_INFO_DEPTH = 32


class FrozenInfo(dict[str, Any]):
    """A JSON object that cannot change: for a serviceinfo fixed at start-up.

    ``FrozenInfo(mapping)`` copies ``mapping`` deeply: nested mappings become
    FrozenInfo, lists and tuples become tuples, and every value must be JSON
    (string keys; str, int, finite float, bool, None, lists and mappings of
    them, at most :data:`MAX_INFO_DEPTH` levels deep), else ``TypeError`` or
    ``ValueError``. It reads like the dict it is (it is hashable, too); every
    method that would change it raises ``TypeError``, and ``copy()`` or
    ``dict(info)`` give a mutable copy.

    (Called on it directly, ``dict``'s own methods, ``dict.update(info,
    ...)`` and the like, still change it; its encoding and hash would then
    no longer match it. Don't.)

    Because it cannot change, the EP encodes an offer's FrozenInfo serviceinfo
    for the wire once and reuses that for every answer that offers it; a plain
    dict is encoded anew each time. Plugins that offer the same serviceinfo on
    every Ask (one read from their config) store it as a FrozenInfo; the
    config type :data:`ep_server.settings_types.ServiceInfo` (and
    ``ServiceEntry``) do that.
    """

    __slots__ = ("_depth", "_encoded", "_hash")

    _depth: int
    #: The wire layer's encoding (:mod:`ep_server.wire.responses`), made on first use.
    _encoded: bytes | None
    _hash: int | None

    def __new__(cls, data: Mapping[str, Any] | Iterable[tuple[str, Any]] = (), /) -> FrozenInfo:
        if type(data) is cls:
            return data
        return _freeze_mapping(cls, dict(data), "", MAX_INFO_DEPTH)

    def __init__(self, data: object = (), /) -> None:
        """Does nothing: :meth:`__new__` built the mapping (``dict.__init__``
        would add ``data`` to it again, unfrozen)."""

    def __repr__(self) -> str:
        return f"FrozenInfo({dict.__repr__(self)})"

    def __hash__(self) -> int:  # type: ignore[override]  # dict sets __hash__ = None
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(frozenset(self.items())))
        assert self._hash is not None
        return self._hash

    def __reduce__(self) -> tuple[type[FrozenInfo], tuple[dict[str, Any]]]:
        return FrozenInfo, (dict(self),)

    def __copy__(self) -> FrozenInfo:
        return self

    def __deepcopy__(self, memo: object) -> FrozenInfo:
        return self

    def _immutable(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a FrozenInfo cannot change; change a copy (dict(info)) instead")

    __setitem__ = __delitem__ = __setattr__ = __delattr__ = _immutable
    clear = pop = popitem = setdefault = update = _immutable
    __ior__ = _immutable


def _freeze_mapping(
    cls: type[FrozenInfo], data: dict[Any, Any], path: str, room: int
) -> FrozenInfo:
    """``data`` as a FrozenInfo nested at most ``room`` levels deep."""
    if room <= 0:
        raise ValueError(f"{path or 'the mapping'} nests deeper than {MAX_INFO_DEPTH} levels")
    info = dict.__new__(cls)
    depth = 0
    for key, value in data.items():
        if not isinstance(key, str):
            raise TypeError(f"{path or 'the mapping'} has a key of type {type(key).__name__}")
        frozen, level = _freeze(value, f"{path}.{key}" if path else key, room - 1)
        dict.__setitem__(info, key, frozen)
        depth = max(depth, level)
    object.__setattr__(info, "_depth", depth + 1)
    object.__setattr__(info, "_encoded", None)
    object.__setattr__(info, "_hash", None)
    return info


def _freeze(value: object, path: str, room: int) -> tuple[object, int]:
    """``value`` frozen, and how deeply it nests (0 for a scalar)."""
    if isinstance(value, str | bool) or value is None:
        return value, 0
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            raise ValueError(f"{path} is an integer too large for a JSON number") from None
        return value, 0
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} is {value}, not a JSON number")
        return value, 0
    if type(value) is FrozenInfo:
        if value._depth > room:
            raise ValueError(f"{path} nests deeper than {MAX_INFO_DEPTH} levels")
        return value, value._depth
    if isinstance(value, Mapping):
        frozen = _freeze_mapping(FrozenInfo, dict(value), path, room)
        return frozen, frozen._depth
    if isinstance(value, list | tuple):
        if room <= 0:
            raise ValueError(f"{path} nests deeper than {MAX_INFO_DEPTH} levels")
        items = [_freeze(item, f"{path}[{i}]", room - 1) for i, item in enumerate(value)]
        return tuple(item for item, _ in items), 1 + max((level for _, level in items), default=0)
    raise TypeError(f"{path} is a {type(value).__name__}, not a JSON value")


@dataclass(frozen=True, slots=True)
class Slot:
    """A half-open interval of time ``[start, end)``, in UTC."""

    start: datetime
    end: datetime

    @property
    def duration(self) -> timedelta:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class Window:
    """An acceptable range of *start* times, inclusive at both ends."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a task may run: start windows and a duration range."""

    windows: tuple[Window, ...]
    min_duration: timedelta
    max_duration: timedelta | None = None


class BookingState(enum.Enum):
    """A booking's state; FINISHED is derived: its slot has ended."""

    BOOKED = 1
    CANCELLED = 2
    FINISHED = 3


@dataclass(frozen=True, slots=True)
class Booking:
    """An accepted offer, registered in the site's schedule."""

    id: str
    offer_id: str
    owner: str
    plugin: str
    servicetype: str
    serviceinfo: Mapping[str, Any]
    slot: Slot
    need: Mapping[str, int]
    state: BookingState
    create_time: datetime
    cancel_time: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """One "can I do this?" question, as plugins see it.

    ``taskinfo`` is the request's taskinfo as plain JSON-like Python values
    (dict, list, str, float, bool, None). Several plugins may read the same
    query at once: treat it as read-only.
    """

    tasktype: str
    taskinfo: Mapping[str, Any] = field(default_factory=dict)
    resources: Resources = Resources()
    #: Who asked; plugins may decide by it (policy).
    identity: Identity = ANONYMOUS
    #: When the task may run ("when can I run this?"); None means now.
    schedule: Schedule | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    """One service that can perform the task.

    ``serviceinfo`` must hold JSON-like values only (it becomes a
    ``google.protobuf.Struct``). The EP adds the plugin's name itself.
    """

    servicetype: str
    serviceinfo: Mapping[str, Any] = field(default_factory=dict)
    resources: Resources | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a plugin declined.

    ``code`` is a stable UPPER_SNAKE_CASE identifier that clients may rely on;
    ``field`` is the request field the reason is about (for example
    ``"taskinfo.image"``), if any. The EP adds the plugin's name itself.
    """

    code: str
    message: str
    cause: Cause = Cause.REQUEST
    retryable: bool = False
    field: str = ""
    #: On a NO for lack of capacity: the earliest slot that would fit.
    earliest_slot: Slot | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A plugin's answer: YES when it has at least one offer.

    A plugin that declines must give at least one reason; use :meth:`yes` and
    :meth:`no` rather than the constructor.
    """

    offers: tuple[Offer, ...] = ()
    reasons: tuple[Reason, ...] = ()

    @classmethod
    def yes(cls, *offers: Offer) -> Verdict:
        """A YES with the given offers (at least one)."""
        if not offers:
            raise ValueError("Verdict.yes() needs at least one offer")
        return cls(offers=offers)

    @classmethod
    def no(cls, *reasons: Reason) -> Verdict:
        """A NO with the given reasons (at least one)."""
        if not reasons:
            raise ValueError("Verdict.no() needs at least one reason")
        return cls(reasons=reasons)


@dataclass(frozen=True, slots=True)
class Claim:
    """A task type a plugin claims, and the service types it may offer for it.

    A ``fallback`` claim stands only while no other loaded plugin claims the
    same task type with a regular claim: a default answer that a specialised
    plugin replaces when it is installed.
    """

    tasktype: str
    servicetypes: tuple[str, ...] = ()
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class HostInfo:
    """The host the EP runs on, as detected or as overridden in the config."""

    cores: int
    memory: int
    architecture: str
    os: str


_BYTES = re.compile(r"^\s*(\d+)\s*([KMGTP]i?B?|B)?\s*$", re.IGNORECASE)
_UNIT = {"": 1, "B": 1}
for _i, _p in enumerate("KMGTP", start=1):
    _UNIT[_p] = _UNIT[_p + "B"] = 1000**_i
    _UNIT[_p + "I"] = _UNIT[_p + "IB"] = 1024**_i


def parse_bytes(value: int | str) -> int:
    """Parse a byte count: an int, or a string such as ``"512MiB"`` or ``"8GB"``.

    Binary units (KiB, MiB, GiB, TiB, PiB) are powers of 1024; decimal ones
    (KB, MB, GB...) powers of 1000.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a byte count: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"byte count must not be negative: {value}")
        return value
    match = _BYTES.match(value)
    if not match:
        raise ValueError(f"not a byte count: {value!r} (use e.g. 1048576, 512MiB or 8GiB)")
    return int(match[1]) * _UNIT[(match[2] or "").upper()]
