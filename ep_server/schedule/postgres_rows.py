"""The PostgreSQL ledger's statements, its rows as plain objects, and the
holds the calendar reads from the tables.

Every statement names its tables unqualified: they are found through the
connection's ``search_path`` (see :mod:`ep_server.schedule.postgres_schema`).
``%(clock)s`` in a statement is the ledger's clock as that statement sees
it: the stored clock, or the caller's value when that is later, so that a
statement run after the clock was advanced in its transaction reads the
advanced one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from ep_server.model import Booking, Slot
from ep_server.schedule.calendar import Hold
from ep_server.schedule.holds import HoldIndex
from ep_server.schedule.ledger import HeldOffer, booking_state, from_us

__all__ = [
    "ACCEPT",
    "ACCEPT_SCRIPT",
    "ADVANCE_CLOCK",
    "ANNOUNCED",
    "ANNOUNCED_OF",
    "BOOKING",
    "BOOKINGS",
    "BOOKINGS_OF_OFFERS",
    "CANCEL",
    "CANCEL_SCRIPT",
    "DUE_ANNOUNCEMENTS",
    "FIND_BOOKING",
    "HELD_OFFERS",
    "HOLDS",
    "INSERT_OFFER",
    "INSERT_OFFERSET",
    "INSERT_OFFERSET_OFFER",
    "LOCK",
    "OCCUPANCY",
    "OFFERSET",
    "OFFERSET_OF",
    "OFFERSET_OFFERS",
    "OFFER_EXPIRY",
    "OUTSTANDING",
    "OVERBOOKED",
    "PREPARE",
    "PURGE",
    "PURGE_DUE",
    "PURGE_OFFERSETS",
    "READ_CLOCK",
    "REJECT",
    "REJECT_SCRIPT",
    "TRY_LOCK",
    "SqlHolds",
    "booking",
    "load_holds",
    "occupancy_holds",
    "offer_row",
]

_CLOCK = "greatest(%(clock)s, (SELECT value FROM ep_state WHERE key = 'clock'))"
_COLUMNS = (
    "id, offer_id, owner, plugin, servicetype, serviceinfo, start_us, end_us, need, state,"
    " create_us, cancel_us, extra"
)

LOCK = "SELECT pg_advisory_xact_lock(%s)"
TRY_LOCK = "SELECT pg_try_advisory_xact_lock(%s)"
READ_CLOCK = "SELECT value FROM ep_state WHERE key = 'clock'"
#: Every write transaction advances the clock first: the row lock it takes
#: orders the transaction after every other write to the ledger.
ADVANCE_CLOCK = (
    "UPDATE ep_state SET value = greatest(value, %(clock)s) WHERE key = 'clock' RETURNING value"
)

#: The holds over ``[lo, hi)``: BOOKED bookings and unexpired offers.
HOLDS = f"""
    SELECT id, start_us, end_us, need FROM ep_bookings
     WHERE state = 1 AND int8range(start_us, end_us) && int8range(%(lo)s, %(hi)s)
    UNION ALL
    SELECT id, start_us, end_us, need FROM ep_offers
     WHERE int8range(start_us, end_us) && int8range(%(lo)s, %(hi)s)
       AND expire_us > {_CLOCK}"""
#: What BOOKED bookings and unexpired offers hold of pool ``%(pool)s`` over
#: ``[lo, hi)``: (offered, start, end, amount), ``offered`` false for a
#: booking. Nothing of whose.
OCCUPANCY = f"""
    SELECT false, start_us, end_us, (need ->> %(pool)s)::bigint FROM ep_bookings
     WHERE state = 1 AND int8range(start_us, end_us) && int8range(%(lo)s, %(hi)s)
       AND need ? %(pool)s
    UNION ALL
    SELECT true, start_us, end_us, (need ->> %(pool)s)::bigint FROM ep_offers
     WHERE int8range(start_us, end_us) && int8range(%(lo)s, %(hi)s)
       AND need ? %(pool)s AND expire_us > {_CLOCK}"""
OUTSTANDING = f"SELECT count(*) FROM ep_offers WHERE owner = %(owner)s AND expire_us > {_CLOCK}"
INSERT_OFFER = "INSERT INTO ep_offers VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"

#: The offer, if unexpired, becomes a booking; it and its siblings go.
ACCEPT = f"""
    WITH offer AS (
        SELECT * FROM ep_offers
         WHERE id = %(offer)s AND owner = %(owner)s AND expire_us > {_CLOCK}
           FOR UPDATE),
    released AS (
        DELETE FROM ep_offers s USING offer
         WHERE s.owner = offer.owner AND s.ask_id = offer.ask_id)
    INSERT INTO ep_bookings (id, offer_id, owner, plugin, servicetype, serviceinfo,
                             start_us, end_us, need, state, create_us, announce_due_us)
    SELECT %(booking)s, id, owner, plugin, servicetype, serviceinfo, start_us, end_us, need,
           1, {_CLOCK}, {_CLOCK} + %(announce_after)s
      FROM offer
    RETURNING {_COLUMNS}"""
FIND_BOOKING = f"SELECT {_COLUMNS} FROM ep_bookings WHERE offer_id = %s AND owner = %s"
BOOKING = f"SELECT {_COLUMNS} FROM ep_bookings WHERE id = %s AND owner = %s"
BOOKINGS = f"SELECT {_COLUMNS} FROM ep_bookings WHERE owner = %s ORDER BY start_us, id"
#: A live BOOKED booking is cancelled; anything else is left as it is.
CANCEL = f"""
    UPDATE ep_bookings
       SET state = 2, cancel_us = {_CLOCK}, announce_due_us = {_CLOCK} + %(announce_after)s
     WHERE id = %(booking)s AND owner = %(owner)s AND state = 1 AND end_us > {_CLOCK}
    RETURNING {_COLUMNS}"""
REJECT = "DELETE FROM ep_offers WHERE id = %(offer)s AND owner = %(owner)s"

#: Accepting, rejecting and cancelling each send one *script*: several
#: statements in one simple query, which the server runs as one implicit
#: transaction (an error rolls all of them back). A transaction then holds
#: the site's lock and the clock row only while the server runs it, never
#: while this process gets round to sending its next statement (under load
#: its threads wait for the GIL). Sent with client-side binding
#: (:class:`psycopg.ClientCursor`, which allows several statements); each
#: statement's result is a result set of the cursor, in order.
#: A script's statements are planned as the server reaches them, so the
#: costly ones (:data:`ACCEPT`, :data:`CANCEL`: planning takes three times
#: as long as running them) are prepared once per connection (:data:`PREPARE`,
#: ``PostgresLedger._ready``) and the script EXECUTEs them.
#: Results: the lock's, the clock's, :data:`ACCEPT`'s.
ACCEPT_SCRIPT = (
    f"SELECT pg_advisory_xact_lock(%(lock)s); {ADVANCE_CLOCK};"
    " EXECUTE ep_accept(%(offer)s, %(owner)s, %(booking)s, %(clock)s, %(announce_after)s)"
)
#: Results: the clock's, :data:`REJECT`'s (its row count).
REJECT_SCRIPT = f"{ADVANCE_CLOCK}; {REJECT}"
#: Results: the clock's, :data:`CANCEL`'s.
CANCEL_SCRIPT = (
    f"{ADVANCE_CLOCK}; EXECUTE ep_cancel(%(booking)s, %(owner)s, %(clock)s, %(announce_after)s)"
)


def _prepare(name: str, types: str, statement: str, params: tuple[str, ...]) -> str:
    """``PREPARE name (types) AS statement``, its ``%(param)s`` as ``$n``."""
    for n, param in enumerate(params, 1):
        statement = statement.replace(f"%({param})s", f"${n}")
    return f"PREPARE {name} ({types}) AS {statement}"


#: The statements the scripts EXECUTE, prepared on each connection before
#: its first script.
PREPARE = (
    _prepare(
        "ep_accept", "text, text, text, bigint, bigint", ACCEPT,
        ("offer", "owner", "booking", "clock", "announce_after"),
    ),
    _prepare(
        "ep_cancel", "text, text, bigint, bigint", CANCEL,
        ("booking", "owner", "clock", "announce_after"),
    ),
)  # fmt: skip
#: Records announcements made: ``%(ids)s`` with the ``%(levels)s`` reached
#: (one per id); nothing is left to announce once the level reaches the
#: stored state (1 BOOKED, 2 CANCELLED). A script (see ACCEPT_SCRIPT): the
#: rows are locked first in id order, so two replicas' batches never
#: deadlock.
ANNOUNCED = """
    SELECT 1 FROM ep_bookings WHERE id = ANY(%(ids)s::text[]) ORDER BY id FOR UPDATE;
    UPDATE ep_bookings b
       SET announced = greatest(b.announced, d.level),
           announce_due_us = CASE WHEN greatest(b.announced, d.level) >= b.state
                                  THEN NULL ELSE b.announce_due_us END
      FROM unnest(%(ids)s::text[], %(levels)s::smallint[]) AS d (id, level)
     WHERE b.id = d.id"""
ANNOUNCED_OF = "SELECT announced FROM ep_bookings WHERE id = %s"
#: Claims up to ``%(limit)s`` overdue announcements for ``%(after)s`` more:
#: rows another replica is claiming at the same moment are skipped.
DUE_ANNOUNCEMENTS = f"""
    WITH due AS (
        SELECT id FROM ep_bookings
         WHERE announce_due_us <= %(now)s
         ORDER BY announce_due_us, id
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED)
    UPDATE ep_bookings b SET announce_due_us = %(now)s + %(after)s
      FROM due
     WHERE b.id = due.id
    RETURNING {", ".join("b." + c.strip() for c in _COLUMNS.split(","))}, b.announced"""
OFFER_EXPIRY = "SELECT expire_us FROM ep_offers WHERE id = %s AND owner = %s"

#: Claims the next purge (``%(every)s`` after now) when one is due.
PURGE_DUE = """
    UPDATE ep_state SET value = %(now)s + %(every)s
     WHERE key = 'purge_due' AND value <= %(now)s RETURNING value"""
PURGE = "DELETE FROM ep_offers WHERE expire_us <= %s"
#: Offer sets expired long enough ago none of whose offers became a
#: booking (their links go with them).
PURGE_OFFERSETS = """
    DELETE FROM ep_offersets o WHERE expire_us <= %s AND NOT EXISTS (
      SELECT FROM ep_offerset_offers s JOIN ep_bookings b ON b.offer_id = s.offer_id
       WHERE s.offerset_id = o.id)"""
INSERT_OFFERSET = "INSERT INTO ep_offersets VALUES (%s, %s, %s, %s, %s)"
INSERT_OFFERSET_OFFER = "INSERT INTO ep_offerset_offers VALUES (%s, %s, %s)"
OFFERSET = (
    "SELECT id, owner, create_us, expire_us, document FROM ep_offersets"
    " WHERE id = %s AND owner = %s"
)
OFFERSET_OF = """
    SELECT o.id, o.owner, o.create_us, o.expire_us, o.document
      FROM ep_offersets o JOIN ep_offerset_offers s ON s.offerset_id = o.id
     WHERE s.offer_id = %s AND o.owner = %s"""
OFFERSET_OFFERS = "SELECT offer_id FROM ep_offerset_offers WHERE offerset_id = %s ORDER BY position"
BOOKINGS_OF_OFFERS = f"SELECT {_COLUMNS} FROM ep_bookings WHERE owner = %s AND offer_id = ANY(%s)"
HELD_OFFERS = "SELECT id FROM ep_offers WHERE owner = %s AND expire_us > %s AND id = ANY(%s)"

#: Where a pool's holds exceed its capacity, as of ``%(clock)s``: (pool,
#: instant, held, capacity) at each instant the total changes to more than
#: the pool; a sweep over the holds' starts and ends. Never any rows.
OVERBOOKED = f"""
    WITH holds AS (
        SELECT start_us, end_us, need FROM ep_bookings WHERE state = 1
        UNION ALL
        SELECT start_us, end_us, need FROM ep_offers WHERE expire_us > {_CLOCK}),
    changes AS (
        SELECT p.name, p.capacity, t.at, sum(t.delta) AS delta
          FROM holds h JOIN ep_pools p ON h.need ? p.name
         CROSS JOIN LATERAL (VALUES (h.start_us, (h.need ->> p.name)::bigint),
                                    (h.end_us, -(h.need ->> p.name)::bigint)) AS t (at, delta)
         GROUP BY p.name, p.capacity, t.at),
    sweep AS (
        SELECT name, capacity, at, sum(delta) OVER (PARTITION BY name ORDER BY at) AS held
          FROM changes)
    SELECT name, at, held, capacity FROM sweep WHERE held > capacity ORDER BY name, at"""


def offer_row(offer: HeldOffer, hold: Hold, expire: int) -> tuple[object, ...]:
    """An ``ep_offers`` row, in column order."""
    cand = offer.candidate
    return (
        offer.id,
        offer.ask_id,
        offer.owner,
        cand.plugin,
        cand.servicetype,
        Jsonb(dict(cand.serviceinfo)),
        hold.start,
        hold.end,
        Jsonb(dict(hold.need)),
        expire,
    )


def booking(row: tuple[Any, ...], now: int) -> Booking:
    """A booking from its row (the columns of :data:`BOOKING`); a BOOKED
    one whose slot has ended at ``now`` reads as FINISHED."""
    (id_, offer_id, owner, plugin, servicetype, serviceinfo, start, end, need, state) = row[:10]
    create, cancel, extra = row[10:13]
    status = booking_state(state, end, now)
    return Booking(
        id=id_,
        offer_id=offer_id,
        owner=owner,
        plugin=plugin,
        servicetype=servicetype,
        serviceinfo=serviceinfo,
        slot=Slot(from_us(start), from_us(end)),
        need=need,
        state=status,
        create_time=from_us(create),
        cancel_time=None if cancel is None else from_us(cancel),
        extra=extra,
    )


class SqlHolds:
    """The holds (BOOKED bookings, offers unexpired at ``clock``) as the
    calendar asks for them: read from the tables the first time a stretch
    of time is asked about, then answered from a :class:`HoldIndex`.

    The first read covers at least ``span`` microseconds; a read further on
    covers at least as much again as is covered (searches walk forward, so
    a long walk costs a few reads, not one per step). Each read is its own
    statement: the holds are those committed when it ran, and a caller that
    must not act on a stale view re-reads under the ledger's lock.
    """

    def __init__(self, conn: psycopg.Connection[Any], clock: int, span: int) -> None:
        self.index = HoldIndex()
        self._conn, self._clock, self._span = conn, clock, span
        self._lo = self._hi = 0

    def overlapping(self, lo: int, hi: int) -> Iterator[Hold]:
        self._cover(lo, max(hi, lo + 1))
        return self.index.overlapping(lo, hi)

    def _cover(self, lo: int, hi: int) -> None:
        if self._lo == self._hi:
            self._lo, self._hi = lo, min(max(hi, lo + self._span), _LAST)
            self._read(self._lo, self._hi)
            return
        if lo < self._lo:
            self._read(lo, self._lo)
            self._lo = lo
        if hi > self._hi:
            top = min(max(hi, 2 * self._hi - self._lo), _LAST)
            self._read(self._hi, top)
            self._hi = top

    def _read(self, lo: int, hi: int) -> None:
        rows = self._conn.execute(HOLDS, {"lo": lo, "hi": hi, "clock": self._clock})
        self.index.load(_new(self.index, rows))


def load_holds(rows: Iterable[tuple[Any, ...]]) -> HoldIndex:
    """A :class:`HoldIndex` of ``(id, start, end, need)`` rows."""
    index = HoldIndex()
    index.load(_new(index, rows))
    return index


def occupancy_holds(
    rows: Iterable[tuple[bool, int, int, int]], pool: str
) -> tuple[list[Hold], list[Hold]]:
    """The bookings' and the offers' holds of ``pool`` from
    :data:`OCCUPANCY` rows."""
    booked: list[Hold] = []
    offered: list[Hold] = []
    for is_offer, start, end, amount in rows:
        (offered if is_offer else booked).append(Hold(start, end, {pool: int(amount)}))
    return booked, offered


#: Reads stop here (2**62 microseconds is some 146,000 years after 1970).
_LAST = 1 << 62


def _new(index: HoldIndex, rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[str, Hold]]:
    """The rows not already in ``index`` (a hold across the edge of two
    reads comes in both), as ``(id, Hold)``."""
    for key, start, end, need in rows:
        if key not in index:  # load() claims each key as it goes
            yield key, Hold(start, end, _amounts(need))


def _amounts(need: Mapping[str, Any]) -> dict[str, int]:
    return {pool: int(amount) for pool, amount in need.items()}
