"""The booking ledger in a SQLite file, with an in-memory index of holds.

Storage
    One SQLite file in WAL mode. Every mutating call is one ``BEGIN
    IMMEDIATE`` transaction, so a crash in the middle of an accept leaves a
    whole booking or none. ``synchronous=FULL`` (the default) makes an
    acknowledged call survive power loss; ``NORMAL`` survives a crash of the
    process (not of the machine) and is faster. The schema is versioned
    with ``PRAGMA user_version`` and created on first open.

    The file is opened with ``locking_mode=EXCLUSIVE``: the index below
    lives in this process, so a second process writing the same file would
    make it stale and overbook. Holding the lock for the connection's life
    makes a second opener fail ("database is locked") instead. The OS drops
    the lock when the process dies, so a restart after ``kill -9`` works.

Index
    Every hold (a BOOKED booking or an unexpired offer) is also kept in
    memory, rebuilt from the file at open and changed only after a commit
    succeeds. Holds are bucketed by duration class (``duration.bit_length()``
    of microseconds); in each bucket they are sorted by start, so the holds
    overlapping ``[lo, hi)`` are a bisect per bucket plus a short scan. A
    slot search sweeps those holds once: per pool it computes the intervals
    where adding the need would exceed the pool ("bad" intervals), merges
    them, and the earliest start is the first gap of the wanted length.
    Usage only drops where a hold ends, so every earliest start is the
    window's start or the end of a bad interval, which is a hold's end.

Time
    Times are stored as integer microseconds since the Unix epoch (UTC);
    naive datetimes are taken as UTC. The ledger keeps the latest ``now`` it
    was given and uses that for expiry: once an offer has expired it stays
    released even if a later call passes an earlier clock (otherwise an
    offer whose capacity was handed out could be accepted again). Slots
    never start before ``now`` nor after ``now + horizon``.

Threading contract
    The server calls every method from one worker thread. The connection is
    opened with ``check_same_thread=False`` and every public method takes
    one lock, so calls from several threads are serialized and the
    invariant holds at any concurrency. ``Placement.refuse`` runs under that
    lock: it must be quick and must not call back into the ledger.

Choices the interface leaves open
    - A need for a pool the site does not have fits nowhere (the pool's
      capacity is 0); a need of 0 for it is ignored. Negative needs and
      capacities raise ``ValueError``.
    - Each offer's slot is as long as fits, up to ``max_duration`` (at
      least ``min_duration``): "a longer slot" is offered when there is room.
    - Pairing: windows are taken in order of start. Each round finds, for
      every candidate, its earliest acceptable (fitting, not refused) slot
      at or after the cursor. The earliest start wins; every candidate whose
      slot starts then gets an offer, in candidate order, if it still fits
      beside the offers placed before it. The next round starts at the
      first hold end after that start (the offers just placed count), or
      at the next window's start if that is later, so later offers start
      strictly later, at an instant where something changes.
    - With ``hold``, at most ``max_outstanding`` minus the owner's
      unexpired offers are placed, so the cap is never exceeded.
    - Expired offers stay in the file (so accepting one says "expired"
      rather than "not found") until ``purge_after`` past their expiry.
      Rejecting an expired offer is allowed and deletes it.
    - Cancelling a FINISHED booking changes nothing and returns it.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
import threading
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from pathlib import Path
from typing import Any

from ep_server.model import Booking, BookingState, Schedule, Slot
from ep_server.schedule.ledger import (
    BookingNotFound,
    Candidate,
    HeldOffer,
    Ledger,
    OfferExpired,
    OfferNotFound,
    Placement,
    TooManyOffers,
)

__all__ = ["SCHEMA_VERSION", "SQLiteLedger"]

SCHEMA_VERSION = 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_HOUR_US = 3_600_000_000
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
#: A candidate whose plugin refuses this many slots in one place() gets none.
_REFUSALS = 200
#: After a refused slot the search moves on by at most this much, so a
#: refusal of a short stretch (a maintenance hour) does not skip past starts
#: just after it.
_REFUSAL_STEP_US = 15 * 60 * 1_000_000
_SAVE_CLOCK = (
    "INSERT INTO meta (key, value) VALUES ('clock', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"
)
#: How often (ledger time) place() deletes offers expired long ago.
_PURGE_EVERY_US = 10 * 60 * 1_000_000

_SCHEMA = (
    """CREATE TABLE offers (
        id TEXT PRIMARY KEY,
        ask_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        plugin TEXT NOT NULL,
        servicetype TEXT NOT NULL,
        serviceinfo TEXT NOT NULL,
        start_us INTEGER NOT NULL,
        end_us INTEGER NOT NULL,
        need TEXT NOT NULL,
        expire_us INTEGER NOT NULL
    )""",
    "CREATE INDEX offers_sibling ON offers (owner, ask_id)",
    "CREATE INDEX offers_expire ON offers (expire_us)",
    """CREATE TABLE bookings (
        id TEXT PRIMARY KEY,
        offer_id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        plugin TEXT NOT NULL,
        servicetype TEXT NOT NULL,
        serviceinfo TEXT NOT NULL,
        start_us INTEGER NOT NULL,
        end_us INTEGER NOT NULL,
        need TEXT NOT NULL,
        state INTEGER NOT NULL,
        create_us INTEGER NOT NULL,
        cancel_us INTEGER,
        extra TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX bookings_owner ON bookings (owner, start_us)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


# --- Time and needs -------------------------------------------------------------


def _to_us(when: datetime) -> int:
    """Microseconds since the epoch; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _US


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _span_us(span: timedelta) -> int:
    return span // _US


def _need(need: Mapping[str, int]) -> dict[str, int]:
    """The positive part of a need; negative amounts are a caller's bug."""
    out: dict[str, int] = {}
    for pool, amount in need.items():
        if amount < 0:
            raise ValueError(f"negative need {amount} for pool {pool!r}")
        if amount:
            out[pool] = int(amount)
    return out


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":"))


# --- The in-memory index of holds ----------------------------------------------


@dataclass(slots=True, eq=False)
class _Hold:
    """What one booking or offer holds over ``[start, end)``, in microseconds."""

    start: int
    end: int
    need: dict[str, int]
    id: str
    owner: str = ""
    #: None for a booking; an offer is released at this instant.
    expire: int | None = None


class _HoldIndex:
    """Holds bucketed by ``duration.bit_length()``, each bucket sorted by start.

    A bucket's durations are all below ``2**k``, so a hold in it that
    overlaps ``[lo, hi)`` starts in ``(lo - 2**k, hi)``: one bisect pair per
    bucket, and the scan reads at most twice the overlapping holds (durations
    in a bucket are within a factor of 2), however long other holds are.
    """

    def __init__(self) -> None:
        self._buckets: dict[int, tuple[list[int], list[_Hold]]] = {}
        self.size = 0

    def load(self, holds: Iterable[_Hold]) -> None:
        """Add many holds at once (one sort per bucket, not one insert each)."""
        for hold in holds:
            self._bucket(hold.end - hold.start)[1].append(hold)
            self.size += 1
        for starts, members in self._buckets.values():
            members.sort(key=lambda h: h.start)
            starts[:] = [h.start for h in members]

    def add(self, hold: _Hold) -> None:
        starts, members = self._bucket(hold.end - hold.start)
        i = bisect_right(starts, hold.start)
        starts.insert(i, hold.start)
        members.insert(i, hold)
        self.size += 1

    def remove(self, hold: _Hold) -> None:
        starts, members = self._bucket(hold.end - hold.start)
        i = bisect_left(starts, hold.start)
        while i < len(starts) and starts[i] == hold.start:
            if members[i].id == hold.id:
                del starts[i], members[i]
                self.size -= 1
                return
            i += 1

    def overlapping(self, lo: int, hi: int) -> Iterator[_Hold]:
        """Every hold with ``start < hi`` and ``end > lo``."""
        for k, (starts, members) in self._buckets.items():
            i = bisect_right(starts, lo - (1 << k))
            j = bisect_left(starts, hi, lo=i)
            for hold in members[i:j]:
                if hold.end > lo:
                    yield hold

    def _bucket(self, duration: int) -> tuple[list[int], list[_Hold]]:
        return self._buckets.setdefault(duration.bit_length(), ([], []))


# --- Interval arithmetic ------------------------------------------------------


def _over(events: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    """The intervals where the running sum of ``(time, delta)`` events
    exceeds ``limit``. Events at one instant apply together: holds are
    half-open, so one ending at t and one starting at t never overlap."""
    events.sort()
    out: list[tuple[int, int]] = []
    usage, begin, i, n = 0, -1, 0, len(events)
    while i < n:
        t = events[i][0]
        while i < n and events[i][0] == t:
            usage += events[i][1]
            i += 1
        if usage > limit and begin < 0:
            begin = t
        elif usage <= limit and begin >= 0:
            out.append((begin, t))
            begin = -1
    return out


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted union of intervals (touching ones joined)."""
    intervals.sort()
    out: list[tuple[int, int]] = []
    for start, end in intervals:
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def _first_fit(bad: list[tuple[int, int]], lo: int, duration: int) -> int:
    """The earliest ``s >= lo`` with ``[s, s + duration)`` clear of the
    merged ``bad`` intervals. Past the last interval the answer is only a
    lower bound (the caller looked no further)."""
    s = lo
    for start, end in bad:
        if end <= s:
            continue
        if start >= s + duration:
            break
        s = end
    return s


def _peak(holds: Iterable[_Hold], pool: str, lo: int, hi: int) -> int:
    events: list[tuple[int, int]] = []
    for hold in holds:
        amount = hold.need.get(pool, 0)
        if amount:
            events.append((max(hold.start, lo), amount))
            events.append((min(hold.end, hi), -amount))
    events.sort()
    usage = best = 0
    for _, delta in events:
        usage += delta
        best = max(best, usage)
    return best


# --- The ledger ----------------------------------------------------------------


class SQLiteLedger(Ledger):
    """The :class:`~ep_server.schedule.ledger.Ledger` in one SQLite file.

    :param path: the file, created if missing; ``":memory:"`` for tests.
    :param pools: pool name -> capacity (``cores``, ``memory`` in bytes, ...).
    :param horizon: slots start at most this long after ``now``.
    :param synchronous: ``PRAGMA synchronous``: FULL (survives power loss)
        or NORMAL (survives a process crash; faster).
    :param purge_after: expired offers are deleted this long after expiry.
    """

    def __init__(
        self,
        path: str | Path,
        pools: Mapping[str, int],
        horizon: timedelta = timedelta(days=366),
        synchronous: str = "FULL",
        purge_after: timedelta = timedelta(days=1),
    ) -> None:
        if any(v < 0 for v in pools.values()):
            raise ValueError(f"negative pool capacity in {dict(pools)}")
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {_SYNCHRONOUS}, not {synchronous!r}")
        self._pools = {name: int(v) for name, v in pools.items()}
        self._horizon = _span_us(horizon)
        self._purge_after = _span_us(purge_after)
        self._lock = threading.Lock()
        self._index = _HoldIndex()
        self._offers: dict[str, _Hold] = {}
        self._by_owner: dict[str, set[str]] = {}
        self._expiry: list[tuple[int, str]] = []
        self._clock = _to_us(datetime.min.replace(tzinfo=UTC))
        self._next_purge = self._clock
        self._db = _connect(str(path), synchronous.upper())
        self._closed = False
        self._load()

    # --- Ledger ---------------------------------------------------------------

    def place(self, placement: Placement, now: datetime) -> list[HeldOffer]:
        with self._lock:
            t = self._tick(now)
            limit = self._offer_limit(placement)
            found = _Search(self, placement, t).run(limit)
            if placement.hold and found:
                self._insert_offers(placement, found, t)
            return [self._held(placement, cand, hold) for cand, hold in found]

    def earliest(
        self, need: Mapping[str, int], duration: timedelta, after: datetime, now: datetime
    ) -> Slot | None:
        with self._lock:
            t = self._tick(now)
            dur = _positive(duration, "duration")
            start = self._find(_need(need), max(_to_us(after), t), t + self._horizon, dur, [])
            return None if start is None else Slot(_from_us(start), _from_us(start + dur))

    def accept(self, offer_id: str, owner: str, now: datetime) -> tuple[Booking, bool]:
        with self._lock:
            t = self._tick(now)
            done = self._db.execute(
                "SELECT * FROM bookings WHERE offer_id = ? AND owner = ?", (offer_id, owner)
            ).fetchone()
            if done is not None:
                return _booking(done, t), False
            return self._accept(offer_id, owner, t), True

    def reject(self, offer_id: str, owner: str, now: datetime) -> None:
        with self._lock:
            self._tick(now)
            with self._tx():
                gone = self._db.execute(
                    "DELETE FROM offers WHERE id = ? AND owner = ?", (offer_id, owner)
                ).rowcount
            if not gone:
                raise OfferNotFound(f"no offer {offer_id!r}")
            self._drop_offer(offer_id)

    def get(self, booking_id: str, owner: str, now: datetime) -> Booking:
        with self._lock:
            return _booking(self._booking_row(booking_id, owner), self._tick(now))

    def bookings(self, owner: str, now: datetime) -> Sequence[Booking]:
        with self._lock:
            t = self._tick(now)
            rows = self._db.execute(
                "SELECT * FROM bookings WHERE owner = ? ORDER BY start_us, id", (owner,)
            ).fetchall()
            return [_booking(row, t) for row in rows]

    def cancel(self, booking_id: str, owner: str, now: datetime) -> tuple[Booking, bool]:
        with self._lock:
            t = self._tick(now)
            with self._tx():
                row = self._booking_row(booking_id, owner)
                live = row["state"] == BookingState.BOOKED.value and row["end_us"] > t
                if live:
                    self._db.execute(
                        "UPDATE bookings SET state = ?, cancel_us = ? WHERE id = ?",
                        (BookingState.CANCELLED.value, t, booking_id),
                    )
            if live:
                self._index.remove(_Hold(row["start_us"], row["end_us"], {}, booking_id))
                row = self._booking_row(booking_id, owner)
            return _booking(row, t), live

    def peak(self, pool: str, slot: Slot, now: datetime) -> int:
        with self._lock:
            self._tick(now)
            lo, hi = _to_us(slot.start), _to_us(slot.end)
            if hi <= lo:
                return 0
            return _peak(self._index.overlapping(lo, hi), pool, lo, hi)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    # --- Reading the clock and the caps ---------------------------------------

    def _tick(self, now: datetime) -> int:
        """Advance the ledger's clock (never backwards) and drop expired offers
        from the index."""
        if self._closed:
            raise RuntimeError("the ledger is closed")
        self._clock = max(self._clock, _to_us(now))
        while self._expiry and self._expiry[0][0] <= self._clock:
            _, offer_id = heapq.heappop(self._expiry)
            self._drop_offer(offer_id)
        return self._clock

    def _offer_limit(self, placement: Placement) -> int:
        if not placement.hold:
            return placement.max_offers
        held = len(self._by_owner.get(placement.owner, ()))
        if held >= placement.max_outstanding:
            raise TooManyOffers(f"{held} outstanding offers (at most {placement.max_outstanding})")
        return min(placement.max_offers, placement.max_outstanding - held)

    # --- Slot search (used by _Search and earliest) -----------------------------

    def _find(
        self, need: dict[str, int], lo: int, hi: int, duration: int, extra: list[_Hold]
    ) -> int | None:
        """The earliest start in ``[lo, hi]`` where ``need`` fits for
        ``duration``. Looks in chunks that double, so a start found early
        costs little, and jumps over each blocked stretch."""
        if any(self._pools.get(p, 0) < n for p, n in need.items()):
            return None
        step = duration
        while lo <= hi:
            top = min(hi, lo + step)
            start = _first_fit(self._bad(need, lo, top + duration, extra), lo, duration)
            if start <= top:
                return start
            lo, step = max(start, top + 1), step * 2
        return None

    def _extend(
        self, need: dict[str, int], start: int, shortest: int, longest: int, extra: list[_Hold]
    ) -> int:
        """The end of the longest slot from ``start`` (which fits for
        ``shortest``) that still fits, up to ``longest``."""
        if longest <= shortest:
            return start + shortest
        bad = self._bad(need, start + shortest, start + longest, extra)
        return bad[0][0] if bad else start + longest

    def _fits(self, need: dict[str, int], hold: _Hold, extra: list[_Hold]) -> bool:
        return not self._bad(need, hold.start, hold.end, extra)

    def _bad(
        self, need: dict[str, int], lo: int, hi: int, extra: list[_Hold]
    ) -> list[tuple[int, int]]:
        """Where, within ``[lo, hi)`` (possibly running past ``hi``), adding
        ``need`` to what is held would exceed some pool; merged and sorted."""
        limits = {p: self._pools.get(p, 0) - n for p, n in need.items()}
        if any(limit < 0 for limit in limits.values()):
            return [(lo, hi)]  # more than the whole pool: nowhere (callers check first)
        events: dict[str, list[tuple[int, int]]] = {p: [] for p in limits}
        near = (h for h in extra if h.start < hi and h.end > lo)
        for hold in chain(self._index.overlapping(lo, hi), near):
            for pool, pool_events in events.items():
                amount = hold.need.get(pool)
                if amount:
                    pool_events.append((max(hold.start, lo), amount))
                    pool_events.append((hold.end, -amount))
        return _merge([iv for p, ev in events.items() for iv in _over(ev, limits[p])])

    def _next_end(self, after: int, bound: int, pools: set[str], extra: list[_Hold]) -> int:
        """The first end of a hold on ``pools`` in ``(after, bound]``, else
        ``bound``: the next instant at which a different slot may fit."""
        near = (h for h in extra if h.start < bound and h.end > after)
        ends = (
            h.end
            for h in chain(self._index.overlapping(after, bound), near)
            if h.end <= bound and not pools.isdisjoint(h.need)
        )
        return min(ends, default=bound)

    # --- Writing ------------------------------------------------------------------

    def _insert_offers(
        self, placement: Placement, found: list[tuple[Candidate, _Hold]], t: int
    ) -> None:
        rows = [_offer_row(placement, cand, hold) for cand, hold in found]
        with self._tx():
            self._db.executemany("INSERT INTO offers VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            if t >= self._next_purge:
                self._db.execute(
                    "DELETE FROM offers WHERE expire_us <= ?", (t - self._purge_after,)
                )
        if t >= self._next_purge:
            self._next_purge = t + _PURGE_EVERY_US
        for _, hold in found:
            self._add_offer(hold)

    def _accept(self, offer_id: str, owner: str, t: int) -> Booking:
        """Offer -> booking, siblings deleted, in one transaction; the index
        swaps the offer's hold for the booking's (same slot, same need)."""
        booking_id = uuid.uuid4().hex
        with self._tx():
            offer = self._db.execute(
                "SELECT * FROM offers WHERE id = ? AND owner = ?", (offer_id, owner)
            ).fetchone()
            if offer is None:
                raise OfferNotFound(f"no offer {offer_id!r}")
            if offer["expire_us"] <= t:
                raise OfferExpired(f"offer {offer_id!r} expired at {_from_us(offer['expire_us'])}")
            self._db.execute(
                "INSERT INTO bookings (id, offer_id, owner, plugin, servicetype, serviceinfo,"
                " start_us, end_us, need, state, create_us) SELECT ?, id, owner, plugin,"
                " servicetype, serviceinfo, start_us, end_us, need, ?, ? FROM offers WHERE id = ?",
                (booking_id, BookingState.BOOKED.value, t, offer_id),
            )
            siblings = [
                r[0]
                for r in self._db.execute(
                    "DELETE FROM offers WHERE owner = ? AND ask_id = ? RETURNING id",
                    (owner, offer["ask_id"]),
                )
            ]
        for sibling in siblings:
            self._drop_offer(sibling)
        need = json.loads(offer["need"])
        self._index.add(_Hold(offer["start_us"], offer["end_us"], need, booking_id))
        return _booking(self._booking_row(booking_id, owner), t)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction; the caller changes the index only after it.
        Each one also records the ledger's clock, so that a restart with a
        clock set back (NTP at boot, a VM snapshot) cannot revive offers
        that had expired and whose capacity went to others."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute(_SAVE_CLOCK, (self._clock,))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    # --- The index's bookkeeping ---------------------------------------------------

    def _add_offer(self, hold: _Hold) -> None:
        assert hold.expire is not None
        self._offers[hold.id] = hold
        self._by_owner.setdefault(hold.owner, set()).add(hold.id)
        heapq.heappush(self._expiry, (hold.expire, hold.id))
        self._index.add(hold)

    def _drop_offer(self, offer_id: str) -> None:
        """Forget an offer's hold (no-op when already gone: expiry is lazy)."""
        hold = self._offers.pop(offer_id, None)
        if hold is None:
            return
        self._index.remove(hold)
        mine = self._by_owner[hold.owner]
        mine.discard(offer_id)
        if not mine:
            del self._by_owner[hold.owner]

    def _load(self) -> None:
        """Rebuild the index from the file: BOOKED bookings and all offers
        (expired ones leave at the first call, when the clock is known). The
        clock resumes from the latest one recorded."""
        saved = self._db.execute("SELECT value FROM meta WHERE key = 'clock'").fetchone()
        if saved is not None:
            self._clock = max(self._clock, int(saved[0]))
        booked = self._db.execute(
            "SELECT id, start_us, end_us, need FROM bookings WHERE state = ?",
            (BookingState.BOOKED.value,),
        )
        holds = [_Hold(r[1], r[2], json.loads(r[3]), r[0]) for r in booked]
        offers = self._db.execute("SELECT id, start_us, end_us, need, owner, expire_us FROM offers")
        for r in offers:
            hold = _Hold(r[1], r[2], json.loads(r[3]), r[0], r[4], r[5])
            self._offers[hold.id] = hold
            self._by_owner.setdefault(hold.owner, set()).add(hold.id)
            self._expiry.append((r[5], r[0]))
            holds.append(hold)
        heapq.heapify(self._expiry)
        self._index.load(holds)

    def _booking_row(self, booking_id: str, owner: str) -> sqlite3.Row:
        row: sqlite3.Row | None = self._db.execute(
            "SELECT * FROM bookings WHERE id = ? AND owner = ?", (booking_id, owner)
        ).fetchone()
        if row is None:
            raise BookingNotFound(f"no booking {booking_id!r}")
        return row

    def _held(self, placement: Placement, cand: Candidate, hold: _Hold) -> HeldOffer:
        slot = Slot(_from_us(hold.start), _from_us(hold.end))
        if not placement.hold:
            return HeldOffer("", placement.ask_id, placement.owner, cand, slot, None)
        assert hold.expire is not None
        expire = _from_us(hold.expire)
        return HeldOffer(hold.id, placement.ask_id, placement.owner, cand, slot, expire)


class _Search:
    """One place() call's search: windows in order, rounds within a window
    (see the module's "Pairing" note), offers found so far held in ``extra``."""

    def __init__(self, ledger: SQLiteLedger, placement: Placement, now: int) -> None:
        schedule = placement.schedule
        self.ledger, self.placement, self.now = ledger, placement, now
        self.shortest, self.longest = _durations(schedule)
        self.needs = [_need(c.need) for c in placement.candidates]
        self.pools = {p for need in self.needs for p in need}
        self.expire = now + _span_us(placement.ttl)
        self.extra: list[_Hold] = []
        self.found: list[tuple[Candidate, _Hold]] = []

    def run(self, limit: int) -> list[tuple[Candidate, _Hold]]:
        horizon = self.now + self.ledger._horizon
        for window in sorted(self.placement.schedule.windows, key=lambda w: w.start):
            hi = min(_to_us(window.end), horizon)
            lo = self._resume(max(_to_us(window.start), self.now))
            while lo <= hi and len(self.found) < limit and self._round(lo, hi, limit):
                lo = self._resume(lo)
        return self.found

    def _resume(self, lo: int) -> int:
        """Where to search next: ``lo``, unless an offer already starts at or
        after it; then the first hold end after that offer's start (the
        offer itself ends, so there is one), never a start a microsecond on."""
        if not self.found or lo > self.found[-1][1].start:
            return lo
        last = self.found[-1][1]
        return self.ledger._next_end(last.start, last.end, self.pools, self.extra)

    def _round(self, lo: int, hi: int, limit: int) -> list[tuple[Candidate, _Hold]]:
        options = [(i, self._slot_for(i, lo, hi)) for i in range(len(self.needs))]
        starts = [h.start for _, h in options if h is not None]
        if not starts:
            return []
        first = min(starts)
        picked: list[tuple[Candidate, _Hold]] = []
        for i, hold in options:
            if hold is None or hold.start != first or len(self.found) >= limit:
                continue
            if picked and not self.ledger._fits(self.needs[i], hold, self.extra):
                continue
            picked.append((self.placement.candidates[i], hold))
            self.found.append(picked[-1])
            self.extra.append(hold)
        return picked

    def _slot_for(self, i: int, lo: int, hi: int) -> _Hold | None:
        """Candidate ``i``'s earliest fitting slot in ``[lo, hi]`` that its
        plugin does not refuse."""
        need, ledger = self.needs[i], self.ledger
        for _ in range(_REFUSALS):
            start = ledger._find(need, lo, hi, self.shortest, self.extra)
            if start is None:
                return None
            end = ledger._extend(need, start, self.shortest, self.longest, self.extra)
            if not self._refused(i, start, end):
                return self._hold(need, start, end)
            step = min(self.shortest, _REFUSAL_STEP_US)
            lo = min(
                ledger._next_end(start, start + self.shortest, set(need), self.extra), start + step
            )
        return None

    def _refused(self, i: int, start: int, end: int) -> bool:
        refuse: Callable[[Candidate, Slot], bool] | None = self.placement.refuse
        slot = Slot(_from_us(start), _from_us(end))
        return refuse is not None and refuse(self.placement.candidates[i], slot)

    def _hold(self, need: dict[str, int], start: int, end: int) -> _Hold:
        offer_id = uuid.uuid4().hex if self.placement.hold else ""
        return _Hold(start, end, need, offer_id, self.placement.owner, self.expire)


# --- Rows and validation ---------------------------------------------------------


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    """Open the file (exclusive, WAL, the given durability) and its schema."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=2.0)
    db.row_factory = sqlite3.Row
    try:
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        _migrate(db)
    except sqlite3.OperationalError as exc:
        db.close()
        if "locked" in str(exc):
            raise RuntimeError(f"ledger {path} is in use by another process") from exc
        raise
    except BaseException:
        db.close()
        raise
    return db


def _migrate(db: sqlite3.Connection) -> None:
    """Create the schema on first open. Always writes once, so the exclusive
    lock is taken now rather than at the first booking."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"ledger schema {version} is newer than {SCHEMA_VERSION}")
        for statement in _SCHEMA if version == 0 else _SCHEMA[-1:]:
            db.execute(statement)
        # Added after schema 1 shipped; harmless to repeat.
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _durations(schedule: Schedule) -> tuple[int, int]:
    shortest = _positive(schedule.min_duration, "min_duration")
    longest = shortest if schedule.max_duration is None else _span_us(schedule.max_duration)
    if longest < shortest:
        raise ValueError("max_duration is shorter than min_duration")
    return shortest, longest


def _positive(span: timedelta, what: str) -> int:
    us = _span_us(span)
    if us <= 0:
        raise ValueError(f"{what} must be positive, not {span}")
    return us


def _offer_row(placement: Placement, cand: Candidate, hold: _Hold) -> tuple[object, ...]:
    return (
        hold.id,
        placement.ask_id,
        placement.owner,
        cand.plugin,
        cand.servicetype,
        _dumps(cand.serviceinfo),
        hold.start,
        hold.end,
        _dumps(hold.need),
        hold.expire,
    )


def _booking(row: sqlite3.Row, now: int) -> Booking:
    state = BookingState(row["state"])
    if state is BookingState.BOOKED and row["end_us"] <= now:
        state = BookingState.FINISHED
    cancel = row["cancel_us"]
    return Booking(
        id=row["id"],
        offer_id=row["offer_id"],
        owner=row["owner"],
        plugin=row["plugin"],
        servicetype=row["servicetype"],
        serviceinfo=json.loads(row["serviceinfo"]),
        slot=Slot(_from_us(row["start_us"]), _from_us(row["end_us"])),
        need=json.loads(row["need"]),
        state=state,
        create_time=_from_us(row["create_us"]),
        cancel_time=None if cancel is None else _from_us(cancel),
        extra=json.loads(row["extra"]),
    )
