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
with the resources fitted under the claim's limits by
:func:`ep_server.fit_resources`: a *minimum* above a limit is a NO with a
CAPACITY reason, a maximum above it is capped in the offer with a message
saying so, an open maximum is offered up to the limit. A ``"host"`` limit the
EP could not detect (memory 0) is no limit. Several claims may share a task
type; each gives its own offer.

Reason codes: ``INSUFFICIENT_CORES``, ``INSUFFICIENT_MEMORY``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ep_server.fitting import Limit, fit_resources
from ep_server.hookspecs import hookimpl
from ep_server.model import Claim, HostInfo, Offer, Reason, TaskQuery, Verdict, parse_bytes
from ep_server.settings_types import URI, ServiceInfo


def _bytes_or_host(value: Any) -> Any:
    return value if value == "host" or value is None else parse_bytes(value)


class StaticClaim(BaseModel):
    """One ``[[plugin.static.claims]]`` entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tasktype: URI
    servicetype: URI
    #: A FrozenInfo: offered unchanged on every Ask, encoded for the wire once.
    serviceinfo: ServiceInfo = Field(default={}, validate_default=True)
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
        self.cores = _limit(claim.cores, host.cores)
        self.memory = _limit(claim.memory, host.memory)


def _limit(configured: int | Literal["host"] | None, host_amount: int) -> Limit:
    return Limit.host(host_amount) if isinstance(configured, str) else Limit(configured)


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
        fit = fit_resources(
            query.resources, cores=limits.cores, memory=limits.memory, gets="this service offers"
        )
        if fit.reasons:
            reasons.extend(fit.reasons)
            continue
        claim = limits.claim
        offers.append(Offer(claim.servicetype, claim.serviceinfo, fit.resources, fit.message))
    return Verdict(tuple(offers), tuple(reasons)) if offers else Verdict.no(*reasons)
