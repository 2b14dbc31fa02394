"""The holds a ledger keeps in memory: an index for finding those that
overlap a stretch of time in about logarithmic time (the
:class:`~ep_server.schedule.calendar.Holds` such a ledger hands to the
calendar), and the bookkeeping of its offers (whose, until when).

Holds are bucketed by duration class (``(end - start).bit_length()``); in
each bucket they are sorted by start. A bucket's durations are all below
``2**k``, so a hold in it that overlaps ``[lo, hi)`` starts in
``(lo - 2**k, hi)``: one bisect pair per bucket, and the scan reads at most
about twice the overlapping holds (durations in a bucket are within a
factor of 2), however long the holds in other buckets are.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

from ep_server.schedule.calendar import Hold

__all__ = ["HoldIndex", "LiveHolds"]


class HoldIndex:
    """Holds by key (an offer's or a booking's id), bucketed by duration
    class, each bucket sorted by start. Not thread-safe: its ledger
    serializes the calls."""

    def __init__(self) -> None:
        self._buckets: dict[int, tuple[list[int], list[Hold]]] = {}
        self._keys: dict[str, Hold] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def get(self, key: str) -> Hold | None:
        """The hold under ``key``, if any."""
        return self._keys.get(key)

    def load(self, items: Iterable[tuple[str, Hold]]) -> None:
        """Add many holds at once (one sort per bucket, not one insert each)."""
        for key, hold in items:
            self._claim(key, hold)
            self._bucket(hold.end - hold.start)[1].append(hold)
        for starts, members in self._buckets.values():
            members.sort(key=lambda h: h.start)
            starts[:] = [h.start for h in members]

    def add(self, key: str, hold: Hold) -> None:
        """Add ``hold`` under ``key``. :raises KeyError: if ``key`` is taken."""
        self._claim(key, hold)
        starts, members = self._bucket(hold.end - hold.start)
        i = bisect_right(starts, hold.start)
        starts.insert(i, hold.start)
        members.insert(i, hold)

    def remove(self, key: str) -> Hold | None:
        """Remove and return the hold under ``key``; None if there is none."""
        hold = self._keys.pop(key, None)
        if hold is None:
            return None
        starts, members = self._bucket(hold.end - hold.start)
        i = bisect_left(starts, hold.start)
        while members[i] is not hold:  # holds starting together: find this one
            i += 1
        del starts[i], members[i]
        return hold

    def overlapping(self, lo: int, hi: int) -> Iterator[Hold]:
        """Every hold with ``start < hi`` and ``end > lo``."""
        for k, (starts, members) in self._buckets.items():
            i = bisect_right(starts, lo - (1 << k))
            j = bisect_left(starts, hi, lo=i)
            for hold in members[i:j]:
                if hold.end > lo:
                    yield hold

    def _claim(self, key: str, hold: Hold) -> None:
        if key in self._keys:
            raise KeyError(f"{key!r} already holds a slot")
        self._keys[key] = hold

    def _bucket(self, duration: int) -> tuple[list[int], list[Hold]]:
        return self._buckets.setdefault(duration.bit_length(), ([], []))


class LiveHolds:
    """What holds resources now: BOOKED bookings and unexpired offers, in
    one :attr:`index`, plus each offer's owner (for the cap on outstanding
    offers) and a heap of expiry times. Expiry is lazy: an offer leaves when
    :meth:`expire` is called with a time at or after its expiry.

    The ledger changes these only after its store committed the change.
    """

    def __init__(self) -> None:
        self.index = HoldIndex()
        self._owner: dict[str, str] = {}  # offer id -> owner
        self._by_owner: dict[str, set[str]] = {}
        self._expiry: list[tuple[int, str]] = []  # a heap of (expire, offer id)

    def load(
        self,
        bookings: Iterable[tuple[str, Hold]],
        offers: Iterable[tuple[str, str, int, Hold]],
    ) -> None:
        """Add many ``(id, hold)`` bookings and ``(id, owner, expire, hold)``
        offers at once."""
        holds = list(bookings)
        for offer_id, owner, expire, hold in offers:
            self._own(offer_id, owner)
            self._expiry.append((expire, offer_id))
            holds.append((offer_id, hold))
        heapq.heapify(self._expiry)
        self.index.load(holds)

    def add_booking(self, booking_id: str, hold: Hold) -> None:
        self.index.add(booking_id, hold)

    def remove_booking(self, booking_id: str) -> None:
        self.index.remove(booking_id)

    def add_offer(self, offer_id: str, owner: str, expire: int, hold: Hold) -> None:
        self._own(offer_id, owner)
        heapq.heappush(self._expiry, (expire, offer_id))
        self.index.add(offer_id, hold)

    def drop_offer(self, offer_id: str) -> None:
        """Forget an offer's hold (no-op when already gone: expiry is lazy)."""
        owner = self._owner.pop(offer_id, None)
        if owner is None:
            return
        self.index.remove(offer_id)
        mine = self._by_owner[owner]
        mine.discard(offer_id)
        if not mine:
            del self._by_owner[owner]

    def expire(self, now: int) -> None:
        """Drop every offer whose expiry is at or before ``now``."""
        while self._expiry and self._expiry[0][0] <= now:
            _, offer_id = heapq.heappop(self._expiry)
            self.drop_offer(offer_id)

    def overlapping(self, lo: int, hi: int) -> tuple[list[Hold], list[Hold]]:
        """The holds over ``[lo, hi)``: the bookings', and the offers'
        (unexpired as of the last :meth:`expire`)."""
        offers = {self.index.get(offer_id) for offer_id in self._owner}
        booked: list[Hold] = []
        offered: list[Hold] = []
        for hold in self.index.overlapping(lo, hi):
            (offered if hold in offers else booked).append(hold)
        return booked, offered

    def outstanding(self, owner: str) -> int:
        """How many offers ``owner`` holds (unexpired as of the last :meth:`expire`)."""
        return len(self._by_owner.get(owner, ()))

    def _own(self, offer_id: str, owner: str) -> None:
        self._owner[offer_id] = owner
        self._by_owner.setdefault(owner, set()).add(offer_id)
