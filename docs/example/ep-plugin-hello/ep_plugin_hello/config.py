"""``[plugin.hello]``, validated by pydantic: a bad value stops start-up with
``plugin.hello.<key>: <message>``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator


class HelloConfig(BaseModel):
    """``[plugin.hello]``: where the hello service answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint: str

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value
