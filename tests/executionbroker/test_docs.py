"""docs/executionbroker.md's blocks, as a server answers them."""

from __future__ import annotations

from typing import Any

import docblocks
import yaml
from executionbroker import schema
from executionbroker.conftest import Broker

DOC = docblocks.ROOT / "docs" / "executionbroker.md"


def _blocks() -> list[str]:
    """The request, the answer and the update shown under "An offer set"."""
    text = DOC.read_text()
    start = text.index("\n## An offer set\n")
    end = text.index("\n## ", start + 1)
    return [body for _, body in docblocks.blocks(text[start:end])]


async def test_the_request_shown_gets_offers(broker: Any) -> None:
    request, shown, _ = _blocks()
    b: Broker = await broker()
    answer = (await b.offerset(request)).data
    assert schema.problems("OfferSetResponse", answer) == []
    assert answer["result"] == "YES"
    assert len(answer["offers"]) == 3
    session, pictured = answer["offers"][0], yaml.safe_load(shown)["offers"][0]
    assert set(pictured) == set(session)
    for key in ("state", "expires", "options", "service", "resources", "schedule"):
        assert session[key] == pictured[key], key


async def test_the_update_shown_accepts_a_session(broker: Any) -> None:
    request, _, update = _blocks()
    b: Broker = await broker()
    session = (await b.offerset(request)).data["offers"][0]
    accepted = await b.call("POST", f"/sessions/{session['uuid']}", update)
    assert accepted.status == 200, accepted.text
    assert accepted.data["state"] == "ACCEPTED"
