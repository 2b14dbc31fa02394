"""Do the cores and memory asked for fit the host and the per-task limits?

Each resource's limit is the smaller of the host's capacity and the
configured per-task limit (``max_cores``, ``max_memory``). A *minimum* above
the limit cannot be met: a CAPACITY reason on ``resources.<name>.min``. A
*maximum* above it is capped at the limit in the offer, with a note saying
so. An open maximum is offered up to the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ep_server import Cause, HostInfo, IntRange, Reason, Resources

__all__ = ["Fit", "Limit", "RangeFit", "ResourceLimits", "fit_range", "fit_resources"]

_CODES = {"cores": "INSUFFICIENT_CORES", "memory": "INSUFFICIENT_MEMORY"}
_UNITS = {"cores": "", "memory": " bytes"}


@dataclass(frozen=True, slots=True)
class Limit:
    """The most of one resource a task may get, and what sets it."""

    value: int | None
    source: str = ""

    @classmethod
    def of(cls, host: int, configured: int | None, name: str) -> Limit:
        """The tighter of the host's capacity (0: unknown) and the per-task limit."""
        if configured is not None and (not host or configured < host):
            return cls(configured, f"the per-task limit of {name}")
        return cls(host or None, f"this host's {name}")


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """The per-task limits on cores and memory, resolved against the host."""

    cores: Limit = Limit(None)
    memory: Limit = Limit(None)

    @classmethod
    def of(cls, host: HostInfo, max_cores: int | None, max_memory: int | None) -> ResourceLimits:
        """Resolve the configured limits against the host's capacity."""
        return cls(
            Limit.of(host.cores, max_cores, "cores"), Limit.of(host.memory, max_memory, "memory")
        )


@dataclass(frozen=True, slots=True)
class Fit:
    """What can be offered for a request: the ranges, notes on what was
    capped, and the reasons when a minimum cannot be met."""

    resources: Resources
    notes: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True, slots=True)
class RangeFit:
    """One resource fitted: the offered range, and a note or a reason."""

    offered: IntRange
    note: str = ""
    reason: Reason | None = None


def fit_resources(asked: Resources, limits: ResourceLimits) -> Fit:
    """Fit both resources; the reasons of both when neither fits."""
    cores = fit_range(asked.cores, limits.cores, "cores")
    memory = fit_range(asked.memory, limits.memory, "memory")
    return Fit(
        Resources(cores.offered, memory.offered),
        tuple(n for n in (cores.note, memory.note) if n),
        tuple(r for r in (cores.reason, memory.reason) if r),
    )


def fit_range(asked: IntRange, limit: Limit, name: str) -> RangeFit:
    """Fit the asked range of one resource under ``limit``."""
    if limit.value is None:
        return RangeFit(asked)
    unit = _UNITS[name]
    if asked.min is not None and asked.min > limit.value:
        message = (
            f"asked for at least {asked.min}{unit} of {name}; a notebook here gets "
            f"at most {limit.value}{unit} ({limit.source})"
        )
        reason = Reason(_CODES[name], message, Cause.CAPACITY, False, f"resources.{name}.min")
        return RangeFit(asked, reason=reason)
    if asked.max is not None and asked.max <= limit.value:
        return RangeFit(asked)
    capped = IntRange(asked.min, limit.value)
    if asked.max is None:
        return RangeFit(capped)
    return RangeFit(capped, f"{name} capped at {limit.value}{unit} ({limit.source})")
