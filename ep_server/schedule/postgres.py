"""The booking ledger in PostgreSQL: one schedule shared by any number of
EP replicas, on any number of hosts.

Storage
    The tables of :mod:`ep_server.schedule.postgres_schema` (created when
    missing, if asked; a schema of another version is refused), in the
    schema the DSN's ``search_path`` names; the statements are in
    :mod:`ep_server.schedule.postgres_rows`. Nothing is kept in memory but
    the latest clock this process has seen: every replica reads the same
    rows.

Never overbooking
    A change that can add a hold (placing held offers, accepting) runs in a
    transaction that first takes the site's advisory lock
    (``pg_advisory_xact_lock``, keyed by database and schema), so no two
    such changes, from any replica, decide at once. Every write transaction
    a caller asks for (placing, accepting, rejecting, cancelling) then
    advances the clock row, whose row lock also orders it after every other
    such write; the purge, which only deletes expired offers, does not.
    Reads (``get``, ``bookings``, ``peak``, ``occupancy``, ``earliest``, a
    ``place`` that holds nothing) take no lock. Accepting, rejecting and
    cancelling are each one script, one round trip (see
    ``postgres_rows.ACCEPT_SCRIPT``), so they hold the lock and the clock
    row only for as long as the server takes to run them.

Placing
    The slot search runs outside any lock and transaction, over holds read
    from the tables as the calendar asks for them, and calls
    ``Placement.refuse`` (plugins' ``ep_slot`` hooks) as it goes, so a slow
    plugin holds up no other replica and no other call's lock. It does hold
    the connection (one of this process's ``connections``, each with its
    thread) for as long as the search takes, which the hooks' deadline
    bounds. Then, under the lock, each slot found is
    checked again against the holds committed by then and the slots kept
    before it, and those that still fit (within the owner's cap, counted
    again) are inserted. If none does, another replica took the room
    meanwhile: the search runs again, at most ``_ATTEMPTS`` times in all;
    then the answer is that nothing fits. A slot keeps the start the search
    gave it, even if other replicas have moved the clock on meanwhile (as a
    slot from a ledger that holds its lock while searching starts at the
    call's now, however long the search took).

One truth for all replicas
    The clock is the ``ep_state`` row ``clock``, advanced to the caller's
    ``now`` by every write and read by every call (a process also remembers
    the latest ``now`` it was given, so its reads never run back either):
    an offer expired through one replica is expired through all. Pools are
    stored by the first replica; one configured otherwise refuses to
    start. Whether an accept created a booking, or a cancel cancelled one,
    is the result of the one statement that did it. Expired offers are
    purged by whichever replica claims the purge first
    (``pg_try_advisory_xact_lock`` and the ``purge_due`` row), at most once
    every ten minutes of ledger time in all.

Connections
    :class:`~ep_server.schedule.postgres_pool.LedgerPool`: ``connections``
    of them (also :attr:`threads`); when the database cannot be reached, a
    call raises :class:`~ep_server.schedule.ledger.LedgerUnavailable`,
    never a wrong answer. A transaction commits wholly or not at all; if
    the connection breaks during its COMMIT the call cannot know which, and
    says unavailable: an accept asked again then returns the booking if it
    was made (with ``created`` False: that one is announced by a sweep,
    ``announce_after`` later, since no process recorded announcing it).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ep_server.model import Booking, Slot
from ep_server.schedule import postgres_rows as sql
from ep_server.schedule.calendar import Calendar, Found, checked_pools
from ep_server.schedule.ledger import (
    ANNOUNCE_AFTER,
    ANNOUNCED_LEVEL,
    PURGE_EVERY_US,
    BookingNotFound,
    DueAnnouncement,
    HeldOffer,
    Ledger,
    OccupancyStep,
    OfferExpired,
    OfferFate,
    OfferNotFound,
    OfferSet,
    OfferSetNotFound,
    Placement,
    TooManyOffers,
    event_of_level,
    find_slots,
    from_us,
    held_offer,
    occupancy_steps,
    offer_limit,
    pending_events,
    span_us,
    to_us,
)
from ep_server.schedule.postgres_pool import LedgerPool
from ep_server.schedule.postgres_schema import check_pools, lock_keys, require_current

__all__ = ["PostgresLedger"]

#: A place searches at most this many times when others take its slots first.
_ATTEMPTS = 3
#: A search first reads the holds of at least this long a stretch.
_SPAN_US = 24 * 3600 * 1_000_000
_NEVER = to_us(datetime.min.replace(tzinfo=UTC))


class PostgresLedger(Ledger):
    """The :class:`~ep_server.schedule.ledger.Ledger` in PostgreSQL.

    :param dsn: a libpq connection URI or string; the password from it,
        ``PGPASSWORD`` or a passfile; the tables in its ``search_path``.
    :param pools: pool name -> capacity; must equal the site's stored pools.
    :param horizon: slots start at most this long after now.
    :param purge_after: expired offers are deleted this long after expiry.
    :param connections: the pool's size, and :attr:`threads`.
    :param lock_timeout: seconds a statement may wait for a lock.
    :param idle_in_transaction_timeout: seconds a transaction may sit idle
        before the server ends it (a replica stopped mid-transaction).
    :param migrate: create the schema when there is none.
    :param timeout: seconds to connect, or to wait for a free connection.
    :raises LedgerUnavailable: when the database cannot be reached.
    :raises ConfigError: when the pools differ from the site's, naming each.
    :raises SchemaMismatch: when the schema is missing (and not
        ``migrate``), older or newer than this code's.
    """

    def __init__(
        self,
        dsn: str,
        pools: Mapping[str, int],
        horizon: timedelta = timedelta(days=366),
        purge_after: timedelta = timedelta(days=1),
        *,
        connections: int = 4,
        lock_timeout: float = 5.0,
        idle_in_transaction_timeout: float = 10.0,
        migrate: bool = True,
        timeout: float = 5.0,
        announce_after: timedelta = ANNOUNCE_AFTER,
    ) -> None:
        self._announce_after = span_us(announce_after)
        self._pools = checked_pools(pools)
        self._horizon, self._purge_after = span_us(horizon), span_us(purge_after)
        self._clock, self._clock_lock = _NEVER, threading.Lock()
        self._purge_hint = _NEVER
        # The connections whose statements for the scripts are prepared.
        self._prepared: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._prepared_lock = threading.Lock()
        self._closed = False
        self.threads = connections
        self._db = LedgerPool(
            dsn,
            size=connections,
            timeout=timeout,
            lock_timeout=lock_timeout,
            idle_timeout=idle_in_transaction_timeout,
        )
        try:
            with self._db.first() as conn:
                require_current(conn, create=migrate)
                keys = lock_keys(conn, "place", "purge", "pools")
                check_pools(conn, self._pools, keys[2])
        except BaseException:
            self._db.close()
            raise
        self._lock_key, self._purge_key = keys[:2]

    # --- Ledger ---------------------------------------------------------------

    def place(self, placement: Placement, now: datetime) -> list[HeldOffer]:
        with self._connection() as conn:
            if not placement.hold:
                t = self._read_clock(conn, now)
                found = self._search(conn, placement, placement.max_offers, t)
                return [held_offer(placement, f) for f in found]
            offers: list[HeldOffer] = []
            for _ in range(_ATTEMPTS):
                t = self._read_clock(conn, now)
                found = self._search(conn, placement, self._offer_limit(conn, placement, t), t)
                if not found:
                    return []
                offers, t = self._hold(conn, placement, found, now)
                if offers:
                    break
            if t >= self._purge_hint:
                self._purge_hint = t + PURGE_EVERY_US
                # The offers are committed: a purge that fails now is tried
                # at the next one due, and must not make this call fail.
                with contextlib.suppress(psycopg.Error):
                    self._purge(conn, t)
            return offers

    def earliest(
        self, need: Mapping[str, int], duration: timedelta, after: datetime, now: datetime
    ) -> Slot | None:
        with self._connection() as conn:
            t = self._read_clock(conn, now)
            dur = span_us(duration)
            calendar = Calendar(sql.SqlHolds(conn, t, _SPAN_US), self._pools)
            start = calendar.earliest(need, dur, to_us(after), now=t, horizon=self._horizon)
            return None if start is None else Slot(from_us(start), from_us(start + dur))

    def accept(self, offer_id: str, owner: str, now: datetime) -> tuple[Booking, bool]:
        want = self._seen(to_us(now))
        args = {
            "offer": offer_id,
            "owner": owner,
            "booking": uuid.uuid4().hex,
            "clock": want,
            "announce_after": self._announce_after,
            "lock": self._lock_key,
        }
        with self._connection() as conn:
            self._ready(conn)
            with _script(conn, sql.ACCEPT_SCRIPT, args) as results:
                _next(results)  # past the lock's result
                t = self._seen(_one(results))
                _next(results)
                row = results.fetchone()
            if row is not None:
                return sql.booking(row, t), True
            done = conn.execute(sql.FIND_BOOKING, (offer_id, owner)).fetchone()
            if done is not None:
                return sql.booking(done, t), False
            expired = conn.execute(sql.OFFER_EXPIRY, (offer_id, owner)).fetchone()
        if expired is None:
            raise OfferNotFound(f"no offer {offer_id!r}")
        raise OfferExpired(f"offer {offer_id!r} expired at {from_us(expired[0])}")

    def reject(self, offer_id: str, owner: str, now: datetime) -> None:
        want = self._seen(to_us(now))
        with self._connection() as conn:
            args = {"offer": offer_id, "owner": owner, "clock": want}
            with _script(conn, sql.REJECT_SCRIPT, args) as results:
                self._seen(_one(results))
                _next(results)
                gone = results.rowcount
        if not gone:
            raise OfferNotFound(f"no offer {offer_id!r}")

    def get(self, booking_id: str, owner: str, now: datetime) -> Booking:
        with self._connection() as conn:
            t = self._read_clock(conn, now)
            row = conn.execute(sql.BOOKING, (booking_id, owner)).fetchone()
        if row is None:
            raise BookingNotFound(f"no booking {booking_id!r}")
        return sql.booking(row, t)

    def bookings(self, owner: str, now: datetime) -> Sequence[Booking]:
        with self._connection() as conn:
            t = self._read_clock(conn, now)
            rows = conn.execute(sql.BOOKINGS, (owner,)).fetchall()
        return [sql.booking(row, t) for row in rows]

    def cancel(self, booking_id: str, owner: str, now: datetime) -> tuple[Booking, bool]:
        want = self._seen(to_us(now))
        args = {
            "booking": booking_id,
            "owner": owner,
            "clock": want,
            "announce_after": self._announce_after,
        }
        with self._connection() as conn:
            self._ready(conn)
            with _script(conn, sql.CANCEL_SCRIPT, args) as results:
                t = self._seen(_one(results))
                _next(results)
                row = results.fetchone()
            if row is not None:
                return sql.booking(row, t), True
            row = conn.execute(sql.BOOKING, (booking_id, owner)).fetchone()
        if row is None:
            raise BookingNotFound(f"no booking {booking_id!r}")
        return sql.booking(row, t), False

    def announced(self, done: Mapping[str, str]) -> None:
        ids = list(done)
        levels = [ANNOUNCED_LEVEL[done[i]] for i in ids]
        with self._connection() as conn:
            _script(conn, sql.ANNOUNCED, {"ids": ids, "levels": levels}).close()

    def announced_event(self, booking_id: str) -> str | None:
        with self._connection() as conn:
            row = conn.execute(sql.ANNOUNCED_OF, (booking_id,)).fetchone()
        return None if row is None else event_of_level(row[0])

    def due_announcements(self, now: datetime, limit: int) -> list[DueAnnouncement]:
        with self._connection() as conn:
            t = self._read_clock(conn, now)
            args = {"now": t, "limit": limit, "after": self._announce_after}
            rows = conn.execute(sql.DUE_ANNOUNCEMENTS, args).fetchall()
        rows.sort(key=lambda row: (row[10], row[0]))  # RETURNING has no order: by creation
        return [
            DueAnnouncement(sql.booking(row, t), pending_events(row[-1], row[9])) for row in rows
        ]

    def save_offerset(self, offerset: OfferSet, now: datetime) -> None:
        self._seen(to_us(now))
        row = (
            offerset.id,
            offerset.owner,
            to_us(offerset.create_time),
            to_us(offerset.expire_time),
            Jsonb(dict(offerset.document)),
        )
        links = [(o, offerset.id, i) for i, o in enumerate(offerset.offer_ids)]
        with self._connection() as conn:
            try:
                with conn.transaction():
                    conn.execute(sql.INSERT_OFFERSET, row)
                    conn.cursor().executemany(sql.INSERT_OFFERSET_OFFER, links)
            except psycopg.errors.UniqueViolation as exc:
                raise ValueError(f"offer set {offerset.id!r} or one of its offers exists") from exc

    def offerset(self, offerset_id: str, owner: str, now: datetime) -> OfferSet:
        with self._connection() as conn:
            self._read_clock(conn, now)
            row = conn.execute(sql.OFFERSET, (offerset_id, owner)).fetchone()
            return _offerset(conn, row, offerset_id)

    def offerset_of(self, offer_id: str, owner: str, now: datetime) -> OfferSet:
        with self._connection() as conn:
            self._read_clock(conn, now)
            row = conn.execute(sql.OFFERSET_OF, (offer_id, owner)).fetchone()
            return _offerset(conn, row, f"holding offer {offer_id}")

    def fates(self, offer_ids: Sequence[str], owner: str, now: datetime) -> dict[str, OfferFate]:
        ids = list(dict.fromkeys(offer_ids))
        with self._connection() as conn:
            t = self._read_clock(conn, now)
            booked = conn.execute(sql.BOOKINGS_OF_OFFERS, (owner, ids)).fetchall()
            held = conn.execute(sql.HELD_OFFERS, (owner, t, ids)).fetchall()
        fates = {i: OfferFate() for i in ids}
        fates.update({r[0]: OfferFate(held=True) for r in held})
        for r in booked:
            booking = sql.booking(r, t)
            fates[booking.offer_id] = OfferFate(booking=booking)
        return fates

    def peak(self, pool: str, slot: Slot, now: datetime) -> int:
        lo, hi = to_us(slot.start), to_us(slot.end)
        t = self._seen(to_us(now))  # HOLDS reads the stored clock when it is later
        with self._connection() as conn:
            if hi <= lo:
                return 0
            rows = conn.execute(sql.HOLDS, {"lo": lo, "hi": hi, "clock": t})
            return Calendar(sql.load_holds(rows), self._pools).peak(pool, lo, hi)

    def occupancy(
        self, pool: str, start: datetime, end: datetime, now: datetime
    ) -> list[OccupancyStep]:
        with self._connection() as conn:
            t = self._read_clock(conn, now)
            lo, hi = max(to_us(start), t), to_us(end)
            if hi <= lo:
                return []
            args = {"pool": pool, "lo": lo, "hi": hi, "clock": t}
            booked, offered = sql.occupancy_holds(conn.execute(sql.OCCUPANCY, args), pool)
        return occupancy_steps(booked, offered, pool, lo, hi)

    @property
    def pools(self) -> Mapping[str, int]:
        return dict(self._pools)

    def ping(self) -> None:
        """Reach the server on a connection of its own, never one of the
        pool's (those may all be busy with calls)."""
        self._db.reach()

    def describe(self) -> str:
        return self._db.where

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.close()

    def purge(self, now: datetime) -> int | None:
        """Delete the offers expired ``purge_after`` ago or longer, when a
        purge is due and no other replica is purging; how many went, or
        None when this call did not purge. ``place`` calls it when due."""
        with self._connection() as conn:
            return self._purge(conn, self._read_clock(conn, now))

    # --- Inside -------------------------------------------------------------------

    def _search(
        self, conn: psycopg.Connection[Any], placement: Placement, limit: int, t: int
    ) -> list[Found]:
        calendar = Calendar(sql.SqlHolds(conn, t, _SPAN_US), self._pools)
        return find_slots(calendar, placement, limit=limit, now=t, horizon=self._horizon)

    def _offer_limit(self, conn: psycopg.Connection[Any], placement: Placement, t: int) -> int:
        held = _one(conn.execute(sql.OUTSTANDING, {"owner": placement.owner, "clock": t}))
        return offer_limit(placement, held)

    def _hold(
        self, conn: psycopg.Connection[Any], placement: Placement, found: list[Found], now: datetime
    ) -> tuple[list[HeldOffer], int]:
        """Under the lock: keep the slots found that still fit, hold them as
        offers; returns them (maybe none) and the clock."""
        want = self._seen(to_us(now))
        span = {"lo": min(f.hold.start for f in found), "hi": max(f.hold.end for f in found)}
        with conn.pipeline(), conn.transaction():
            conn.execute(sql.LOCK, (self._lock_key,))
            clock = conn.execute(sql.ADVANCE_CLOCK, {"clock": want})
            count = conn.execute(sql.OUTSTANDING, {"owner": placement.owner, "clock": want})
            rows = conn.execute(sql.HOLDS, {**span, "clock": want})
            t = self._seen(_one(clock))
            room = placement.max_outstanding - _one(count)
            if room <= 0:
                raise TooManyOffers(f"{placement.max_outstanding} outstanding offers (the most)")
            calendar = Calendar(sql.load_holds(rows), self._pools)
            kept: list[Found] = []
            for f in found:
                hold, extra = f.hold, [k.hold for k in kept]
                if len(kept) < room and calendar.fits(hold.need, hold.start, hold.end, extra):
                    kept.append(f)
            expire = t + span_us(placement.ttl)
            offers = [held_offer(placement, f, uuid.uuid4().hex, expire) for f in kept]
            if offers:
                conn.cursor().executemany(
                    sql.INSERT_OFFER,
                    [sql.offer_row(o, f.hold, expire) for o, f in zip(offers, kept, strict=True)],
                )
        return offers, t

    def _purge(self, conn: psycopg.Connection[Any], t: int) -> int | None:
        with conn.transaction():
            if not _one(conn.execute(sql.TRY_LOCK, (self._purge_key,))):
                return None
            due = conn.execute(sql.PURGE_DUE, {"now": t, "every": PURGE_EVERY_US}).fetchone()
            if due is None:
                return None
            conn.execute(sql.PURGE_OFFERSETS, (t - self._purge_after,))
            return conn.execute(sql.PURGE, (t - self._purge_after,)).rowcount

    def _ready(self, conn: psycopg.Connection[Any]) -> None:
        """Prepare the statements the scripts EXECUTE, once per connection
        (a connection the pool replaced is a new one, prepared anew)."""
        with self._prepared_lock:
            if conn in self._prepared:
                return
        for statement in sql.PREPARE:
            # One prepared earlier on this connection by a call that then failed.
            with contextlib.suppress(psycopg.errors.DuplicatePreparedStatement):
                conn.execute(statement)
        with self._prepared_lock:
            self._prepared.add(conn)

    def _read_clock(self, conn: psycopg.Connection[Any], now: datetime) -> int:
        return self._seen(max(_one(conn.execute(sql.READ_CLOCK)), to_us(now)))

    def _seen(self, us: int) -> int:
        """The latest clock this process has seen, ``us`` included."""
        with self._clock_lock:
            self._clock = max(self._clock, us)
            return self._clock

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self._closed:
            raise RuntimeError("the ledger is closed")
        with self._db.connection() as conn:
            yield conn


def _offerset(conn: psycopg.Connection[Any], row: tuple[Any, ...] | None, what: str) -> OfferSet:
    if row is None:
        raise OfferSetNotFound(f"no offer set {what}")
    links = conn.execute(sql.OFFERSET_OFFERS, (row[0],)).fetchall()
    return OfferSet(
        id=row[0],
        owner=row[1],
        create_time=from_us(row[2]),
        expire_time=from_us(row[3]),
        offer_ids=tuple(r[0] for r in links),
        document=row[4],
    )


def _script(
    conn: psycopg.Connection[Any], script: str, args: Mapping[str, Any]
) -> psycopg.ClientCursor[Any]:
    """Run ``script`` (several statements, one implicit transaction; see
    :data:`~ep_server.schedule.postgres_rows.ACCEPT_SCRIPT`) in one round
    trip; the cursor is at the first statement's result."""
    results = psycopg.ClientCursor(conn)
    try:
        results.execute(script, args)
    except BaseException:
        results.close()
        raise
    return results


def _next(results: psycopg.ClientCursor[Any]) -> None:
    """On to a script's next statement's result, which must be there."""
    if not results.nextset():
        raise RuntimeError("a ledger script returned fewer results than it has statements")


def _one(cursor: psycopg.Cursor[Any] | psycopg.ClientCursor[Any]) -> int:
    row = cursor.fetchone()
    if row is None:
        raise RuntimeError("the ledger's state row is missing")
    return int(row[0])
