"""The in-memory holds (ep_server.schedule.holds): the bucketed index
against a plain list, and the bookkeeping of offers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ep_server.schedule.calendar import Hold
from ep_server.schedule.holds import HoldIndex, LiveHolds

#: Durations from one microsecond to a year, so holds fall in many buckets.
durations = st.one_of(st.integers(1, 16), st.integers(1, 2**20), st.integers(1, 2**45))
starts = st.one_of(st.integers(0, 64), st.integers(0, 2**46))


@st.composite
def index_steps(draw: st.DrawFn) -> tuple[list[tuple[str, Hold]], list[tuple[str, Hold]], set[str]]:
    """Holds loaded at once, holds added one by one (some starting together),
    and the keys then removed (some never added)."""
    holds: list[tuple[str, Hold]] = []
    for n in range(draw(st.integers(0, 40))):
        if holds and draw(st.booleans()):
            start = draw(st.sampled_from([h.start for _, h in holds] + [h.end for _, h in holds]))
        else:
            start = draw(starts)
        holds.append((f"k{n}", Hold(start, start + draw(durations), {"cores": 1})))
    cut = draw(st.integers(0, len(holds)))
    keys = [k for k, _ in holds] + ["never-added"]
    removed = draw(st.sets(st.sampled_from(keys)))
    return holds[:cut], holds[cut:], removed


def queries(holds: list[Hold]) -> list[tuple[int, int]]:
    """Ranges whose ends sit on, just before and just after every edge."""
    edges = sorted({t + d for h in holds for t in (h.start, h.end) for d in (-1, 0, 1)} | {0})
    ranges = [(lo, hi) for lo in edges for hi in edges if hi >= lo]
    return ranges[:: max(1, len(ranges) // 1000)]


@settings(max_examples=100)
@given(index_steps())
def test_overlapping_is_every_hold_that_starts_before_hi_and_ends_after_lo(
    steps: tuple[list[tuple[str, Hold]], list[tuple[str, Hold]], set[str]],
) -> None:
    loaded, added, removed = steps
    index = HoldIndex()
    index.load(loaded)
    for key, hold in added:
        index.add(key, hold)
    everything = dict(loaded + added)
    for key in removed:
        assert index.remove(key) is everything.pop(key, None)
    assert len(index) == len(everything)
    assert all(key in index for key in everything)
    assert not any(key in index for key in removed)
    kept = list(everything.values())
    for lo, hi in queries(kept):
        got = sorted(map(id, index.overlapping(lo, hi)))
        assert got == sorted(id(h) for h in kept if h.start < hi and h.end > lo), (lo, hi)


def test_a_key_holds_one_hold() -> None:
    index = HoldIndex()
    index.add("a", Hold(0, 10, {}))
    with pytest.raises(KeyError):
        index.add("a", Hold(20, 30, {}))
    with pytest.raises(KeyError):
        index.load([("a", Hold(20, 30, {}))])
    assert index.remove("a") is not None
    assert index.remove("a") is None
    index.add("a", Hold(20, 30, {}))


def test_of_holds_starting_together_remove_takes_the_one_named() -> None:
    index = HoldIndex()
    first, second = Hold(5, 10, {"n": 1}), Hold(5, 9, {"n": 2})
    index.load([("first", first), ("second", second)])
    index.remove("first")
    assert list(index.overlapping(0, 100)) == [second]


# --- Offers' bookkeeping --------------------------------------------------------------


def test_offers_expire_at_their_expiry_and_not_before() -> None:
    live = LiveHolds()
    live.add_offer("o1", "alice", 100, Hold(0, 10, {}))
    live.add_offer("o2", "alice", 50, Hold(0, 10, {}))
    live.add_booking("b1", Hold(0, 10, {}))
    live.expire(49)
    assert live.outstanding("alice") == 2
    live.expire(50)
    assert live.outstanding("alice") == 1
    assert "o2" not in live.index
    assert "o1" in live.index
    live.expire(10**9)
    assert live.outstanding("alice") == 0
    assert "b1" in live.index  # bookings never expire


def test_outstanding_offers_are_counted_per_owner() -> None:
    live = LiveHolds()
    live.load(
        [("b1", Hold(0, 10, {}))],
        [("o1", "alice", 100, Hold(0, 10, {})), ("o2", "bob", 100, Hold(5, 15, {}))],
    )
    live.add_offer("o3", "alice", 100, Hold(0, 10, {}))
    assert (live.outstanding("alice"), live.outstanding("bob"), live.outstanding("eve")) == (
        2,
        1,
        0,
    )
    live.drop_offer("o1")
    live.drop_offer("o1")  # already gone: nothing happens
    live.drop_offer("b1")  # a booking is not an offer
    assert (live.outstanding("alice"), len(live.index)) == (1, 3)
    live.expire(100)  # o1's expiry comes after it was dropped
    assert (live.outstanding("alice"), live.outstanding("bob"), len(live.index)) == (0, 0, 1)


def test_a_cancelled_booking_leaves_the_index() -> None:
    live = LiveHolds()
    live.add_booking("b1", Hold(0, 10, {"cores": 2}))
    live.remove_booking("b1")
    assert list(live.index.overlapping(0, 10)) == []


def test_overlapping_holds_are_told_apart_as_bookings_and_offers() -> None:
    live = LiveHolds()
    booked, early, late = Hold(0, 10, {}), Hold(5, 15, {}), Hold(20, 30, {})
    live.load([("b1", booked)], [("o1", "alice", 100, early)])
    live.add_offer("o2", "bob", 50, late)
    live.add_booking("b2", Hold(40, 50, {}))
    assert live.overlapping(0, 30) == ([booked], [early, late])  # one bucket: by start
    live.expire(50)
    assert live.overlapping(0, 30) == ([booked], [early])
    live.drop_offer("o1")
    assert live.overlapping(0, 30) == ([booked], [])
