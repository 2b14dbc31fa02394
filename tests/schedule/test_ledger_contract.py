"""The ledger contract (:class:`ep_server.schedule.ledger.Ledger`), run once
per backend: slots at the boundaries, pairing, refusals, expiry, accepting
and cancelling, restarts, threads, and a state machine against a model.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from schedule.ledgers import (
    ALL_TIME,
    GIB,
    POOLS,
    T0,
    H,
    Interval,
    M,
    Store,
    ask,
    assert_occupancy,
    assert_within,
    at,
    book,
    brute_peak,
    cand,
    prepare_offers,
    starts,
)

from ep_server.model import Booking, BookingState, Schedule, Slot, Window
from ep_server.schedule.ledger import (
    ANNOUNCE_AFTER,
    BOOKED,
    CANCELLED,
    BookingNotFound,
    Candidate,
    HeldOffer,
    Ledger,
    OccupancyStep,
    OfferExpired,
    OfferNotFound,
    Placement,
    TooManyOffers,
)

# --- Interval arithmetic at the boundaries ---------------------------------------


def test_touching_holds_do_not_overlap(ledger: Ledger) -> None:
    book(ledger, 0, 2, cores=16)
    offers = ledger.place(ask((0, 10), need={"cores": 16}, ask_id="b", max_offers=1), T0)
    assert starts(offers) == [at(2)]
    # That offer holds [2, 4); a booking of the whole pool from 4:00 touches it.
    book(ledger, 4, 6, owner="bob", cores=16)
    assert ledger.peak("cores", Slot(at(0), at(10)), T0) == 16


def test_a_hold_ending_at_t_and_one_starting_at_t(ledger: Ledger) -> None:
    book(ledger, 0, 2, cores=16)
    book(ledger, 2, 4, cores=16)
    assert ledger.peak("cores", Slot(at(1), at(3)), T0) == 16
    assert ledger.peak("cores", Slot(at(4), at(5)), T0) == 0
    assert ledger.peak("cores", Slot(at(3), at(3)), T0) == 0  # an empty slot holds nothing


def test_slot_exactly_filling_a_pool(ledger: Ledger) -> None:
    assert ledger.place(ask((0, 0), need={"cores": 16, "gpus": 2}), T0)
    assert ledger.place(ask((0, 0), need={"cores": 1}, ask_id="b"), T0) == []
    assert ledger.place(ask((0, 0), need={"cores": 17}, ask_id="c", owner="bob"), T0) == []
    assert ledger.earliest({"cores": 17}, H, T0, T0) is None


def test_memory_off_by_one_byte(ledger: Ledger) -> None:
    book(ledger, 0, 2, memory=8 * GIB)
    book(ledger, 0, 2, memory=8 * GIB - 1)
    assert ledger.place(ask((0, 0), need={"memory": 2}, ask_id="x"), T0) == []
    assert ledger.place(ask((0, 0), need={"memory": 1}, ask_id="y"), T0)
    assert ledger.peak("memory", Slot(at(0), at(2)), T0) == 16 * GIB


def test_zero_length_window_offers_only_its_instant(ledger: Ledger) -> None:
    offers = ledger.place(ask((3, 3), need={"cores": 4}, max_offers=3), T0)
    assert starts(offers) == [at(3)]
    book(ledger, 3, 4, owner="bob", cores=12)  # with the 4 held: full
    assert ledger.place(ask((3, 3), need={"cores": 1}, ask_id="b", owner="bob"), T0) == []


def test_start_at_window_end_exactly(ledger: Ledger) -> None:
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


def test_slot_extends_to_max_duration_as_far_as_it_fits(ledger: Ledger) -> None:
    book(ledger, 6, 8, cores=16)
    (offer,) = ledger.place(ask((0, 0), need={"cores": 1}, shortest=2, longest=10), T0)
    assert offer.slot == Slot(at(0), at(6))
    (offer,) = ledger.place(ask((9, 9), need={"cores": 1}, shortest=2, longest=3, ask_id="b"), T0)
    assert offer.slot == Slot(at(9), at(12))


def test_without_max_duration_slots_have_min_duration(ledger: Ledger) -> None:
    (offer,) = ledger.place(ask((0, 0), need={"cores": 1}, shortest=3), T0)
    assert offer.slot.duration == 3 * H


def test_later_offers_start_at_hold_ends(ledger: Ledger) -> None:
    book(ledger, 0, 3, cores=12)
    offers = ledger.place(ask((0, 24), need={"cores": 8}, shortest=2, max_offers=3), T0)
    # 8 + 12 > 16 until 3:00; then each offer starts where the previous ends.
    assert [o.slot for o in offers] == [Slot(at(3), at(5)), Slot(at(5), at(7)), Slot(at(7), at(9))]
    assert ledger.peak("cores", Slot(at(0), at(24)), T0) == 12


def test_offers_of_one_place_fit_with_each_other(ledger: Ledger) -> None:
    both = ledger.place(ask((0, 0), (1, 1), need={"cores": 8}, shortest=4, max_offers=3), T0)
    assert starts(both) == [at(0), at(1)]  # 8 + 8 = 16: they fit together
    assert ledger.peak("cores", ALL_TIME, T0) == 16
    one = ledger.place(
        ask((10, 10), (11, 11), need={"cores": 10}, shortest=4, ask_id="b", owner="bob"), T0
    )
    assert starts(one) == [at(10)]  # 10 + 10 > 16: 11:00 would overlap the 10:00 offer
    assert ledger.peak("cores", ALL_TIME, T0) == 16


def test_windows_are_searched_in_order_of_start(ledger: Ledger) -> None:
    offers = ledger.place(ask((30, 30), (5, 5), (10, 10), need={"cores": 1}, max_offers=3), T0)
    assert starts(offers) == [at(5), at(10), at(30)]


def test_a_window_in_the_past_starts_now(ledger: Ledger) -> None:
    offers = ledger.place(ask((-10, 10), need={"cores": 1}), at(1))
    assert starts(offers)[0] == at(1)
    assert ledger.place(ask((-10, -5), need={"cores": 1}, ask_id="b"), at(1)) == []


def test_horizon_bounds_starts(store: Store) -> None:
    led = store.open(POOLS, horizon=timedelta(days=2))
    assert led.place(ask((49, 60), need={"cores": 1}), T0) == []
    assert starts(led.place(ask((47, 60), need={"cores": 1}, ask_id="b"), T0)) == [at(47)]
    assert led.earliest({"cores": 1}, H, at(49), T0) is None


def test_unknown_pool_fits_nowhere_but_zero_is_ignored(ledger: Ledger) -> None:
    assert ledger.place(ask((0, 1), need={"fpgas": 1}), T0) == []
    assert ledger.earliest({"fpgas": 1}, H, T0, T0) is None
    assert ledger.place(ask((0, 1), need={"fpgas": 0, "cores": 1}), T0)


def test_bad_arguments_raise_value_error(ledger: Ledger, store: Store) -> None:
    with pytest.raises(ValueError, match="negative"):
        ledger.place(ask((0, 1), need={"cores": -1}), T0)
    with pytest.raises(ValueError, match="positive"):
        ledger.place(ask((0, 1), shortest=0), T0)
    with pytest.raises(ValueError, match="shorter"):
        ledger.place(ask((0, 1), shortest=2, longest=1), T0)
    with pytest.raises(ValueError, match="positive"):
        ledger.earliest({"cores": 1}, timedelta(0), T0, T0)
    with pytest.raises(ValueError, match="capacity"):
        store.open({"cores": -1})


def test_refused_slots_are_skipped(ledger: Ledger) -> None:
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


def test_a_short_refusal_does_not_skip_the_start_just_after_it(ledger: Ledger) -> None:
    # A maintenance hour [0:00, 1:00); a 4-hour task may start in [0:00, 2:00].
    offers = ledger.place(
        ask((0, 2), shortest=4, need={"cores": 1}, refuse=lambda c, s: s.start < at(1)), T0
    )
    assert starts(offers)[:1] == [at(1)]


def test_refusing_everything_gives_nothing(ledger: Ledger) -> None:
    offers = ledger.place(ask((0, 24 * 300), need={"cores": 1}, refuse=lambda c, s: True), T0)
    assert offers == []
    assert ledger.peak("cores", ALL_TIME, T0) == 0


def test_hold_false_holds_nothing(ledger: Ledger) -> None:
    offers = ledger.place(ask((0, 10), need={"cores": 16}, max_offers=3, hold=False), T0)
    assert len(offers) == 3
    assert all(o.id == "" and o.expire_time is None for o in offers)
    assert ledger.peak("cores", ALL_TIME, T0) == 0


def test_candidates_at_one_start_each_get_an_offer(ledger: Ledger) -> None:
    small, big = cand("small", cores=6), cand("big", cores=10)
    offers = ledger.place(ask((0, 10), candidates=(small, big), max_offers=3), T0)
    assert [(o.candidate.plugin, o.slot.start) for o in offers] == [
        ("small", at(0)),
        ("big", at(0)),
        ("small", at(2)),
    ]
    assert ledger.peak("cores", ALL_TIME, T0) == 16


def test_earliest_candidate_wins_and_a_tie_that_no_longer_fits_is_skipped(
    ledger: Ledger,
) -> None:
    book(ledger, 0, 2, owner="bob", gpus=2)
    gpu, cpu = cand("gpu", gpus=1), cand("cpu", cores=12)
    twin = cand("cpu2", cores=12)
    offers = ledger.place(ask((0, 10), candidates=(gpu, cpu, twin), max_offers=2), T0)
    assert [(o.candidate.plugin, o.slot.start) for o in offers] == [("cpu", at(0)), ("gpu", at(2))]


def test_earliest_is_the_first_slot_where_the_need_fits_for_the_duration(ledger: Ledger) -> None:
    book(ledger, 0, 5, cores=10)
    book(ledger, 6, 9, cores=10)
    assert ledger.earliest({"cores": 8}, H, T0, T0) == Slot(at(5), at(6))
    assert ledger.earliest({"cores": 8}, 2 * H, T0, T0) == Slot(at(9), at(11))
    assert ledger.earliest({"cores": 6}, 2 * H, at(-5), T0) == Slot(at(0), at(2))
    assert ledger.earliest({"cores": 8}, H, at(100), T0) == Slot(at(100), at(101))


def test_earliest_far_away_across_a_long_busy_stretch(ledger: Ledger) -> None:
    for day in range(40):
        book(ledger, 24 * day, 24 * day + 24, cores=16)
    assert ledger.earliest({"cores": 1}, H, T0, T0) == Slot(at(960), at(961))


# --- Expiry ----------------------------------------------------------------------------


def test_an_expiring_offer_frees_capacity(ledger: Ledger) -> None:
    (offer,) = ledger.place(ask((1, 1), need={"cores": 16}, ttl=5 * M), T0)
    assert offer.expire_time == T0 + 5 * M
    bob = ask((1, 1), need={"cores": 1}, owner="bob", ask_id="b")
    assert ledger.place(bob, T0 + 5 * M - timedelta(microseconds=1)) == []
    assert ledger.place(bob, T0 + 5 * M)  # expire_time <= now: released


def test_accept_after_expiry_is_offer_expired(ledger: Ledger) -> None:
    (offer,) = ledger.place(ask((1, 1), ttl=5 * M), T0)
    with pytest.raises(OfferExpired):
        ledger.accept(offer.id, "alice", T0 + 5 * M)
    with pytest.raises(OfferNotFound):  # another owner learns nothing
        ledger.accept(offer.id, "bob", T0 + 5 * M)


def test_the_clock_never_runs_back_for_expiry(ledger: Ledger) -> None:
    (offer,) = ledger.place(ask((1, 1), ttl=5 * M), T0)
    ledger.peak("cores", ALL_TIME, T0 + 10 * M)
    with pytest.raises(OfferExpired):
        ledger.accept(offer.id, "alice", T0)


def test_a_clock_set_back_across_a_restart_revives_no_expired_offer(store: Store) -> None:
    led = store.open({"cores": 1})
    first = led.place(ask((1, 1), shortest=1, ask_id="a1"), T0)[0]
    later = T0 + 10 * M  # first has expired: its core goes to a second offer
    second = led.place(ask((1, 1), shortest=1, ask_id="a2"), later)[0]
    led.accept(second.id, "alice", later)
    led.close()
    led = store.open({"cores": 1})  # restarted, with the clock set back
    with pytest.raises(OfferExpired):
        led.accept(first.id, "alice", T0 + 1 * M)
    assert led.peak("cores", ALL_TIME, T0 + 1 * M) <= 1


def test_reject_releases_an_offer_once_and_only_for_its_owner(ledger: Ledger) -> None:
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
        ledger.accept(offer.id, "alice", T0)


def test_rejecting_an_expired_offer_forgets_it(ledger: Ledger) -> None:
    (offer,) = ledger.place(ask((1, 1), ttl=5 * M), T0)
    ledger.reject(offer.id, "alice", T0 + 10 * M)
    with pytest.raises(OfferNotFound):
        ledger.accept(offer.id, "alice", T0 + 10 * M)


# --- Accepting -------------------------------------------------------------------------


def test_accept_releases_siblings(ledger: Ledger) -> None:
    offers = ledger.place(ask((0, 24), need={"cores": 16}, max_offers=3), T0)
    assert len(offers) == 3
    other = ledger.place(ask((0, 24), need={"cores": 0, "gpus": 1}, ask_id="other"), T0)
    booking, created = ledger.accept(offers[1].id, "alice", T0)
    assert created
    assert booking.slot == offers[1].slot
    assert booking.state is BookingState.BOOKED
    assert booking.offer_id == offers[1].id
    for sibling in (offers[0], offers[2]):
        with pytest.raises(OfferNotFound):
            ledger.accept(sibling.id, "alice", T0)
    assert ledger.peak("cores", ALL_TIME, T0) == 16
    assert ledger.peak("cores", offers[0].slot, T0) == 0
    assert ledger.accept(other[0].id, "alice", T0)[0].need == {"gpus": 1}  # other asks stay


def test_accept_is_idempotent_and_says_created_only_the_first_time(ledger: Ledger) -> None:
    (offer,) = ledger.place(ask((0, 0), need={"cores": 4}), T0)
    first, created = ledger.accept(offer.id, "alice", T0)
    again, created_again = ledger.accept(offer.id, "alice", T0 + M)
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert first.serviceinfo == {"plugin": "p"}
    assert first.servicetype == "svc-p"
    assert first.plugin == "p"
    assert first.need == {"cores": 4}
    assert first.owner == "alice"
    assert len(ledger.bookings("alice", T0)) == 1
    assert ledger.peak("cores", ALL_TIME, T0) == 4
    ledger.cancel(first.id, "alice", T0)
    cancelled, created = ledger.accept(offer.id, "alice", T0)
    assert cancelled.state is BookingState.CANCELLED
    assert not created
    assert ledger.peak("cores", ALL_TIME, T0) == 0


def test_accept_after_expiry_of_an_accepted_offer_still_returns_the_booking(
    ledger: Ledger,
) -> None:
    (offer,) = ledger.place(ask((1, 1), ttl=5 * M), T0)
    booking, _ = ledger.accept(offer.id, "alice", T0)
    again, created = ledger.accept(offer.id, "alice", T0 + 10 * M)
    assert again.id == booking.id
    assert not created


def test_other_owners_cannot_touch(ledger: Ledger) -> None:
    (offer,) = ledger.place(ask((0, 0), need={"cores": 4}), T0)
    with pytest.raises(OfferNotFound):
        ledger.accept(offer.id, "bob", T0)
    with pytest.raises(OfferNotFound):
        ledger.reject(offer.id, "bob", T0)
    booking, _ = ledger.accept(offer.id, "alice", T0)
    with pytest.raises(OfferNotFound):
        ledger.accept(offer.id, "bob", T0)
    with pytest.raises(BookingNotFound):
        ledger.get(booking.id, "bob", T0)
    with pytest.raises(BookingNotFound):
        ledger.cancel(booking.id, "bob", T0)
    assert ledger.bookings("bob", T0) == []
    assert ledger.get(booking.id, "alice", T0).state is BookingState.BOOKED


def test_an_owner_holds_at_most_max_outstanding_offers(ledger: Ledger) -> None:
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


# --- Cancelling ------------------------------------------------------------------------


def test_cancel_releases_and_is_idempotent(ledger: Ledger) -> None:
    booking = book(ledger, 0, 4, cores=16)
    assert ledger.place(ask((0, 0), ask_id="b", owner="bob"), T0) == []
    cancelled, changed = ledger.cancel(booking.id, "alice", T0 + M)
    assert changed
    assert cancelled.state is BookingState.CANCELLED
    assert cancelled.cancel_time == T0 + M
    assert ledger.cancel(booking.id, "alice", T0 + 2 * M) == (cancelled, False)
    assert ledger.peak("cores", ALL_TIME, T0 + 2 * M) == 0
    assert ledger.place(ask((0, 0), ask_id="c", owner="bob"), T0 + 2 * M) == []  # now > 0:00
    assert ledger.place(ask((1, 1), ask_id="d", owner="bob", need={"cores": 16}), T0 + 2 * M)
    with pytest.raises(BookingNotFound):
        ledger.cancel("nope", "alice", T0)


# --- Announcements: recorded with each booking ------------------------------------


def due(ledger: Ledger, now: datetime) -> list[tuple[str, tuple[str, ...]]]:
    return [(d.booking.id, d.events) for d in ledger.due_announcements(now, 100)]


def test_a_booking_not_recorded_as_announced_is_due_once_per_announce_after(
    ledger: Ledger,
) -> None:
    booking = book(ledger, 0, 2, cores=4)  # made at T0
    assert due(ledger, T0 + ANNOUNCE_AFTER - timedelta(microseconds=1)) == []
    assert due(ledger, T0 + ANNOUNCE_AFTER) == [(booking.id, (BOOKED,))]
    assert due(ledger, T0 + ANNOUNCE_AFTER) == []  # claimed
    assert due(ledger, T0 + 2 * ANNOUNCE_AFTER) == [(booking.id, (BOOKED,))]
    ledger.announced({booking.id: BOOKED})
    assert due(ledger, T0 + 10 * ANNOUNCE_AFTER) == []


def test_a_booking_announced_in_time_is_never_due(ledger: Ledger) -> None:
    booking = book(ledger, 0, 2, cores=4)
    ledger.announced({booking.id: BOOKED, "never-made": BOOKED})
    assert due(ledger, T0 + 10 * ANNOUNCE_AFTER) == []
    assert ledger.get(booking.id, "alice", T0) == booking


def test_a_cancellation_is_due_after_its_booking_and_recorded_apart(ledger: Ledger) -> None:
    told = book(ledger, 0, 2, cores=4)
    untold = book(ledger, 2, 4, cores=4)
    ledger.announced({told.id: BOOKED})
    for booking in (told, untold):
        assert ledger.cancel(booking.id, "alice", T0 + M)[1]
    later = T0 + M + ANNOUNCE_AFTER
    assert sorted(due(ledger, later)) == sorted(
        [(told.id, (CANCELLED,)), (untold.id, (BOOKED, CANCELLED))]
    )
    ledger.announced({told.id: CANCELLED, untold.id: BOOKED})
    assert due(ledger, later + ANNOUNCE_AFTER) == [(untold.id, (CANCELLED,))]
    ledger.announced({untold.id: CANCELLED})
    assert due(ledger, later + 10 * ANNOUNCE_AFTER) == []


def test_due_announcements_claimed_one_after_another_are_claimed_once(store: Store) -> None:
    """Two ledgers on one store (replicas, for a shared backend; for SQLite
    two calls of one ledger), one claim after the other: the second gets
    only what the first left."""
    one = store.open()
    other = store.open() if store.shared else one
    made = [book(one, 2 * i, 2 * i + 1, cores=1).id for i in range(6)]
    later = T0 + ANNOUNCE_AFTER
    got = [one.due_announcements(later, 3), other.due_announcements(later, 3)]
    ids = [d.booking.id for batch in got for d in batch]
    assert sorted(ids) == sorted(made)


def test_due_announcements_claimed_at_once_from_many_threads_are_claimed_once(
    store: Store,
) -> None:
    """Claims racing from 8 threads over two ledgers on one store (replicas,
    for a shared backend): every due booking is claimed exactly once."""
    ledgers = [store.open(), store.open()] if store.shared else [store.open()]
    made = [book(ledgers[0], i, i + 1, cores=1).id for i in range(40)]
    later = T0 + ANNOUNCE_AFTER
    barrier = threading.Barrier(8)
    claimed: list[str] = []

    def claim(led: Ledger) -> None:
        barrier.wait(timeout=30)
        for _ in range(20):
            batch = led.due_announcements(later, 2)
            claimed.extend(d.booking.id for d in batch)

    threads = [threading.Thread(target=claim, args=(ledgers[n % len(ledgers)],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(claimed) == sorted(made)


def test_the_latest_event_recorded_as_announced_is_read_back(ledger: Ledger) -> None:
    booking = book(ledger, 0, 2, cores=4)
    assert ledger.announced_event(booking.id) is None
    ledger.announced({booking.id: BOOKED})
    assert ledger.announced_event(booking.id) == BOOKED
    ledger.cancel(booking.id, "alice", T0 + M)
    assert ledger.announced_event(booking.id) == BOOKED
    ledger.announced({booking.id: CANCELLED})
    assert ledger.announced_event(booking.id) == CANCELLED
    ledger.announced({booking.id: BOOKED})  # a late, lower record changes nothing
    assert ledger.announced_event(booking.id) == CANCELLED
    assert ledger.announced_event("never-made") is None


def test_finished_is_derived_and_cannot_be_cancelled(ledger: Ledger) -> None:
    booking = book(ledger, 1, 3, cores=1)
    assert ledger.get(booking.id, "alice", at(3) - timedelta(microseconds=1)).state is (
        BookingState.BOOKED
    )
    assert ledger.get(booking.id, "alice", at(3)).state is BookingState.FINISHED
    finished, changed = ledger.cancel(booking.id, "alice", at(4))
    assert finished.state is BookingState.FINISHED
    assert not changed
    assert ledger.bookings("alice", at(4))[0].cancel_time is None


def test_bookings_are_the_owners_by_start(ledger: Ledger) -> None:
    late = book(ledger, 10, 12, cores=1)
    early = book(ledger, 2, 4, cores=1)
    book(ledger, 5, 6, owner="bob", cores=1)
    assert [b.id for b in ledger.bookings("alice", T0)] == [early.id, late.id]


# --- Occupancy: amounts held, never whose ---------------------------------------------


def test_occupancy_counts_booked_and_offered_apart(ledger: Ledger) -> None:
    book(ledger, 1, 3, cores=4)
    (offer,) = ledger.place(ask((2, 2), need={"cores": 2, "memory": GIB}, owner="bob"), T0)
    assert offer.slot == Slot(at(2), at(4))
    assert ledger.occupancy("cores", at(0), at(5), T0) == [
        OccupancyStep(at(0), at(1), 0, 0),
        OccupancyStep(at(1), at(2), 4, 0),
        OccupancyStep(at(2), at(3), 4, 2),
        OccupancyStep(at(3), at(4), 0, 2),
        OccupancyStep(at(4), at(5), 0, 0),
    ]
    assert ledger.occupancy("memory", at(0), at(5), T0) == [
        OccupancyStep(at(0), at(2), 0, 0),
        OccupancyStep(at(2), at(4), 0, GIB),
        OccupancyStep(at(4), at(5), 0, 0),
    ]
    assert ledger.occupancy("gpus", at(0), at(5), T0) == [OccupancyStep(at(0), at(5), 0, 0)]
    assert ledger.occupancy("no-such-pool", at(0), at(5), T0) == [OccupancyStep(at(0), at(5), 0, 0)]


def test_occupancy_counts_no_cancelled_booking_nor_released_or_expired_offer(
    ledger: Ledger,
) -> None:
    cancelled = book(ledger, 0, 2, cores=1)
    ledger.cancel(cancelled.id, "alice", T0)
    (rejected,) = ledger.place(ask((0, 0), need={"cores": 2}, ask_id="rejected"), T0)
    ledger.reject(rejected.id, "alice", T0)
    first, sibling = ledger.place(ask((0, 4), need={"cores": 4}, ask_id="two", max_offers=2), T0)
    assert (first.slot, sibling.slot) == (Slot(at(0), at(2)), Slot(at(2), at(4)))
    ledger.accept(first.id, "alice", T0)
    ledger.place(ask((5, 5), need={"cores": 8}, ask_id="short", owner="bob", ttl=M), T0)
    assert ledger.occupancy("cores", at(0), at(8), T0)[-2:] == [
        OccupancyStep(at(5), at(7), 0, 8),
        OccupancyStep(at(7), at(8), 0, 0),
    ]
    later = T0 + 2 * M  # the short offer has expired
    assert ledger.occupancy("cores", at(0), at(8), later) == [
        OccupancyStep(later, at(2), 4, 0),  # the accepted offer: booked, not offered too
        OccupancyStep(at(2), at(8), 0, 0),
    ]


def test_occupancy_starts_at_the_ledger_clock(ledger: Ledger) -> None:
    book(ledger, 0, 2, cores=3)
    assert ledger.occupancy("cores", at(0), at(3), at(1)) == [
        OccupancyStep(at(1), at(2), 3, 0),
        OccupancyStep(at(2), at(3), 0, 0),
    ]
    # The booking has finished; the clock never runs back for a later call.
    assert ledger.occupancy("cores", at(0), at(3), at(2)) == [OccupancyStep(at(2), at(3), 0, 0)]
    assert ledger.occupancy("cores", at(0), at(3), T0) == [OccupancyStep(at(2), at(3), 0, 0)]
    assert ledger.occupancy("cores", at(0), at(2), T0) == []
    assert ledger.occupancy("cores", at(5), at(4), T0) == []


def test_occupancy_says_amounts_never_whose(ledger: Ledger) -> None:
    fields = [f.name for f in dataclasses.fields(OccupancyStep)]
    assert fields == ["start", "end", "booked", "offered"]
    book(ledger, 0, 1, owner="carol-the-owner", cores=1)
    text = repr(ledger.occupancy("cores", at(0), at(2), T0))
    assert "carol" not in text
    assert ledger.pools == POOLS


# --- Restarts ------------------------------------------------------------------------------


def test_bookings_and_offers_survive_a_restart(store: Store) -> None:
    led = store.open()
    kept = book(led, 0, 4, cores=8)
    short = led.place(ask((0, 0), need={"cores": 4}, ask_id="short", ttl=5 * M), T0)
    long_ = led.place(ask((0, 0), need={"cores": 2}, ask_id="long", ttl=60 * M), T0)
    gone = book(led, 5, 6, cores=8)
    led.cancel(gone.id, "alice", T0)
    led.close()

    led = store.open()
    assert led.bookings("alice", T0 + 10 * M) == [
        kept,
        led.get(gone.id, "alice", T0 + 10 * M),
    ]
    assert led.get(gone.id, "alice", T0).state is BookingState.CANCELLED
    assert led.peak("cores", Slot(at(0), at(4)), T0 + 10 * M) == 10  # the expired 4 is gone
    with pytest.raises(OfferExpired):
        led.accept(short[0].id, "alice", T0 + 10 * M)
    assert led.accept(long_[0].id, "alice", T0 + 10 * M)[0].need == {"cores": 2}


def test_closing_twice_is_harmless(store: Store) -> None:
    led = store.open()
    led.close()
    led.close()


def test_a_ledger_says_its_threads_answers_a_ping_and_describes_where_it_lives(
    ledger: Ledger,
) -> None:
    assert ledger.threads >= 1
    ledger.ping()
    assert ledger.describe()


# --- Concurrency -----------------------------------------------------------------------


def _run_threads(targets: list[threading.Thread]) -> None:
    for thread in targets:
        thread.start()
    for thread in targets:
        thread.join(timeout=60)
        assert not thread.is_alive()


def test_200_threads_racing_accepts_and_places_never_overbook(store: Store) -> None:
    pools = {"cores": 64, "memory": 256 * GIB}
    offers = prepare_offers(lambda: store.open(pools), 200)
    assert len(offers) == 200
    led = store.open(pools)
    barrier = threading.Barrier(200 + 40)
    errors: list[BaseException] = []
    booked: list[tuple[Booking, bool]] = []

    def accept(offer: HeldOffer) -> None:
        barrier.wait()
        try:
            booked.append(led.accept(offer.id, offer.owner, T0))
        except BaseException as exc:
            errors.append(exc)

    def racer(i: int) -> None:
        barrier.wait()
        try:
            placement = ask((0, 96), need={"cores": 32}, owner=f"racer{i}", ask_id="r")
            for offer in led.place(placement, T0)[:1]:
                booked.append(led.accept(offer.id, offer.owner, T0))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=accept, args=(o,)) for o in offers]
    threads += [threading.Thread(target=racer, args=(i,)) for i in range(40)]
    _run_threads(threads)
    assert errors == []
    assert len({b.id for b, _ in booked}) == len(booked) >= 200
    assert all(created for _, created in booked)
    led.close()
    holds = store.holds(T0)
    assert len(holds) == len(booked)
    assert_within(holds, pools)


def test_200_threads_accepting_one_offer_make_one_booking(ledger: Ledger) -> None:
    (offer,) = ledger.place(ask((0, 0), need={"cores": 16}), T0)
    barrier = threading.Barrier(200)
    results: list[tuple[Booking, bool]] = []

    def accept() -> None:
        barrier.wait()
        results.append(ledger.accept(offer.id, "alice", T0))

    _run_threads([threading.Thread(target=accept) for _ in range(200)])
    assert len(results) == 200
    assert len({b.id for b, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert len(ledger.bookings("alice", T0)) == 1


def test_200_threads_cancelling_one_booking_cancel_it_once(ledger: Ledger) -> None:
    booking = book(ledger, 1, 2, cores=16)
    barrier = threading.Barrier(200)
    changed: list[bool] = []

    def cancel() -> None:
        barrier.wait()
        changed.append(ledger.cancel(booking.id, "alice", T0)[1])

    _run_threads([threading.Thread(target=cancel) for _ in range(200)])
    assert len(changed) == 200
    assert sum(changed) == 1
    assert ledger.peak("cores", ALL_TIME, T0) == 0


# --- Properties ---------------------------------------------------------------------------

POOLS_SMALL = {"cores": 8, "memory": 100}


def oracle_earliest(
    holds: list[Interval], need: dict[str, int], lo: datetime, hi: datetime, dur: timedelta
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
    """Random place/accept/reject/cancel/time/restart steps against a model
    of the holds, on a fresh store of one backend per run."""

    def __init__(self, new_store: Callable[[], Store]) -> None:
        super().__init__()
        self.new_store = new_store

    @initialize()
    def start(self) -> None:
        self.store = self.new_store()
        self.led = self.open()
        self.now = T0
        self.asks = 0
        #: offer id -> (owner, ask id, held interval, expire time)
        self.offers: dict[str, tuple[str, str, Interval, datetime]] = {}
        self.known_offers: list[str] = ["never-made"]
        self.booked: dict[str, Booking] = {}  # offer id -> booking
        self.cancelled: set[str] = set()

    def open(self) -> Ledger:
        # Expired offers are kept for the whole run, so accepting one is
        # always OfferExpired.
        return self.store.open(POOLS_SMALL, purge_after=timedelta(days=3650))

    @rule()
    def restart(self) -> None:
        """Close and open the store again: a ledger rebuilt from it."""
        self.led.close()
        self.led = self.open()

    def holds(self) -> list[Interval]:
        return self.live_offers() + self.live_bookings()

    def live_offers(self) -> list[Interval]:
        return [iv for _, _, iv, exp in self.offers.values() if exp > self.now]

    def live_bookings(self) -> list[Interval]:
        return [
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
            again, created = self.led.accept(offer_id, owner, self.now)
            assert again.id == self.booked[offer_id].id
            assert not created
            return
        entry = self.offers.get(offer_id)
        if entry is None or entry[0] != owner:
            with pytest.raises(OfferNotFound):
                self.led.accept(offer_id, owner, self.now)
            return
        if entry[3] <= self.now:
            with pytest.raises(OfferExpired):
                self.led.accept(offer_id, owner, self.now)
            return
        booking, created = self.led.accept(offer_id, owner, self.now)
        assert created
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
        # In the order they were booked: the ledger's ids are random, so an
        # order by id would differ when hypothesis replays the same choices.
        booking = data.draw(st.sampled_from(list(self.booked.values())))
        if booking.owner != owner:
            with pytest.raises(BookingNotFound):
                self.led.cancel(booking.id, owner, self.now)
            return
        result, changed = self.led.cancel(booking.id, owner, self.now)
        if booking.id in self.cancelled:
            assert result.state is BookingState.CANCELLED
            assert not changed
        elif booking.slot.end <= self.now:
            assert result.state is BookingState.FINISHED
            assert not changed
        else:
            assert result.state is BookingState.CANCELLED
            assert changed
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
        lo, hi = self.now - H, self.now + 30 * H
        steps = self.led.occupancy("cores", lo, hi, self.now)
        booked, offered = self.live_bookings(), self.live_offers()
        assert_occupancy(steps, booked, offered, "cores", self.now, hi)

    def teardown(self) -> None:
        if hasattr(self, "store"):
            self.store.close()


def test_ledger_matches_a_model_of_its_holds(new_store: Callable[[], Store]) -> None:
    run_state_machine_as_test(
        lambda: LedgerMachine(new_store),
        settings=settings(
            max_examples=300,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
