"""Resource fitting: what to offer of the cores and memory a request asks for.

One rule for every plugin (the built-in ``static``, the in-tree plugins and
any third party's), applied to each resource on its own:

* **No known limit** (``None``): the range is offered as asked, open ends
  included.
* **A minimum above the limit** cannot be met: a CAPACITY reason, not
  retryable, on ``resources.<name>.min``, with the code
  ``INSUFFICIENT_CORES`` or ``INSUFFICIENT_MEMORY``. The range is not offered.
* **A maximum above the limit** is capped at the limit, with a note saying so
  (plugins put the notes in the offer's ``message``).
* **An open maximum** is offered up to the limit, without a note.

Why an open maximum is closed at the limit: an offer should state what the
task will get. A client that ranks offers by "most cores" or "most memory"
(``ep --rank``) reads the offered maximum, and an offer left open would
promise more than the site gives. No note, because nothing the request asked
for was cut.

Why a host amount of 0 is no limit (:meth:`Limit.host`): :class:`HostInfo`
reports 0 when the EP could not detect the amount (physical memory on some
platforms). Taken as a limit of 0, it would cap every open maximum at
"0 bytes" and refuse every minimum, on a host that certainly has memory.

The messages are built from words the caller supplies: ``Limit.source`` says
what sets a limit (``"this host's cores"``, ``"the per-task limit of
memory"``), given in parentheses when set; ``gets`` is what a refusal says
before "at most N" (``"a task here gets"``, ``"this service offers"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from ep_server.model import Cause, IntRange, Reason, Resources

__all__ = [
    "INSUFFICIENT_CORES",
    "INSUFFICIENT_MEMORY",
    "Fit",
    "Limit",
    "LimitLike",
    "RangeFit",
    "ResourceName",
    "fit_range",
    "fit_resources",
]

#: The reason code for a minimum of cores above the limit.
INSUFFICIENT_CORES = "INSUFFICIENT_CORES"
#: The reason code for a minimum of memory above the limit.
INSUFFICIENT_MEMORY = "INSUFFICIENT_MEMORY"

#: The resources of a request: the fields of :class:`~ep_server.Resources`.
ResourceName: TypeAlias = Literal["cores", "memory"]

_CODES: dict[str, str] = {"cores": INSUFFICIENT_CORES, "memory": INSUFFICIENT_MEMORY}
_UNITS: dict[str, str] = {"cores": "", "memory": " bytes"}
_GETS = "a task here gets"


@dataclass(frozen=True, slots=True)
class Limit:
    """The most of one resource a task may get (``None``: no known limit),
    and words saying what sets it, for the messages (``""``: unsaid)."""

    value: int | None
    source: str = ""

    @classmethod
    def host(cls, amount: int, source: str = "") -> Limit:
        """A limit read from :class:`~ep_server.HostInfo`, where 0 means the
        EP could not detect the amount: then there is no limit."""
        return cls(amount or None, source)


#: What :func:`fit_range` and :func:`fit_resources` take as a limit: a
#: :class:`Limit`, or a bare amount (``None``: no limit).
LimitLike: TypeAlias = Limit | int | None


@dataclass(frozen=True, slots=True)
class RangeFit:
    """One resource fitted: the range to offer, and a note on a capped
    maximum or the reason a minimum cannot be met."""

    offered: IntRange
    note: str = ""
    reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class Fit:
    """Both resources fitted: what to offer, the notes on what was capped,
    and the reasons when a minimum cannot be met (then decline)."""

    resources: Resources
    notes: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()

    @property
    def message(self) -> str:
        """The notes as one offer message (``""`` when nothing was capped)."""
        return "; ".join(self.notes)


def fit_range(
    asked: IntRange, limit: LimitLike, name: ResourceName, *, gets: str = _GETS
) -> RangeFit:
    """Fit the range asked for one resource under ``limit`` (see the module's rule)."""
    offered, note, reason = _fit(asked, limit, name, gets)
    return RangeFit(offered, note, reason)


def _fit(
    asked: IntRange, limit: LimitLike, name: ResourceName, gets: str
) -> tuple[IntRange, str, Reason | None]:
    """:func:`fit_range`'s answer as a plain tuple: offered, note, reason."""
    bound = limit if isinstance(limit, Limit) else Limit(limit)
    value = bound.value
    if value is None:
        return asked, "", None
    if asked.min is not None and asked.min > value:
        return asked, "", _insufficient(asked.min, bound, name, gets)
    if asked.max is None:
        return IntRange(asked.min, value), "", None
    if asked.max <= value:
        return asked, "", None
    unit = _UNITS[name]
    capped = f"{value}{unit} ({bound.source})" if bound.source else f"the limit of {value}{unit}"
    return IntRange(asked.min, value), f"{name} capped at {capped}", None


def _insufficient(minimum: int, limit: Limit, name: ResourceName, gets: str) -> Reason:
    unit = _UNITS[name]
    message = f"asked for at least {minimum}{unit} of {name}; {gets} at most {limit.value}{unit}"
    if limit.source:
        message += f" ({limit.source})"
    return Reason(_CODES[name], message, Cause.CAPACITY, False, f"resources.{name}.min")


def fit_resources(
    asked: Resources,
    *,
    cores: LimitLike = None,
    memory: LimitLike = None,
    gets: str = _GETS,
) -> Fit:
    """Fit a request's cores and memory under their limits (``None``: no
    limit); the reasons of both when neither minimum can be met."""
    cores_offered, cores_note, cores_reason = _fit(asked.cores, cores, "cores", gets)
    memory_offered, memory_note, memory_reason = _fit(asked.memory, memory, "memory", gets)
    offered = Resources(cores_offered, memory_offered)
    if not (cores_note or memory_note or cores_reason or memory_reason):
        return Fit(offered)
    return Fit(
        offered,
        tuple(note for note in (cores_note, memory_note) if note),
        tuple(reason for reason in (cores_reason, memory_reason) if reason),
    )
