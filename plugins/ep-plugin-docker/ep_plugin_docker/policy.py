"""The site: the plugin's configuration resolved against the host, and the
checks of a :class:`~ep_plugin_docker.taskinfo.ContainerRequest` against it.

Pure functions, no I/O. Each check returns every reason it finds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ep_plugin_docker import reasons as R
from ep_plugin_docker.config import KNOWN_PROTOCOLS, DockerConfig, PortRange, Service
from ep_plugin_docker.platforms import Platform, host_platform
from ep_plugin_docker.taskinfo import ContainerRequest, PortRequest
from ep_server import HostInfo, IntRange, Reason, Resources

__all__ = ["Fit", "Site", "check_platforms", "check_policy", "fit_resources"]

#: Protocols carried over another: ``http`` and ``https`` are allowed with ``tcp``.
_CARRIED_BY = {"http": "tcp", "https": "tcp"}


@dataclass(frozen=True, slots=True)
class Site:
    """What the plugin decides against: its config, resolved against the host."""

    services: tuple[Service, ...]
    platforms: tuple[Platform, ...]
    max_cores: int | None
    max_memory: int | None
    allow_privileged: bool = False
    allow_host_network: bool = False
    allowed_protocols: frozenset[str] = frozenset({"tcp", "udp"})
    allowed_ports: tuple[PortRange, ...] = (PortRange(low=1024, high=65535),)
    runtime_socket: str | None = None
    runtime_timeout: float = 0.5

    @classmethod
    def resolve(cls, config: DockerConfig, host: HostInfo) -> Site:
        """Fill in what the config leaves to the host. A host whose memory
        could not be detected (0) sets no memory limit."""
        return cls(
            services=tuple(config.services),
            platforms=config.parsed_platforms() or (host_platform(host.os, host.architecture),),
            max_cores=config.max_cores or host.cores,
            max_memory=config.max_memory or host.memory or None,
            allow_privileged=config.allow_privileged,
            allow_host_network=config.allow_host_network,
            allowed_protocols=frozenset(config.allowed_protocols),
            allowed_ports=tuple(config.allowed_ports),
            runtime_socket=config.runtime_socket,
            runtime_timeout=config.runtime_timeout,
        )


# --- platform --------------------------------------------------------------


def check_platforms(request: ContainerRequest, site: Site) -> list[Reason]:
    """Every requested platform must be one this host runs."""
    return [
        _unsupported(path, wanted, site)
        for path, wanted in request.platforms
        if not any(have.runs(wanted) for have in site.platforms)
    ]


def _unsupported(path: str, wanted: Platform, site: Site) -> Reason:
    runs = ", ".join(str(p) for p in site.platforms)
    return R.capacity(
        R.UNSUPPORTED_PLATFORM, path, f"platform {wanted} asked for; this host runs {runs}"
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
        yield R.policy(
            R.PRIVILEGED_NOT_ALLOWED,
            "taskinfo.privileged",
            "this site does not run privileged containers",
        )
    if request.host_network and not site.allow_host_network:
        yield R.policy(
            R.HOST_NETWORK_NOT_ALLOWED,
            request.host_network,
            "this site does not give containers the host's network",
        )


def _check_protocol(port: PortRequest, site: Site) -> Iterator[Reason]:
    protocol, path = port.protocol or "tcp", f"{port.field}.protocol"
    if protocol not in KNOWN_PROTOCOLS:
        known = ", ".join(KNOWN_PROTOCOLS)
        yield R.request(R.INVALID_PROTOCOL, path, f"protocol {protocol!r} is not one of {known}")
    elif not _protocol_allowed(protocol, site):
        allowed = ", ".join(sorted(site.allowed_protocols))
        yield R.policy(
            R.PROTOCOL_NOT_ALLOWED, path, f"protocol {protocol} is not allowed here ({allowed} are)"
        )


def _check_external(port: PortRequest, site: Site) -> Iterator[Reason]:
    if port.external is None or any(port.external in r for r in site.allowed_ports):
        return
    ranges = ", ".join(str(r) for r in site.allowed_ports)
    yield R.policy(
        R.PORT_NOT_ALLOWED,
        f"{port.field}.external",
        f"external port {port.external} is outside the ports allowed here ({ranges})",
    )


def _protocol_allowed(protocol: str, site: Site) -> bool:
    carrier = _CARRIED_BY.get(protocol)
    return protocol in site.allowed_protocols or carrier in site.allowed_protocols


# --- resources -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fit:
    """The resources offered, notes on what was capped, and reasons if even
    the minimum asked for does not fit."""

    resources: Resources
    notes: tuple[str, ...] = ()
    reasons: tuple[Reason, ...] = ()


def fit_resources(asked: Resources, site: Site) -> Fit:
    """Fit the asked cores and memory under the per-task limits."""
    cores, cores_note, cores_reason = _fit(asked.cores, site.max_cores, "cores", "")
    memory, memory_note, memory_reason = _fit(asked.memory, site.max_memory, "memory", " bytes")
    return Fit(
        Resources(cores, memory),
        tuple(n for n in (cores_note, memory_note) if n),
        tuple(r for r in (cores_reason, memory_reason) if r),
    )


def _fit(
    asked: IntRange, limit: int | None, name: str, unit: str
) -> tuple[IntRange, str, Reason | None]:
    if limit is None:
        return asked, "", None
    if asked.min is not None and asked.min > limit:
        code = R.INSUFFICIENT_CORES if name == "cores" else R.INSUFFICIENT_MEMORY
        message = (
            f"asked for at least {asked.min}{unit} of {name}; "
            f"a task here gets at most {limit}{unit}"
        )
        return asked, "", R.capacity(code, f"resources.{name}.min", message)
    if asked.max is not None and asked.max > limit:
        return IntRange(asked.min, limit), f"{name} capped at the limit of {limit}{unit}", None
    return IntRange(asked.min, limit if asked.max is None else asked.max), "", None
