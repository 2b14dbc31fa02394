from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from ep_server.settings_types import URI, ByteSize, NameList, ServiceEntry


class Section(BaseModel):
    names: NameList = []
    size: ByteSize | None = None
    uri: URI | None = None
    services: list[ServiceEntry] = []


def test_names_from_lists_commas_and_lone_values():
    assert Section(names=["a", "b"]).names == ["a", "b"]
    assert Section.model_validate({"names": " a, b ,,c "}).names == ["a", "b", "c"]


def test_sizes():
    assert Section.model_validate({"size": "8GiB"}).size == 8 * 2**30
    assert Section.model_validate({"size": 10}).size == 10
    with pytest.raises(ValidationError, match="size"):
        Section.model_validate({"size": "lots"})
    with pytest.raises(ValidationError, match="size"):
        Section.model_validate({"size": -1})


def test_uris_and_services_use_the_eps_rule():
    assert Section(uri="uri://docker-uws").uri == "uri://docker-uws"
    with pytest.raises(ValidationError, match="absolute URI"):
        Section(uri="docker uws")
    with pytest.raises(ValidationError, match=r"services\.0\.servicetype"):
        Section.model_validate({"services": [{"servicetype": "nope"}]})
    with pytest.raises(ValidationError, match="extra"):
        Section.model_validate({"services": [{"servicetype": "uri://x", "colour": 1}]})
