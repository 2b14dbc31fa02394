"""``[plugin.jupyter]``: the operator's settings, validated with pydantic.

Every key is optional; unknown keys are errors, so a typo stops start-up with
a message naming ``plugin.jupyter.<key>``. See the README for each key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ep_server import parse_bytes
from ep_server.uri import uri_problem

__all__ = ["DEFAULT_SERVICE", "TASKTYPES", "JupyterSettings", "ServiceSettings"]

#: The task types this plugin claims: the seed's, and the ExecutionBroker's.
TASKTYPES = (
    "uri://jupyter-notebook",
    "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/executable/jupyter-notebook-1.0",
)


def _split_commas(value: Any) -> Any:
    """Let ``EP_PLUGIN__JUPYTER__KERNELS=python,R`` set a list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _bytes(value: Any) -> Any:
    return parse_bytes(value) if isinstance(value, int | str) else value


Names = Annotated[list[str], BeforeValidator(_split_commas)]
Bytes = Annotated[int, BeforeValidator(_bytes), Field(ge=1)]


class ServiceSettings(BaseModel):
    """One ``[[plugin.jupyter.services]]`` entry: a service this site offers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    servicetype: str
    serviceinfo: dict[str, Any] = {}

    @field_validator("servicetype")
    @classmethod
    def _uri(cls, value: str) -> str:
        problem = uri_problem(value)
        if problem:
            raise ValueError(problem)
        return value


#: Offered when no services are configured, so the default server answers.
DEFAULT_SERVICE = ServiceSettings(
    servicetype="uri://jupyter-hub", serviceinfo={"endpoint": "http://example.org/hub"}
)


class JupyterSettings(BaseModel):
    """The whole ``[plugin.jupyter]`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    services: list[ServiceSettings] = Field([DEFAULT_SERVICE], min_length=1)
    notebook_roots: Names = []
    allow_urls: bool = True
    kernels: Names | None = None
    max_cores: int | None = Field(None, ge=1)
    max_memory: Bytes | None = None

    @field_validator("notebook_roots")
    @classmethod
    def _directories(cls, value: list[str]) -> list[str]:
        for root in value:
            if not Path(root).is_absolute():
                raise ValueError(f"{root!r} is not an absolute path")
            if not Path(root).is_dir():
                raise ValueError(f"{root!r} is not an existing directory")
        return value

    @field_validator("kernels")
    @classmethod
    def _no_blanks(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(name.strip() for name in value):
            raise ValueError("kernel languages must not be blank")
        return value
