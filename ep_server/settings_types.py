"""Pydantic field types for config sections, the EP's own and plugins'.

A plugin validating its ``[plugin.<name>]`` section with pydantic can use
these so that it reads settings exactly as the EP does: byte sizes as
``"8GiB"``, lists from comma-separated environment variables, URIs checked
by the EP's own rule, and the common "services to offer" entry::

    from pydantic import BaseModel
    from ep_server.settings_types import ByteSize, NameList, ServiceEntry

    class MySettings(BaseModel):
        services: list[ServiceEntry] = []
        max_memory: ByteSize | None = None
        kernels: NameList = []
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from ep_server.model import FrozenInfo, parse_bytes
from ep_server.uri import uri_problem

__all__ = ["URI", "ByteSize", "NameList", "ServiceEntry", "ServiceInfo", "split_commas"]


def split_commas(value: Any) -> Any:
    """``"a, b"`` -> ``["a", "b"]``, and a lone number -> ``[number]``, so
    that environment variables (``EP_PLUGIN__X__NAMES=a,b``, ``...=8443``,
    which arrive as a string or a JSON number) can set a list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [value]
    return value


def _bytes(value: Any) -> Any:
    return parse_bytes(value) if isinstance(value, int | str) else value


def _uri(value: str) -> str:
    problem = uri_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _frozen(value: dict[str, Any]) -> FrozenInfo:
    try:
        return FrozenInfo(value)
    except TypeError as exc:  # pydantic reports ValueErrors, and lets TypeErrors through
        raise ValueError(str(exc)) from None


def _thawed(value: Any) -> Any:
    """A FrozenInfo's values as plain JSON-like Python again (dicts, lists)."""
    if isinstance(value, dict):
        return {key: _thawed(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thawed(item) for item in value]
    return value


#: A list of strings; a string is split at commas.
NameList = Annotated[list[str], BeforeValidator(split_commas)]
#: A byte count: an int, or a string such as "512MiB" or "8GB".
ByteSize = Annotated[int, BeforeValidator(_bytes), Field(ge=0)]
#: An absolute URI, as task and service types must be.
URI = Annotated[str, AfterValidator(_uri)]
#: A serviceinfo: a JSON object, kept as a :class:`~ep_server.model.FrozenInfo`
#: (a dict that cannot change) so that the EP encodes it for the wire once.
#: Dumped (``model_dump``) as plain dicts and lists.
ServiceInfo = Annotated[dict[str, Any], AfterValidator(_frozen), PlainSerializer(_thawed)]


class ServiceEntry(BaseModel):
    """A service to offer: its service type and serviceinfo."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    servicetype: URI
    serviceinfo: ServiceInfo = Field(default={}, validate_default=True)
