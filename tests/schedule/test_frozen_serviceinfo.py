"""An offer whose serviceinfo is a FrozenInfo (a plugin's configured one),
held and booked in each ledger backend: stored as JSON, read back as the
plain JSON it equals (objects as dicts, tuples as lists)."""

from __future__ import annotations

from schedule.ledgers import T0, ask

from ep_server import FrozenInfo
from ep_server.schedule.ledger import Candidate, Ledger

INFO = {"endpoint": "http://example.org/dkuws", "tags": ["a", 1.5, None, {"x": []}], "o": {}}


def test_a_frozen_serviceinfo_is_held_booked_and_read_back_as_json(ledger: Ledger):
    info = FrozenInfo(INFO)
    candidate = Candidate("p", "uri://docker-uws", info, {"cores": 1})
    [held, *_] = ledger.place(ask((0, 4), candidates=(candidate,)), T0)
    assert held.candidate.serviceinfo is info
    booking, created = ledger.accept(held.id, "alice", T0)
    assert created
    for read in (booking, ledger.get(booking.id, "alice", T0)):
        assert read.serviceinfo == INFO
        assert type(read.serviceinfo["tags"]) is list
