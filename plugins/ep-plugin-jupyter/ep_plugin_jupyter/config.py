"""``[plugin.jupyter]``: the operator's settings, validated with pydantic.

Every key is optional; unknown keys are errors, so a typo stops start-up with
a message naming ``plugin.jupyter.<key>``. See the README for each key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ep_server.settings_types import ByteSize, NameList, ServiceEntry

__all__ = ["DEFAULT_SERVICE", "JupyterConfig", "Service"]

Names = NameList
Bytes = Annotated[ByteSize, Field(ge=1)]


#: One ``[[plugin.jupyter.services]]`` entry: a service this site offers.
Service = ServiceEntry


#: Offered when no services are configured, so the default server answers.
DEFAULT_SERVICE = Service(
    servicetype="uri://jupyter-hub", serviceinfo={"endpoint": "http://example.org/hub"}
)


class JupyterConfig(BaseModel):
    """The whole ``[plugin.jupyter]`` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    services: list[Service] = Field([DEFAULT_SERVICE], min_length=1)
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
