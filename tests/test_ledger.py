"""The SQLite booking ledger (ep_server.schedule.sqlite), without gRPC.

Times are whole hours/minutes after T0 so that boundaries touch exactly.
The invariant is checked against a brute-force sweep, never only against
the ledger's own ``peak``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from ep_server.model import Booking, BookingState, Schedule, Slot, Window
from ep_server.schedule.ledger import (
    BookingNotFound,
    Candidate,
    HeldOffer,
    OfferExpired,
    OfferNotFound,
    Placement,
    TooManyOffers,
)
from ep_server.schedule.sqlite import SCHEMA_VERSION, SQLiteLedger

T0 = datetime(2030, 1, 7, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
GIB = 2**30
POOLS = {"cores": 16, "memory": 16 * GIB, "gpus": 2}
CHILD = Path(__file__).with_name("ledger_crash_child.py")
ALL_TIME = Slot(T0 - 1000 * H, T0 + 20_000 * H)


def at(hours: float) -> datetime:
    return T0 + hours * H


def cand(plugin: str = "p", **need: int) -> Candidate:
    return Candidate(plugin, f"svc-{plugin}", {"plugin": plugin}, need)


def ask(
    *windows: tuple[float, float],
    need: Mapping[str, int] | None = None,
    owner: str = "alice",
    ask_id: str = "a1",
    shortest: float = 2,
    longest: float | None = None,
    candidates: tuple[Candidate, ...] | None = None,
    **kw: object,
) -> Placement:
    """A placement for windows given in hours after T0."""
    schedule = Schedule(
        tuple(Window(at(a), at(b)) for a, b in windows),
        shortest * H,
        None if longest is None else longest * H,
    )
    only = Candidate("p", "svc-p", {"plugin": "p"}, need or {"cores": 1})
    cands = candidates if candidates is not None else (only,)
    return Placement(owner, ask_id, cands, schedule, **kw)  # type: ignore[arg-type]


@pytest.fixture
def ledger() -> Iterator[SQLiteLedger]:
    led = SQLiteLedger(":memory:", POOLS)
    yield led
    led.close()


def book(led: SQLiteLedger, start: float, end: float, owner: str = "alice", **need: int) -> Booking:
    """Hold exactly [start, end) hours and accept it (fails if it does not fit there)."""
    ask_id = f"book-{owner}-{start}-{end}-{sorted(need.items())}-{random.random()}"
    offers = led.place(
        ask((start, start), need=need, owner=owner, ask_id=ask_id, shortest=end - start), T0
    )
    assert offers, f"[{start}, {end}) does not fit {need}"
    assert offers[0].slot == Slot(at(start), at(end))
    return led.accept(offers[0].id, owner, T0)[0]


def starts(offers: Iterable[HeldOffer]) -> list[datetime]:
    return [o.slot.start for o in offers]


# --- Brute force ------------------------------------------------------------------

Interval = tuple[datetime, datetime, Mapping[str, int]]


def brute_peak(holds: list[Interval], pool: str) -> int:
    """Max usage at any instant: usage is highest at some hold's start."""
    best = 0
    for start, _, _ in holds:
        usage = sum(n.get(pool, 0) for s, e, n in holds if s <= start < e)
        best = max(best, usage)
    return best


def assert_within(holds: list[Interval], pools: Mapping[str, int]) -> None:
    for pool, cap in pools.items():
        assert brute_peak(holds, pool) <= cap, f"pool {pool} overbooked"


def file_holds(path: Path, now: datetime) -> list[Interval]:
    """BOOKED bookings and unexpired offers, read straight from a closed ledger file."""
    us = int((now - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT start_us, end_us, need FROM bookings WHERE state = 1 UNION ALL "
            "SELECT start_us, end_us, need FROM offers WHERE expire_us > ?",
            (us,),
        ).fetchall()
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micro = timedelta(microseconds=1)
    return [(epoch + s * micro, epoch + e * micro, json.loads(n)) for s, e, n in rows]


# --- Interval arithmetic at the boundaries ---------------------------------------


def test_touching_holds_do_not_overlap(ledger: SQLiteLedger) -> None:
    book(ledger, 0, 2, cores=16)
    offers = ledger.place(ask((0, 10), need={"cores": 16}, ask_id="b", max_offers=1), T0)
    assert starts(offers) == [at(2)]
    # That offer holds [2, 4); a booking of the whole pool from 4:00 touches it.
    book(ledger, 4, 6, owner="bob", cores=16)
    assert ledger.peak("cores", Slot(at(0), at(10)), T0) == 16


def test_a_hold_ending_at_t_and_one_starting_at_t(ledger: SQLiteLedger) -> None:
    book(ledger, 0, 2, cores=16)
    book(ledger, 2, 4, cores=16)
    assert ledger.peak("cores", Slot(at(1), at(3)), T0) == 16
    assert ledger.peak("cores", Slot(at(4), at(5)), T0) == 0
    assert ledger.peak("cores", Slot(at(3), at(3)), T0) == 0  # an empty slot holds nothing


def test_slot_exactly_filling_a_pool(ledger: SQLiteLedger) -> None:
    assert ledger.place(ask((0, 0), need={"cores": 16, "gpus": 2}), T0)
    assert ledger.place(ask((0, 0), need={"cores": 1}, ask_id="b"), T0) == []
    assert ledger.place(ask((0, 0), need={"cores": 17}, ask_id="c", owner="bob"), T0) == []
    assert ledger.earliest({"cores": 17}, H, T0, T0) is None


def test_memory_off_by_one_byte(ledger: SQLiteLedger) -> None:
    book(ledger, 0, 2, memory=8 * GIB)
    book(ledger, 0, 2, memory=8 * GIB - 1)
    assert ledger.place(ask((0, 0), need={"memory": 2}, ask_id="x"), T0) == []
    assert ledger.place(ask((0, 0), need={"memory": 1}, ask_id="y"), T0)
    assert ledger.peak("memory", Slot(at(0), at(2)), T0) == 16 * GIB


def test_zero_length_window_offers_only_its_instant(ledger: SQLiteLedger) -> None:
    offers = ledger.place(ask((3, 3), need={"cores": 4}, max_offers=3), T0)
    assert starts(offers) == [at(3)]
    book(ledger, 3, 4, owner="bob", cores=12)  # with the 4 held: full
    assert ledger.place(ask((3, 3), need={"cores": 1}, ask_id="b", owner="bob"), T0) == []


def test_start_at_window_end_exactly(ledger: SQLiteLedger) -> None:
    book(ledger, 0, 5, cores=16)
    assert starts(ledger.place(ask((0, 5), need={"cores": 1}, ask_id="b", hold=False), T0)) == [
        at(5)
    ]
    before_end = ask((0, 5), need={"cores": 1}, ask_id="c", hold=False)
    late = Placement(
        "alice",
        "c",
        before_end.candidates,
        Schedule((Window(at(0), at(5) - timedelta(microseconds=1)),), 2 * H),
        hold=False,
    )
    assert ledger.place(late, T0) == []


def test_slot_extends_to_max_duration_as_far_as_it_fits(ledger: SQLiteLedger) -> None:
    book(ledger, 6, 8, cores=16)
    (offer,) = ledger.place(ask((0, 0), need={"cores": 1}, shortest=2, longest=10), T0)
    assert offer.slot == Slot(at(0), at(6))
    (offer,) = ledger.place(ask((9, 9), need={"cores": 1}, shortest=2, longest=3, ask_id="b"), T0)
    assert offer.slot == Slot(at(9), at(12))


def test_without_max_duration_slots_have_min_duration(ledger: SQLiteLedger) -> None:
    (offer,) = ledger.place(ask((0, 0), need={"cores": 1}, shortest=3), T0)
    assert offer.slot.duration == 3 * H


def test_later_offers_start_at_hold_ends(ledger: SQLiteLedger) -> None:
    book(ledger, 0, 3, cores=12)
    offers = ledger.place(ask((0, 24), need={"cores": 8}, shortest=2, max_offers=3), T0)
    # 8 + 12 > 16 until 3:00; then each offer starts where the previous ends.
    assert [o.slot for o in offers] == [Slot(at(3), at(5)), Slot(at(5), at(7)), Slot(at(7), at(9))]
    assert ledger.peak("cores", Slot(at(0), at(24)), T0) == 12


def test_offers_of_one_place_fit_with_each_other(ledger: SQLiteLedger) -> None:
    both = ledger.place(ask((0, 0), (1, 1), need={"cores": 8}, shortest=4, max_offers=3), T0)
    assert starts(both) == [at(0), at(1)]  # 8 + 8 = 16: they fit together
    assert ledger.peak("cores", ALL_TIME, T0) == 16
    one = ledger.place(
        ask((10, 10), (11, 11), need={"cores": 10}, shortest=4, ask_id="b", owner="bob"), T0
    )
    assert starts(one) == [at(10)]  # 10 + 10 > 16: 11:00 would overlap the 10:00 offer
    assert ledger.peak("cores", ALL_TIME, T0) == 16


def test_windows_are_searched_in_order_of_start(ledger: SQLiteLedger) -> None:
    offers = ledger.place(ask((30, 30), (5, 5), (10, 10), need={"cores": 1}, max_offers=3), T0)
    assert starts(offers) == [at(5), at(10), at(30)]


def test_a_window_in_the_past_starts_now(ledger: SQLiteLedger) -> None:
    offers = ledger.place(ask((-10, 10), need={"cores": 1}), at(1))
    assert starts(offers)[0] == at(1)
    assert ledger.place(ask((-10, -5), need={"cores": 1}, ask_id="b"), at(1)) == []


def test_horizon_bounds_starts() -> None:
    led = SQLiteLedger(":memory:", POOLS, horizon=timedelta(days=2))
    assert led.place(ask((49, 60), need={"cores": 1}), T0) == []
    assert starts(led.place(ask((47, 60), need={"cores": 1}, ask_id="b"), T0)) == [at(47)]
    assert led.earliest({"cores": 1}, H, at(49), T0) is None
    led.close()


def test_unknown_pool_fits_nowhere_but_zero_is_ignored(ledger: SQLiteLedger) -> None:
    assert ledger.place(ask((0, 1), need={"fpgas": 1}), T0) == []
    assert ledger.earliest({"fpgas": 1}, H, T0, T0) is None
    assert ledger.place(ask((0, 1), need={"fpgas": 0, "cores": 1}), T0)


def test_bad_arguments_raise_value_error(ledger: SQLiteLedger) -> None:
    with pytest.raises(ValueError, match="negative"):
        ledger.place(ask((0, 1), need={"cores": -1}), T0)
    with pytest.raises(ValueError, match="positive"):
        ledger.place(ask((0, 1), shortest=0), T0)
    with pytest.raises(ValueError, match="shorter"):
        ledger.place(ask((0, 1), shortest=2, longest=1), T0)
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteLedger(":memory:", POOLS, synchronous="SOMETIMES")
    with pytest.raises(ValueError, match="capacity"):
        SQLiteLedger(":memory:", {"cores": -1})


def test_refused_slots_are_skipped(ledger: SQLiteLedger) -> None:
    book(ledger, 0, 1, owner="bob", cores=1)
    book(ledger, 0, 3, owner="bob", cores=1)
    seen: list[Slot] = []

    def refuse(c: Candidate, slot: Slot) -> bool:
        seen.append(slot)
        return slot.start < at(3)

    offers = ledger.place(ask((0, 24), need={"cores": 1}, refuse=refuse), T0)
    assert starts(offers) == [at(3), at(5), at(7)]
    # After a refusal the search moves on by at most 15 minutes (or to the
    # next hold end if sooner), so no acceptable start is skipped.
    refused = [s.start for s in seen if s.start < at(3)]
    assert refused[0] == at(0)
    assert all(b - a <= 15 * M for a, b in itertools.pairwise(refused))


def test_a_short_refusal_does_not_skip_the_start_just_after_it(ledger: SQLiteLedger) -> None:
    # A maintenance hour [0:00, 1:00); a 4-hour task may start in [0:00, 2:00].
    offers = ledger.place(
        ask((0, 2), shortest=4, need={"cores": 1}, refuse=lambda c, s: s.start < at(1)), T0
    )
    assert starts(offers)[:1] == [at(1)]


def test_a_clock_set_back_across_a_restart_revives_no_expired_offer(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    led = SQLiteLedger(path, {"cores": 1})
    first = led.place(ask((1, 1), shortest=1, ask_id="a1"), T0)[0]
    later = T0 + 10 * M  # first has expired: its core goes to a second offer
    second = led.place(ask((1, 1), shortest=1, ask_id="a2"), later)[0]
    led.accept(second.id, "alice", later)[0]
    led.close()
    led = SQLiteLedger(path, {"cores": 1})  # restarted, with the clock set back
    try:
        with pytest.raises(OfferExpired):
            led.accept(first.id, "alice", T0 + 1 * M)[0]
        assert led.peak("cores", ALL_TIME, T0 + 1 * M) <= 1
    finally:
        led.close()


def test_refusing_everything_gives_nothing(ledger: SQLiteLedger) -> None:
    offers = ledger.place(ask((0, 24 * 300), need={"cores": 1}, refuse=lambda c, s: True), T0)
    assert offers == []
    assert ledger.peak("cores", ALL_TIME, T0) == 0


def test_hold_false_holds_nothing(ledger: SQLiteLedger) -> None:
    offers = ledger.place(ask((0, 10), need={"cores": 16}, max_offers=3, hold=False), T0)
    assert len(offers) == 3
    assert all(o.id == "" and o.expire_time is None for o in offers)
    assert ledger.peak("cores", ALL_TIME, T0) == 0


def test_candidates_at_one_start_each_get_an_offer(ledger: SQLiteLedger) -> None:
    small, big = cand("small", cores=6), cand("big", cores=10)
    offers = ledger.place(ask((0, 10), candidates=(small, big), max_offers=3), T0)
    assert [(o.candidate.plugin, o.slot.start) for o in offers] == [
        ("small", at(0)),
        ("big", at(0)),
        ("small", at(2)),
    ]
    assert ledger.peak("cores", ALL_TIME, T0) == 16


def test_earliest_candidate_wins_and_a_tie_that_no_longer_fits_is_skipped(
    ledger: SQLiteLedger,
) -> None:
    book(ledger, 0, 2, owner="bob", gpus=2)
    gpu, cpu = cand("gpu", gpus=1), cand("cpu", cores=12)
    twin = cand("cpu2", cores=12)
    offers = ledger.place(ask((0, 10), candidates=(gpu, cpu, twin), max_offers=2), T0)
    assert [(o.candidate.plugin, o.slot.start) for o in offers] == [("cpu", at(0)), ("gpu", at(2))]


def test_earliest(ledger: SQLiteLedger) -> None:
    book(ledger, 0, 5, cores=10)
    book(ledger, 6, 9, cores=10)
    assert ledger.earliest({"cores": 8}, H, T0, T0) == Slot(at(5), at(6))
    assert ledger.earliest({"cores": 8}, 2 * H, T0, T0) == Slot(at(9), at(11))
    assert ledger.earliest({"cores": 6}, 2 * H, at(-5), T0) == Slot(at(0), at(2))
    assert ledger.earliest({"cores": 8}, H, at(100), T0) == Slot(at(100), at(101))


def test_earliest_far_away_across_a_long_busy_stretch(ledger: SQLiteLedger) -> None:
    for day in range(40):
        book(ledger, 24 * day, 24 * day + 24, cores=16)
    assert ledger.earliest({"cores": 1}, H, T0, T0) == Slot(at(960), at(961))


# --- Expiry ----------------------------------------------------------------------------


def test_an_expiring_offer_frees_capacity(ledger: SQLiteLedger) -> None:
    (offer,) = ledger.place(ask((1, 1), need={"cores": 16}, ttl=5 * M), T0)
    assert offer.expire_time == T0 + 5 * M
    bob = ask((1, 1), need={"cores": 1}, owner="bob", ask_id="b")
    assert ledger.place(bob, T0 + 5 * M - timedelta(microseconds=1)) == []
    assert ledger.place(bob, T0 + 5 * M)  # expire_time <= now: released


def test_accept_after_expiry_is_offer_expired(ledger: SQLiteLedger) -> None:
    (offer,) = ledger.place(ask((1, 1), ttl=5 * M), T0)
    with pytest.raises(OfferExpired):
        ledger.accept(offer.id, "alice", T0 + 5 * M)[0]
    with pytest.raises(OfferNotFound):  # another owner learns nothing
        ledger.accept(offer.id, "bob", T0 + 5 * M)[0]


def test_the_clock_never_runs_back_for_expiry(ledger: SQLiteLedger) -> None:
    (offer,) = ledger.place(ask((1, 1), ttl=5 * M), T0)
    ledger.peak("cores", ALL_TIME, T0 + 10 * M)
    with pytest.raises(OfferExpired):
        ledger.accept(offer.id, "alice", T0)[0]


def test_expired_offers_are_purged_later() -> None:
    led = SQLiteLedger(":memory:", POOLS, purge_after=H)
    (offer,) = led.place(ask((1, 1), ttl=5 * M), T0)
    led.place(ask((1, 1), ask_id="b", hold=False), T0 + 30 * M)  # not yet: expired 25 min ago
    with pytest.raises(OfferExpired):
        led.accept(offer.id, "alice", T0 + 30 * M)[0]
    led.place(ask((3, 3), ask_id="c"), T0 + 2 * H)
    with pytest.raises(OfferNotFound):
        led.accept(offer.id, "alice", T0 + 2 * H)[0]
    led.close()


def test_reject(ledger: SQLiteLedger) -> None:
    with pytest.raises(OfferNotFound):
        ledger.reject("no-such-offer", "alice", T0)
    (offer,) = ledger.place(ask((0, 0), need={"cores": 16}), T0)
    with pytest.raises(OfferNotFound):
        ledger.reject(offer.id, "bob", T0)
    ledger.reject(offer.id, "alice", T0)
    assert ledger.peak("cores", ALL_TIME, T0) == 0
    with pytest.raises(OfferNotFound):
        ledger.reject(offer.id, "alice", T0)
    with pytest.raises(OfferNotFound):
        ledger.accept(offer.id, "alice", T0)[0]


# --- Accepting -------------------------------------------------------------------------


def test_accept_releases_siblings(ledger: SQLiteLedger) -> None:
    offers = ledger.place(ask((0, 24), need={"cores": 16}, max_offers=3), T0)
    assert len(offers) == 3
    other = ledger.place(ask((0, 24), need={"cores": 0, "gpus": 1}, ask_id="other"), T0)
    booking = ledger.accept(offers[1].id, "alice", T0)[0]
    assert booking.slot == offers[1].slot
    assert booking.state is BookingState.BOOKED
    assert booking.offer_id == offers[1].id
    for sibling in (offers[0], offers[2]):
        with pytest.raises(OfferNotFound):
            ledger.accept(sibling.id, "alice", T0)[0]
    assert ledger.peak("cores", ALL_TIME, T0) == 16
    assert ledger.peak("cores", offers[0].slot, T0) == 0
    assert ledger.accept(other[0].id, "alice", T0)[0].need == {"gpus": 1}  # other asks stay


def test_accept_is_idempotent(ledger: SQLiteLedger) -> None:
    (offer,) = ledger.place(ask((0, 0), need={"cores": 4}), T0)
    first = ledger.accept(offer.id, "alice", T0)[0]
    again = ledger.accept(offer.id, "alice", T0 + M)[0]
    assert again.id == first.id
    assert first.serviceinfo == {"plugin": "p"}
    assert first.servicetype == "svc-p"
    assert first.plugin == "p"
    assert first.need == {"cores": 4}
    assert first.owner == "alice"
    assert len(ledger.bookings("alice", T0)) == 1
    assert ledger.peak("cores", ALL_TIME, T0) == 4
    ledger.cancel(first.id, "alice", T0)[0]
    assert ledger.accept(offer.id, "alice", T0)[0].state is BookingState.CANCELLED
    assert ledger.peak("cores", ALL_TIME, T0) == 0


def test_accept_after_expiry_of_an_accepted_offer_still_returns_the_booking(
    ledger: SQLiteLedger,
) -> None:
    (offer,) = ledger.place(ask((1, 1), ttl=5 * M), T0)
    booking = ledger.accept(offer.id, "alice", T0)[0]
    assert ledger.accept(offer.id, "alice", T0 + 10 * M)[0].id == booking.id


def test_other_owners_cannot_touch(ledger: SQLiteLedger) -> None:
    (offer,) = ledger.place(ask((0, 0), need={"cores": 4}), T0)
    with pytest.raises(OfferNotFound):
        ledger.accept(offer.id, "bob", T0)[0]
    with pytest.raises(OfferNotFound):
        ledger.reject(offer.id, "bob", T0)
    booking = ledger.accept(offer.id, "alice", T0)[0]
    with pytest.raises(OfferNotFound):
        ledger.accept(offer.id, "bob", T0)[0]
    with pytest.raises(BookingNotFound):
        ledger.get(booking.id, "bob", T0)
    with pytest.raises(BookingNotFound):
        ledger.cancel(booking.id, "bob", T0)[0]
    assert ledger.bookings("bob", T0) == []
    assert ledger.get(booking.id, "alice", T0).state is BookingState.BOOKED


def test_too_many_offers(ledger: SQLiteLedger) -> None:
    def capped(ask_id: str, owner: str = "alice", hold: bool = True) -> Placement:
        return ask(
            (1, 24),
            ask_id=ask_id,
            owner=owner,
            hold=hold,
            max_offers=3,
            max_outstanding=4,
            ttl=5 * M,
        )

    assert len(ledger.place(capped("1"), T0)) == 3
    assert len(ledger.place(capped("2"), T0)) == 1  # up to the cap
    with pytest.raises(TooManyOffers):
        ledger.place(capped("3"), T0)
    assert ledger.place(capped("4", hold=False), T0)
    assert ledger.place(capped("5", owner="bob"), T0)
    assert len(ledger.place(capped("6"), T0 + 5 * M)) == 3  # the first four expired


def test_cancel_releases_and_is_idempotent(ledger: SQLiteLedger) -> None:
    booking = book(ledger, 0, 4, cores=16)
    assert ledger.place(ask((0, 0), ask_id="b", owner="bob"), T0) == []
    cancelled = ledger.cancel(booking.id, "alice", T0 + M)[0]
    assert cancelled.state is BookingState.CANCELLED
    assert cancelled.cancel_time == T0 + M
    assert ledger.cancel(booking.id, "alice", T0 + 2 * M)[0] == cancelled
    assert ledger.peak("cores", ALL_TIME, T0 + 2 * M) == 0
    assert ledger.place(ask((0, 0), ask_id="c", owner="bob"), T0 + 2 * M) == []  # now > 0:00
    assert ledger.place(ask((1, 1), ask_id="d", owner="bob", need={"cores": 16}), T0 + 2 * M)
    with pytest.raises(BookingNotFound):
        ledger.cancel("nope", "alice", T0)[0]


def test_finished_is_derived_and_cannot_be_cancelled(ledger: SQLiteLedger) -> None:
    booking = book(ledger, 1, 3, cores=1)
    assert ledger.get(booking.id, "alice", at(3) - timedelta(microseconds=1)).state is (
        BookingState.BOOKED
    )
    assert ledger.get(booking.id, "alice", at(3)).state is BookingState.FINISHED
    assert ledger.cancel(booking.id, "alice", at(4))[0].state is BookingState.FINISHED
    assert ledger.bookings("alice", at(4))[0].cancel_time is None


def test_bookings_are_the_owners_by_start(ledger: SQLiteLedger) -> None:
    late = book(ledger, 10, 12, cores=1)
    early = book(ledger, 2, 4, cores=1)
    book(ledger, 5, 6, owner="bob", cores=1)
    assert [b.id for b in ledger.bookings("alice", T0)] == [early.id, late.id]


# --- Storage ------------------------------------------------------------------------------


def test_bookings_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    led = SQLiteLedger(path, POOLS)
    kept = book(led, 0, 4, cores=8)
    short = led.place(ask((0, 0), need={"cores": 4}, ask_id="short", ttl=5 * M), T0)
    long_ = led.place(ask((0, 0), need={"cores": 2}, ask_id="long", ttl=60 * M), T0)
    gone = book(led, 5, 6, cores=8)
    led.cancel(gone.id, "alice", T0)[0]
    led.close()

    led = SQLiteLedger(path, POOLS)
    assert led.bookings("alice", T0 + 10 * M) == [
        kept,
        led.get(gone.id, "alice", T0 + 10 * M),
    ]
    assert led.get(gone.id, "alice", T0).state is BookingState.CANCELLED
    assert led.peak("cores", Slot(at(0), at(4)), T0 + 10 * M) == 10  # the expired 4 is gone
    with pytest.raises(OfferExpired):
        led.accept(short[0].id, "alice", T0 + 10 * M)[0]
    assert led.accept(long_[0].id, "alice", T0 + 10 * M)[0].need == {"cores": 2}
    led.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_second_opener_is_refused(tmp_path: Path) -> None:
    led = SQLiteLedger(tmp_path / "ledger.db", POOLS)
    path = str(tmp_path / "ledger.db")
    script = f"from ep_server.schedule.sqlite import SQLiteLedger; SQLiteLedger({path!r}, {{}})"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "in use by another process" in result.stderr
    led.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    SQLiteLedger(path, POOLS).close()
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer"):
        SQLiteLedger(path, POOLS)


def _prepare_offers(path: Path, pools: Mapping[str, int], count: int) -> list[HeldOffer]:
    """One held offer each for ``count`` owners, crowded into two weeks."""
    rng = random.Random(5)
    led = SQLiteLedger(path, pools, synchronous="NORMAL")
    offers: list[HeldOffer] = []
    for i in range(count):
        need = {"cores": rng.randint(1, 16), "memory": rng.randint(1, 64) * GIB}
        start = rng.randint(0, 72)
        placement = ask(
            (start, start + 14 * 24),
            need=need,
            owner=f"owner{i}",
            ask_id=f"ask{i}",
            shortest=rng.randint(1, 8),
            ttl=timedelta(days=1),
            max_offers=1,
        )
        offers.extend(led.place(placement, T0))
    led.close()
    return offers


def _read_acks(proc: subprocess.Popen[str], wanted: int, deadline: float) -> list[str]:
    lines: list[str] = []
    selector = selectors.DefaultSelector()
    assert proc.stdout is not None
    selector.register(proc.stdout, selectors.EVENT_READ)
    while len(lines) < wanted and time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.strip())
    selector.close()
    return lines


def test_sigkill_during_accepts_loses_no_acknowledged_booking(tmp_path: Path) -> None:
    pools = {"cores": 64, "memory": 256 * GIB}
    path = tmp_path / "ledger.db"
    offers = _prepare_offers(path, pools, 400)
    spec = tmp_path / "offers.json"
    spec.write_text(json.dumps({"pools": pools, "offers": [[o.id, o.owner] for o in offers]}))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(path), T0.isoformat(), str(spec)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = _read_acks(proc, 1 + 40, time.monotonic() + 30)  # "ready" + 40 bookings
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate(timeout=10)
    acked = [line.split() for line in lines[1:] + rest.splitlines() if line not in ("done", "")]
    print(f"{len(acked)} of {len(offers)} accepts acknowledged before SIGKILL")
    assert lines[0] == "ready"
    assert len(acked) >= 40

    assert_within(file_holds(path, T0), pools)  # also PRAGMA integrity_check
    led = SQLiteLedger(path, pools)
    for booking_id, owner in acked:
        assert led.get(booking_id, owner, T0).state is BookingState.BOOKED
    for offer in offers:  # each offer is now exactly one booking or still an offer
        mine = led.bookings(offer.owner, T0)
        assert len(mine) <= 1
        if not mine:
            assert led.accept(offer.id, offer.owner, T0)[0].offer_id == offer.id
    for pool, cap in pools.items():
        assert led.peak(pool, ALL_TIME, T0) <= cap
    led.close()


# --- Concurrency -----------------------------------------------------------------------


def _run_threads(targets: list[threading.Thread]) -> None:
    for thread in targets:
        thread.start()
    for thread in targets:
        thread.join(timeout=60)
        assert not thread.is_alive()


def test_200_threads_racing_accepts_and_places_never_overbook(tmp_path: Path) -> None:
    pools = {"cores": 64, "memory": 256 * GIB}
    path = tmp_path / "ledger.db"
    offers = _prepare_offers(path, pools, 200)
    assert len(offers) == 200
    led = SQLiteLedger(path, pools, synchronous="NORMAL")
    barrier = threading.Barrier(200 + 40)
    errors: list[BaseException] = []
    booked: list[Booking] = []

    def accept(offer: HeldOffer) -> None:
        barrier.wait()
        try:
            booked.append(led.accept(offer.id, offer.owner, T0)[0])
        except BaseException as exc:
            errors.append(exc)

    def racer(i: int) -> None:
        barrier.wait()
        try:
            placement = ask((0, 96), need={"cores": 32}, owner=f"racer{i}", ask_id="r")
            for offer in led.place(placement, T0)[:1]:
                booked.append(led.accept(offer.id, offer.owner, T0)[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=accept, args=(o,)) for o in offers]
    threads += [threading.Thread(target=racer, args=(i,)) for i in range(40)]
    _run_threads(threads)
    assert errors == []
    assert len({b.id for b in booked}) == len(booked) >= 200
    led.close()
    holds = file_holds(path, T0)
    assert len(holds) == len(booked)
    assert_within(holds, pools)


def test_200_threads_accepting_one_offer_make_one_booking(ledger: SQLiteLedger) -> None:
    (offer,) = ledger.place(ask((0, 0), need={"cores": 16}), T0)
    barrier = threading.Barrier(200)
    ids: list[str] = []

    def accept() -> None:
        barrier.wait()
        ids.append(ledger.accept(offer.id, "alice", T0)[0].id)

    _run_threads([threading.Thread(target=accept) for _ in range(200)])
    assert len(ids) == 200
    assert len(set(ids)) == 1
    assert len(ledger.bookings("alice", T0)) == 1


# --- Properties ---------------------------------------------------------------------------

POOLS_SMALL = {"cores": 8, "memory": 100}


def oracle_earliest(
    holds: list[Interval], need: Mapping[str, int], lo: datetime, hi: datetime, dur: timedelta
) -> datetime | None:
    """Brute force: try the window's start and every hold end in it."""
    if lo > hi:
        return None
    if any(POOLS_SMALL.get(p, 0) < n for p, n in need.items()):
        return None
    for s in sorted({lo} | {e for _, e, _ in holds if lo < e <= hi}):
        trial = [*holds, (s, s + dur, need)]
        points = [s] + [b for b, _, _ in holds if s < b < s + dur]
        if all(
            sum(n.get(p, 0) for b, e, n in trial if b <= t < e) <= cap
            for p, cap in POOLS_SMALL.items()
            for t in points
        ):
            return s
    return None


class LedgerMachine(RuleBasedStateMachine):
    """Random place/accept/reject/cancel/time steps against a model of the holds."""

    @initialize()
    def start(self) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="ep-ledger-")
        self.led = self.open()
        self.now = T0
        self.asks = 0
        #: offer id -> (owner, ask id, held interval, expire time)
        self.offers: dict[str, tuple[str, str, Interval, datetime]] = {}
        self.known_offers: list[str] = ["never-made"]
        self.booked: dict[str, Booking] = {}  # offer id -> booking
        self.cancelled: set[str] = set()

    def open(self) -> SQLiteLedger:
        path = Path(self.dir.name) / "ledger.db"
        # synchronous=OFF: a restart here is a clean close, and the test stays quick.
        return SQLiteLedger(path, POOLS_SMALL, purge_after=timedelta(days=3650), synchronous="OFF")

    @rule()
    def restart(self) -> None:
        """Close and reopen the file: the index is rebuilt from it."""
        self.led.close()
        self.led = self.open()

    def holds(self) -> list[Interval]:
        live = [iv for _, _, iv, exp in self.offers.values() if exp > self.now]
        return live + [
            (b.slot.start, b.slot.end, b.need)
            for b in self.booked.values()
            if b.id not in self.cancelled
        ]

    @rule(
        owner=st.sampled_from(["alice", "bob"]),
        cores=st.integers(0, 9),
        memory=st.integers(0, 110),
        offset=st.integers(-60, 24 * 60),
        length=st.integers(0, 12 * 60),
        shortest=st.integers(1, 6 * 60),
        longer=st.none() | st.integers(0, 4 * 60),
        max_offers=st.integers(1, 3),
        ttl=st.integers(1, 90),
        variant=st.sampled_from(["plain", "plain", "plain", "two", "refuse", "nohold"]),
    )
    def place(
        self,
        owner: str,
        cores: int,
        memory: int,
        offset: int,
        length: int,
        shortest: int,
        longer: int | None,
        max_offers: int,
        ttl: int,
        variant: str,
    ) -> None:
        need = {"cores": cores, "memory": memory}
        lo, hi = self.now + offset * M, self.now + (offset + length) * M
        candidates: tuple[Candidate, ...] = (cand("a", **need),)
        if variant == "two":
            candidates += (cand("b", cores=max(0, 8 - cores), memory=memory // 2),)
        placement = Placement(
            owner,
            f"ask{self.asks}",
            candidates,
            Schedule(
                (Window(lo, hi),), shortest * M, None if longer is None else (shortest + longer) * M
            ),
            max_offers=max_offers,
            ttl=ttl * M,
            max_outstanding=4,
            hold=variant != "nohold",
            refuse=(lambda c, s: s.start.minute % 3 == 0) if variant == "refuse" else None,
        )
        self.asks += 1
        holds = self.holds()
        outstanding = sum(
            1 for o, _, _, exp in self.offers.values() if o == owner and exp > self.now
        )
        if placement.hold and outstanding >= 4:
            with pytest.raises(TooManyOffers):
                self.led.place(placement, self.now)
            return
        found = self.led.earliest(need, shortest * M, lo, self.now)
        offers = self.led.place(placement, self.now)
        if variant in ("plain", "nohold"):
            expect = oracle_earliest(
                holds, {k: v for k, v in need.items() if v}, max(lo, self.now), hi, shortest * M
            )
            assert (offers[0].slot.start if offers else None) == expect
            if expect is not None:
                assert found == Slot(expect, expect + shortest * M)
            else:
                assert found is None or found.start > hi
        self._check_offers(placement, offers, lo, hi)

    def _check_offers(
        self, placement: Placement, offers: list[HeldOffer], lo: datetime, hi: datetime
    ) -> None:
        sched = placement.schedule
        assert starts(offers) == sorted(starts(offers))
        assert len(offers) <= placement.max_offers
        for offer in offers:
            assert max(lo, self.now) <= offer.slot.start <= hi
            assert (
                sched.min_duration
                <= offer.slot.duration
                <= (sched.max_duration or sched.min_duration)
            )
            if placement.hold:
                iv = (offer.slot.start, offer.slot.end, offer.candidate.need)
                assert offer.expire_time is not None
                self.offers[offer.id] = (offer.owner, offer.ask_id, iv, offer.expire_time)
                self.known_offers.append(offer.id)
        if not placement.hold:
            trial = self.holds() + [(o.slot.start, o.slot.end, o.candidate.need) for o in offers]
            assert_within(trial, POOLS_SMALL)

    @rule(data=st.data(), owner=st.sampled_from(["alice", "bob"]))
    def accept(self, data: st.DataObject, owner: str) -> None:
        offer_id = data.draw(st.sampled_from(self.known_offers))
        if offer_id in self.booked and self.booked[offer_id].owner == owner:
            assert self.led.accept(offer_id, owner, self.now)[0].id == self.booked[offer_id].id
            return
        entry = self.offers.get(offer_id)
        if entry is None or entry[0] != owner:
            with pytest.raises(OfferNotFound):
                self.led.accept(offer_id, owner, self.now)[0]
            return
        if entry[3] <= self.now:
            with pytest.raises(OfferExpired):
                self.led.accept(offer_id, owner, self.now)[0]
            return
        booking = self.led.accept(offer_id, owner, self.now)[0]
        assert (booking.slot.start, booking.slot.end) == entry[2][:2]
        self.booked[offer_id] = booking
        for sibling, (o, a, _, _) in list(self.offers.items()):
            if o == owner and a == entry[1]:
                del self.offers[sibling]

    @rule(data=st.data(), owner=st.sampled_from(["alice", "bob"]))
    def reject(self, data: st.DataObject, owner: str) -> None:
        offer_id = data.draw(st.sampled_from(self.known_offers))
        entry = self.offers.get(offer_id)
        if entry is None or entry[0] != owner:
            with pytest.raises(OfferNotFound):
                self.led.reject(offer_id, owner, self.now)
            return
        self.led.reject(offer_id, owner, self.now)
        del self.offers[offer_id]

    @rule(data=st.data(), owner=st.sampled_from(["alice", "bob"]))
    def cancel(self, data: st.DataObject, owner: str) -> None:
        if not self.booked:
            return
        booking = data.draw(st.sampled_from(sorted(self.booked.values(), key=lambda b: b.id)))
        if booking.owner != owner:
            with pytest.raises(BookingNotFound):
                self.led.cancel(booking.id, owner, self.now)[0]
            return
        result = self.led.cancel(booking.id, owner, self.now)[0]
        if booking.id in self.cancelled:
            assert result.state is BookingState.CANCELLED
        elif booking.slot.end <= self.now:
            assert result.state is BookingState.FINISHED
        else:
            assert result.state is BookingState.CANCELLED
            self.cancelled.add(booking.id)

    @rule(minutes=st.integers(0, 120))
    def advance(self, minutes: int) -> None:
        self.now += minutes * M

    @invariant()
    def never_overbooked(self) -> None:
        if not hasattr(self, "led"):
            return
        holds = self.holds()
        assert_within(holds, POOLS_SMALL)
        for pool in POOLS_SMALL:
            assert self.led.peak(pool, ALL_TIME, self.now) == brute_peak(holds, pool)

    def teardown(self) -> None:
        if hasattr(self, "led"):
            self.led.close()
            self.dir.cleanup()


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(
    max_examples=300,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
