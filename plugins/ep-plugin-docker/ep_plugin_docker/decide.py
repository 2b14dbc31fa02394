"""The site and the decision: a :class:`~ep_server.TaskQuery` against a :class:`Site`.

:class:`Site` is what the plugin knows after start-up: ``[plugin.docker]``
resolved against the host. :func:`decide` is pure: no I/O, no gRPC. Every
check runs, so a NO lists every problem found; a YES offers each configured
service with the resources fitted to the per-task limits
(:func:`ep_server.fit_resources`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from ep_plugin_docker import reasons as R
from ep_plugin_docker.config import KNOWN_PROTOCOLS, DockerConfig, PortRange, Service
from ep_plugin_docker.platforms import Platform, check_platforms, host_platform
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


@dataclass(frozen=True, slots=True)
class Site:
    """What the plugin decides against: its config, resolved against the host."""

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
    found += check_platforms(request.platforms, site.platforms)
    found += check_policy(request, site)
    fit = site.fit(query.resources)
    return offers_or_reasons(site, fit, [*found, *fit.reasons], ignored_note(request.ignored))


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
    return Verdict.yes(
        *(Offer(s.servicetype, s.serviceinfo, fit.resources, message) for s in site.services)
    )


# --- policy ----------------------------------------------------------------


def check_policy(request: ContainerRequest, site: Site) -> list[Reason]:
    """The site's policy on privileges, networking and ports."""
    found = [*_check_privileges(request, site)]
    for port in request.ports:
        found += [*_check_protocol(port, site), *_check_external(port, site)]
    return found


def _check_privileges(request: ContainerRequest, site: Site) -> Iterator[Reason]:
    if request.privileged and not site.allow_privileged:
        yield R.reason(
            R.PRIVILEGED_NOT_ALLOWED,
            "taskinfo.privileged",
            "this site does not run privileged containers",
        )
    if request.host_network and not site.allow_host_network:
        yield R.reason(
            R.HOST_NETWORK_NOT_ALLOWED,
            request.host_network,
            "this site does not give containers the host's network",
        )


def _check_protocol(port: PortRequest, site: Site) -> Iterator[Reason]:
    protocol, path = port.protocol or "tcp", f"{port.field}.protocol"
    if protocol not in KNOWN_PROTOCOLS:
        known = ", ".join(KNOWN_PROTOCOLS)
        yield R.reason(R.INVALID_PROTOCOL, path, f"protocol {protocol!r} is not one of {known}")
    elif not _protocol_allowed(protocol, site):
        allowed = ", ".join(sorted(site.allowed_protocols))
        yield R.reason(
            R.PROTOCOL_NOT_ALLOWED, path, f"protocol {protocol} is not allowed here ({allowed} are)"
        )


def _check_external(port: PortRequest, site: Site) -> Iterator[Reason]:
    if port.external is None or any(port.external in r for r in site.allowed_ports):
        return
    ranges = ", ".join(str(r) for r in site.allowed_ports)
    yield R.reason(
        R.PORT_NOT_ALLOWED,
        f"{port.field}.external",
        f"external port {port.external} is outside the ports allowed here ({ranges})",
    )


def _protocol_allowed(protocol: str, site: Site) -> bool:
    carrier = _CARRIED_BY.get(protocol)
    return protocol in site.allowed_protocols or carrier in site.allowed_protocols
