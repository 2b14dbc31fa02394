"""``[plugin.docker]``: the plugin's settings, validated by pydantic.

Unknown keys are refused, so a typo stops start-up (as
``plugin.docker.<key>: ...``) instead of being silently ignored. List
settings also accept a comma-separated string, for environment overrides
such as ``EP_PLUGIN__DOCKER__ALLOWED_PROTOCOLS=tcp,udp``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ep_plugin_docker.platforms import InvalidPlatform, Platform, parse_platform
from ep_server.settings_types import ByteSize, NameList, ServiceEntry, split_commas

__all__ = ["KNOWN_PROTOCOLS", "DockerConfig", "PortRange", "Service"]

#: Protocols a port may name; ``http`` and ``https`` run over ``tcp``.
KNOWN_PROTOCOLS = ("tcp", "udp", "sctp", "http", "https")
MAX_PORT = 65535


class PortRange(BaseModel):
    """An inclusive range of port numbers; written ``"1024-65535"`` or ``8080``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: int = Field(ge=1, le=MAX_PORT)
    high: int = Field(ge=1, le=MAX_PORT)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.low <= port <= self.high

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}-{self.high}"


def _port_range(value: Any) -> Any:
    """``8080``, ``"8080"``, ``"1024-65535"`` or ``[1024, 65535]`` -> a range."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"low": value, "high": value}
    if isinstance(value, list) and len(value) == 2:
        return {"low": value[0], "high": value[1]}
    if not isinstance(value, str):
        return value
    low, dash, high = value.partition("-")
    if not low.strip().isdigit() or (dash and not high.strip().isdigit()):
        raise ValueError(f"{value!r} is not a port or a range such as 1024-65535")
    if dash and int(low) > int(high):
        raise ValueError(f"{value!r}: the range's low end is above its high end")
    return {"low": int(low), "high": int(high if dash else low)}


#: One ``[[plugin.docker.services]]`` entry: a service type to offer.
Service = ServiceEntry


#: The IVOA note's example service, offered when none is configured.
DEFAULT_SERVICE = Service(
    servicetype="uri://docker-uws", serviceinfo={"endpoint": "http://example.org/dkuws"}
)


class DockerConfig(BaseModel):
    """``[plugin.docker]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The services offered for a docker container this host can run.
    services: list[Service] = Field(default=[DEFAULT_SERVICE], min_length=1)
    #: Whether ``privileged: true`` may be asked for.
    allow_privileged: bool = False
    #: Whether host networking (``network: "host"``) may be asked for.
    allow_host_network: bool = False
    #: Protocols a requested port may use.
    allowed_protocols: NameList = ["tcp", "udp"]
    #: External (published) ports a request may ask for.
    allowed_ports: Annotated[
        list[Annotated[PortRange, BeforeValidator(_port_range)]], BeforeValidator(split_commas)
    ] = [PortRange(low=1024, high=MAX_PORT)]
    #: Per-task limits; the host's usable CPUs and physical memory if unset.
    max_cores: int | None = Field(None, ge=1)
    max_memory: Annotated[ByteSize | None, Field(ge=1)] = None
    #: Platforms this host runs (``linux/amd64``...); the host's own if unset.
    platforms: NameList | None = None
    #: Container runtime socket to check on each Ask (a path, or unix://path);
    #: unchecked if unset.
    runtime_socket: str | None = None
    #: Seconds to wait for the runtime socket to accept a connection.
    runtime_timeout: float = Field(0.5, gt=0, le=10)

    @field_validator("allowed_protocols")
    @classmethod
    def _protocols(cls, value: list[str]) -> list[str]:
        lowered = [p.strip().lower() for p in value]
        unknown = [p for p in lowered if p not in KNOWN_PROTOCOLS]
        if unknown:
            raise ValueError(f"unknown protocols {unknown}; known: {', '.join(KNOWN_PROTOCOLS)}")
        return lowered

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str] | None) -> list[str] | None:
        for text in value or ():
            try:
                parse_platform(text)
            except InvalidPlatform as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("runtime_socket")
    @classmethod
    def _socket(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = value.removeprefix("unix://")
        if not path.strip():
            raise ValueError("must be a socket path; leave it out to skip the check")
        return path

    def parsed_platforms(self) -> tuple[Platform, ...] | None:
        """:attr:`platforms`, parsed; ``None`` when unset."""
        if self.platforms is None:
            return None
        return tuple(parse_platform(text) for text in self.platforms)
