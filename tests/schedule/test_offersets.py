"""The ledger's offer sets and offer fates, run once per backend: what the
HTTP door's ExecutionBroker routes remember of an Ask, and what has become
of each of its offers."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest
from schedule.ledgers import POOLS, T0, H, Store, ask, at

from ep_server.model import BookingState
from ep_server.schedule.ledger import Ledger, OfferFate, OfferSet, OfferSetNotFound
from ep_server.schedule.sqlite import SCHEMA_VERSION, SQLiteLedger
from ep_server.schedule.sqlite_file import STEPS


def offerset(ledger: Ledger, ask_id: str = "a1", owner: str = "alice", **kw: object) -> OfferSet:
    """Place up to three offers for ``owner`` and remember them as an offer set."""
    offers = ledger.place(ask((0, 10), owner=owner, ask_id=ask_id, **kw), T0)  # type: ignore[arg-type]
    assert offers
    record = OfferSet(
        id=f"set-{ask_id}",
        owner=owner,
        create_time=T0,
        expire_time=offers[0].expire_time or T0,
        offer_ids=tuple(o.id for o in offers),
        document={"result": "YES", "offers": [{"uuid": o.id} for o in offers], "n": 1.5},
    )
    ledger.save_offerset(record, T0)
    return record


def test_an_offer_set_reads_back_by_its_id_and_by_each_of_its_offers(ledger: Ledger) -> None:
    saved = offerset(ledger)
    assert len(saved.offer_ids) == 3
    assert ledger.offerset(saved.id, "alice", T0) == saved
    for offer_id in saved.offer_ids:
        assert ledger.offerset_of(offer_id, "alice", T0) == saved


def test_an_offer_set_without_offers_is_remembered(ledger: Ledger) -> None:
    record = OfferSet("set-no", "alice", T0, T0 + H, (), {"result": "NO", "messages": []})
    ledger.save_offerset(record, T0)
    assert ledger.offerset("set-no", "alice", T0) == record


def test_another_owner_finds_no_offer_set(ledger: Ledger) -> None:
    saved = offerset(ledger)
    with pytest.raises(OfferSetNotFound):
        ledger.offerset(saved.id, "bob", T0)
    with pytest.raises(OfferSetNotFound):
        ledger.offerset_of(saved.offer_ids[0], "bob", T0)
    with pytest.raises(OfferSetNotFound):
        ledger.offerset("no-such-set", "alice", T0)


def test_an_offer_set_id_is_taken_once(ledger: Ledger) -> None:
    saved = offerset(ledger)
    with pytest.raises(ValueError, match="exists"):
        ledger.save_offerset(saved, T0)
    assert ledger.offerset(saved.id, "alice", T0) == saved


def test_fates_follow_accepting_rejecting_and_expiry(ledger: Ledger) -> None:
    first, second = offerset(ledger, "a1"), offerset(ledger, "a2")
    ids = first.offer_ids
    fates = ledger.fates(ids, "alice", T0)
    assert fates == {i: OfferFate(held=True) for i in ids}

    booking, _ = ledger.accept(ids[1], "alice", T0)
    fates = ledger.fates(ids, "alice", T0)
    assert fates[ids[1]] == OfferFate(booking=booking)
    assert fates[ids[0]] == fates[ids[2]] == OfferFate()  # released as siblings

    ledger.reject(second.offer_ids[0], "alice", T0)
    later = ledger.fates(second.offer_ids, "alice", T0)
    assert later[second.offer_ids[0]] == OfferFate()
    assert later[second.offer_ids[1]] == OfferFate(held=True)

    expired = second.expire_time + timedelta(seconds=1)
    assert ledger.fates(second.offer_ids, "alice", expired) == {
        i: OfferFate() for i in second.offer_ids
    }
    cancelled, _ = ledger.cancel(booking.id, "alice", expired)
    fate = ledger.fates([ids[1]], "alice", expired)[ids[1]]
    assert fate.booking == cancelled
    assert cancelled.state is BookingState.CANCELLED


def test_fates_of_another_owners_offers_and_unknown_ids_are_empty(ledger: Ledger) -> None:
    saved = offerset(ledger)
    ledger.accept(saved.offer_ids[0], "alice", T0)
    names = [*saved.offer_ids, "no-such-offer", saved.offer_ids[0]]
    assert ledger.fates(names, "bob", T0) == {i: OfferFate() for i in names}


def test_offer_sets_are_purged_long_after_expiry_unless_one_was_booked(store: Store) -> None:
    ledger = store.open(purge_after=timedelta(hours=1))
    idle, booked = offerset(ledger, "a1"), offerset(ledger, "a2", owner="bob")
    ledger.accept(booked.offer_ids[0], "bob", T0)
    # A place long after both expired purges what is due.
    ledger.place(ask((100, 110), ask_id="later", owner="carol"), at(100))
    with pytest.raises(OfferSetNotFound):
        ledger.offerset(idle.id, "alice", at(100))
    with pytest.raises(OfferSetNotFound):
        ledger.offerset_of(idle.offer_ids[0], "alice", at(100))
    assert ledger.offerset(booked.id, "bob", at(100)) == booked
    assert ledger.offerset_of(booked.offer_ids[2], "bob", at(100)) == booked


def test_offer_sets_survive_reopening_the_store(store: Store) -> None:
    first = store.open()
    saved = offerset(first)
    first.close()
    assert store.open().offerset(saved.id, "alice", T0) == saved


def test_a_schema_2_sqlite_file_is_upgraded_and_keeps_its_offers(tmp_path: Path) -> None:
    """Files of version 2 (before offer sets) open at the current version
    with their offers and bookings, and take offer sets."""
    path = tmp_path / "ledger.db"
    with closing(sqlite3.connect(path)) as db, db:
        for step in STEPS[:2]:
            for statement in step:
                db.execute(statement)
        db.execute("PRAGMA user_version = 2")
    led = SQLiteLedger(path, POOLS)
    held = offerset(led)  # places offers and remembers their set
    led.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    reopened = SQLiteLedger(path, POOLS)
    assert reopened.offerset(held.id, "alice", T0) == held
    assert set(reopened.fates(held.offer_ids, "alice", T0).values()) == {OfferFate(held=True)}
    reopened.close()
