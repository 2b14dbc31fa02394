"""The site and the decision: a :class:`~ep_server.TaskQuery` against a :class:`Site`.

:class:`Site` is what the plugin knows after start-up: ``[plugin.docker]``
resolved against the host. :func:`decide` is pure: no I/O, no gRPC. Every
check runs, so a NO lists every problem found; a YES offers each configured
service with the resources fitted to the per-task limits
(:func:`ep_server.fit_resources`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ep_plugin_docker import reasons as R
from ep_plugin_docker.config import KNOWN_PROTOCOLS, DockerConfig, PortRange, Service
from ep_plugin_docker.platforms import Platform, check_platforms, host_platform, platform_names
from ep_plugin_docker.taskinfo import ContainerRequest, PortRequest, read_taskinfo
from ep_server import (
    Claim,
    Fit,
    HostInfo,
    Limit,
    Offer,
    Reason,
    Resources,
    TaskQuery,
    Verdict,
    fit_resources,
)

__all__ = ["TASKTYPES", "Site", "check_policy", "decide", "offers_or_reasons"]

#: The task types claimed: the IVOA note's, and the ExecutionBroker's alias.
TASKTYPES = (
    "uri://docker-container",
    "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/docker-container-1.0",
)

#: Protocols carried over another: ``http`` and ``https`` are allowed with ``tcp``.
_CARRIED_BY = {"http": "tcp", "https": "tcp"}
_KNOWN_PROTOCOLS_TEXT = ", ".join(KNOWN_PROTOCOLS)


@dataclass(frozen=True, slots=True)
class Site:
    """What the plugin decides against: its config, resolved against the host.

    The fields after ``runtime_timeout`` are derived from the others when the
    site is made (what every Ask would otherwise work out again): the
    service types and serviceinfos to offer, the protocols allowed (those
    carried by an allowed one included), the allowed port ranges as bounds,
    and the lists that refusals name.
    """

    services: tuple[Service, ...]
    platforms: tuple[Platform, ...]
    cores: Limit
    memory: Limit
    allow_privileged: bool = False
    allow_host_network: bool = False
    allowed_protocols: frozenset[str] = frozenset({"tcp", "udp"})
    allowed_ports: tuple[PortRange, ...] = (PortRange(low=1024, high=65535),)
    runtime_socket: str | None = None
    runtime_timeout: float = 0.5
    offered: tuple[tuple[str, Mapping[str, Any]], ...] = field(
        init=False, repr=False, compare=False
    )
    usable_protocols: frozenset[str] = field(init=False, repr=False, compare=False)
    port_bounds: tuple[tuple[int, int], ...] = field(init=False, repr=False, compare=False)
    protocols_text: str = field(init=False, repr=False, compare=False)
    ports_text: str = field(init=False, repr=False, compare=False)
    platforms_text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        derived = {
            "offered": tuple((s.servicetype, s.serviceinfo) for s in self.services),
            "usable_protocols": frozenset(
                p for p in KNOWN_PROTOCOLS if _protocol_allowed(p, self.allowed_protocols)
            ),
            "port_bounds": tuple((r.low, r.high) for r in self.allowed_ports),
            "protocols_text": ", ".join(sorted(self.allowed_protocols)),
            "ports_text": ", ".join(str(r) for r in self.allowed_ports),
            "platforms_text": platform_names(self.platforms),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @classmethod
    def resolve(cls, config: DockerConfig, host: HostInfo) -> Site:
        """Fill in what the config leaves to the host: the per-task limits
        are ``max_cores``/``max_memory`` if set, else the host's (a host whose
        memory could not be detected sets no memory limit)."""
        return cls(
            services=tuple(config.services),
            platforms=config.parsed_platforms() or (host_platform(host.os, host.architecture),),
            cores=Limit(config.max_cores) if config.max_cores else Limit.host(host.cores),
            memory=Limit(config.max_memory) if config.max_memory else Limit.host(host.memory),
            allow_privileged=config.allow_privileged,
            allow_host_network=config.allow_host_network,
            allowed_protocols=frozenset(config.allowed_protocols),
            allowed_ports=tuple(config.allowed_ports),
            runtime_socket=config.runtime_socket,
            runtime_timeout=config.runtime_timeout,
        )

    def claims(self) -> list[Claim]:
        """Both task types, each with every configured service type."""
        servicetypes = tuple(dict.fromkeys(s.servicetype for s in self.services))
        return [Claim(tasktype, servicetypes) for tasktype in TASKTYPES]

    def fit(self, asked: Resources) -> Fit:
        """The resources asked for, fitted under the per-task limits."""
        return fit_resources(asked, cores=self.cores, memory=self.memory)


# --- the decision ----------------------------------------------------------


def decide(query: TaskQuery, site: Site) -> Verdict:
    """Decide whether this host can run the container ``query`` describes."""
    request, found = read_taskinfo(query.taskinfo)
    if request.platforms:
        found += check_platforms(request.platforms, site.platforms, site.platforms_text)
    if request.privileged or request.host_network or request.ports:
        found += check_policy(request, site)
    fit = site.fit(query.resources)
    if found or fit.reasons:
        return Verdict.no(*found, *fit.reasons)
    message = fit.message
    if request.ignored:
        note = ignored_note(request.ignored)
        message = f"{message}; {note}" if message else note
    resources = fit.resources
    return Verdict.yes(*[Offer(t, info, resources, message) for t, info in site.offered])


def ignored_note(ignored: Sequence[str]) -> str:
    """The offer's note on taskinfo fields this plugin does not read."""
    if not ignored:
        return ""
    return f"ignored taskinfo fields this site does not know: {', '.join(ignored)}"


def offers_or_reasons(site: Site, fit: Fit, reasons: Iterable[Reason], note: str = "") -> Verdict:
    """NO with ``reasons`` if there are any, else YES with one offer per
    service, its message the fit's and then ``note``."""
    found = tuple(reasons)
    if found:
        return Verdict.no(*found)
    message = "; ".join(m for m in (fit.message, note) if m)
    return Verdict.yes(*(Offer(t, info, fit.resources, message) for t, info in site.offered))


# --- policy ----------------------------------------------------------------


def check_policy(request: ContainerRequest, site: Site) -> list[Reason]:
    """The site's policy on privileges, networking and ports."""
    found = []
    if request.privileged and not site.allow_privileged:
        found.append(
            R.reason(
                R.PRIVILEGED_NOT_ALLOWED,
                "taskinfo.privileged",
                "this site does not run privileged containers",
            )
        )
    if request.host_network and not site.allow_host_network:
        found.append(
            R.reason(
                R.HOST_NETWORK_NOT_ALLOWED,
                request.host_network,
                "this site does not give containers the host's network",
            )
        )
    for port in request.ports:
        protocol = port.protocol or "tcp"
        if protocol not in site.usable_protocols:
            found.append(_protocol_refused(port, protocol, site))
        external = port.external
        if external is not None and not _port_allowed(external, site.port_bounds):
            found.append(
                R.reason(
                    R.PORT_NOT_ALLOWED,
                    f"{port.field}.external",
                    f"external port {external} is outside the ports allowed here "
                    f"({site.ports_text})",
                )
            )
    return found


def _protocol_refused(port: PortRequest, protocol: str, site: Site) -> Reason:
    path = f"{port.field}.protocol"
    if protocol not in KNOWN_PROTOCOLS:
        message = f"protocol {protocol!r} is not one of {_KNOWN_PROTOCOLS_TEXT}"
        return R.reason(R.INVALID_PROTOCOL, path, message)
    message = f"protocol {protocol} is not allowed here ({site.protocols_text} are)"
    return R.reason(R.PROTOCOL_NOT_ALLOWED, path, message)


def _port_allowed(port: int, bounds: Iterable[tuple[int, int]]) -> bool:
    return any(low <= port <= high for low, high in bounds)


def _protocol_allowed(protocol: str, allowed: frozenset[str]) -> bool:
    return protocol in allowed or _CARRIED_BY.get(protocol) in allowed
