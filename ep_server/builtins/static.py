"""The built-in ``static`` plugin: claims declared in the config file alone.

A site can run an EP without writing Python::

    [[plugin.static.claims]]
    tasktype = "uri://docker-container"
    servicetype = "uri://docker-uws"
    serviceinfo = { endpoint = "http://example.org/dkuws" }
    cores = 16          # optional: at most 16 cores per task; "host" = this host's
    memory = "64GiB"    # optional: at most this much memory per task; or "host"
    fallback = false    # true: only while no other plugin claims this task type

Each claim whose task type is asked offers its service type and serviceinfo,
unless the request's *minimum* cores or memory exceed the claim's limit (a NO
with a CAPACITY reason). A requested maximum above the limit is capped in the
offer, with a message saying so. Several claims may share a task type; each
gives its own offer.

Reason codes: ``INSUFFICIENT_CORES``, ``INSUFFICIENT_MEMORY``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, field_validator

from ep_server.hookspecs import hookimpl
from ep_server.model import (
    Cause,
    Claim,
    HostInfo,
    IntRange,
    Offer,
    Reason,
    Resources,
    TaskQuery,
    Verdict,
    parse_bytes,
)
from ep_server.settings_types import URI


def _bytes_or_host(value: Any) -> Any:
    return value if value == "host" or value is None else parse_bytes(value)


class StaticClaim(BaseModel):
    """One ``[[plugin.static.claims]]`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasktype: URI
    servicetype: URI
    serviceinfo: dict[str, Any] = {}
    cores: int | Literal["host"] | None = None
    memory: Annotated[int | Literal["host"] | None, BeforeValidator(_bytes_or_host)] = None
    fallback: bool = False

    @field_validator("cores")
    @classmethod
    def _positive(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be at least 1")
        return value


class StaticConfig(BaseModel):
    """``[plugin.static]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    claims: list[StaticClaim] = []


class _Limits:
    """A claim with its limits resolved against the host."""

    __slots__ = ("claim", "cores", "memory")

    def __init__(self, claim: StaticClaim, host: HostInfo) -> None:
        self.claim = claim
        self.cores = host.cores if claim.cores == "host" else claim.cores
        self.memory = host.memory if claim.memory == "host" else claim.memory


@hookimpl
def ep_configure(settings: Mapping[str, Any], host: HostInfo) -> dict[str, list[_Limits]]:
    """Validate ``[plugin.static]`` and index its claims by task type."""
    config = StaticConfig.model_validate(settings)
    by_tasktype: dict[str, list[_Limits]] = {}
    for claim in config.claims:
        by_tasktype.setdefault(claim.tasktype, []).append(_Limits(claim, host))
    return by_tasktype


@hookimpl
def ep_claims(config: dict[str, list[_Limits]]) -> list[Claim]:
    """One claim per configured task type, with all its service types; a
    fallback claim only if every entry for that task type is a fallback."""
    return [
        Claim(
            tasktype,
            tuple(limits.claim.servicetype for limits in entries),
            fallback=all(limits.claim.fallback for limits in entries),
        )
        for tasktype, entries in config.items()
    ]


@hookimpl
async def ep_evaluate(query: TaskQuery, config: dict[str, list[_Limits]]) -> Verdict:
    """Offer every claim for the task type whose limits the request fits."""
    offers: list[Offer] = []
    reasons: list[Reason] = []
    for limits in config.get(query.tasktype, ()):
        cores, cores_note, cores_reason = _fit(query.resources.cores, limits.cores, "cores", "")
        memory, memory_note, memory_reason = _fit(
            query.resources.memory, limits.memory, "memory", " bytes"
        )
        declined = [r for r in (cores_reason, memory_reason) if r]
        if declined:
            reasons.extend(declined)
            continue
        offers.append(
            Offer(
                limits.claim.servicetype,
                limits.claim.serviceinfo,
                Resources(cores, memory),
                "; ".join(n for n in (cores_note, memory_note) if n),
            )
        )
    return Verdict(tuple(offers), tuple(reasons)) if offers else Verdict.no(*reasons)


def _fit(
    asked: IntRange, limit: int | None, name: str, unit: str
) -> tuple[IntRange, str, Reason | None]:
    """Fit the asked range under ``limit``: the offered range, a note when
    the maximum was capped, or a reason when even the minimum does not fit."""
    if limit is None:
        return asked, "", None
    if asked.min is not None and asked.min > limit:
        code = "INSUFFICIENT_CORES" if name == "cores" else "INSUFFICIENT_MEMORY"
        message = (
            f"asked for at least {asked.min}{unit} of {name}; "
            f"this service offers at most {limit}{unit}"
        )
        return asked, "", Reason(code, message, Cause.CAPACITY, False, f"resources.{name}.min")
    if asked.max is None or asked.max > limit:
        note = f"{name} capped at the limit of {limit}{unit}" if asked.max is not None else ""
        return IntRange(asked.min, limit), note, None
    return asked, "", None
