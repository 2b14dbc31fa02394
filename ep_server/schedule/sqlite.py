"""The booking ledger in a SQLite file, with an in-memory index of holds.

Storage
    One file (:mod:`ep_server.schedule.sqlite_file`: its schema, and why it
    is opened in WAL mode with an exclusive lock). Every mutating call is
    one ``BEGIN IMMEDIATE`` transaction, so a crash in the middle of an
    accept leaves a whole booking or none.

Index
    Every hold (a BOOKED booking or an unexpired offer) is also kept in
    memory (:class:`~ep_server.schedule.holds.LiveHolds`), rebuilt from the
    file at open and changed only after a commit succeeds; every slot search
    is the :class:`~ep_server.schedule.calendar.Calendar`'s over that index.
    An expired offer leaves the index at the first call after it expires.

Time
    Times are stored as integer microseconds since the Unix epoch (UTC);
    naive datetimes are taken as UTC. The ledger's clock (the latest ``now``
    it was given) is saved with every write, in the ``meta`` table, and
    resumes from there when the file is opened again.

Threading contract
    The server calls every method from one worker thread (``threads`` is
    1: the calls would wait for one another anyway). The connection is
    opened with ``check_same_thread=False`` and every public method takes
    one lock, so calls from several threads are serialized and the
    invariant holds at any concurrency. ``Placement.refuse`` runs under that
    lock.

Purge
    Expired offers stay in the file (so accepting one says "expired" rather
    than "not found") until ``purge_after`` past their expiry; ``place``
    deletes those at most every ten minutes of ledger time, and with them
    the offer sets as long expired, unless one of their offers became a
    booking.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ep_server.model import Booking, BookingState, Slot
from ep_server.schedule.calendar import Calendar, Hold
from ep_server.schedule.holds import LiveHolds
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
    booking_state,
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
from ep_server.schedule.sqlite_file import SCHEMA_VERSION, connect

__all__ = ["SCHEMA_VERSION", "SQLiteLedger"]

_SAVE_CLOCK = (
    "INSERT INTO meta (key, value) VALUES ('clock', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)"
)


#: Offer sets expired long enough ago none of whose offers became a booking.
_PURGE_OFFERSETS = (
    "DELETE FROM offersets WHERE expire_us <= ? AND NOT EXISTS (SELECT 1"
    " FROM offerset_offers s JOIN bookings b ON b.offer_id = s.offer_id"
    " WHERE s.offerset_id = offersets.id)"
)
_PURGE_OFFERSET_LINKS = (
    "DELETE FROM offerset_offers WHERE offerset_id NOT IN (SELECT id FROM offersets)"
)


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True, separators=(",", ":"))


class SQLiteLedger(Ledger):
    """The :class:`~ep_server.schedule.ledger.Ledger` in one SQLite file.

    :param path: the file, created if missing; ``":memory:"`` for tests.
    :param pools: pool name -> capacity (``cores``, ``memory`` in bytes, ...).
    :param horizon: slots start at most this long after ``now``.
    :param synchronous: ``PRAGMA synchronous``: FULL (survives power loss)
        or NORMAL (survives a process crash; faster).
    :param purge_after: expired offers are deleted this long after expiry.
    """

    threads = 1

    def __init__(
        self,
        path: str | Path,
        pools: Mapping[str, int],
        horizon: timedelta = timedelta(days=366),
        synchronous: str = "FULL",
        purge_after: timedelta = timedelta(days=1),
        announce_after: timedelta = ANNOUNCE_AFTER,
    ) -> None:
        self._holds = LiveHolds()
        self._announce_after = span_us(announce_after)
        self._calendar = Calendar(self._holds.index, pools)
        self._horizon = span_us(horizon)
        self._purge_after = span_us(purge_after)
        self._lock = threading.Lock()
        self._clock = to_us(datetime.min.replace(tzinfo=UTC))
        self._next_purge = self._clock
        self._path = str(path)
        self._db = connect(self._path, synchronous)
        self._closed = False
        self._load()

    # --- Ledger ---------------------------------------------------------------

    def place(self, placement: Placement, now: datetime) -> list[HeldOffer]:
        with self._lock:
            t = self._tick(now)
            limit = self._offer_limit(placement)
            found = find_slots(self._calendar, placement, limit=limit, now=t, horizon=self._horizon)
            if not placement.hold:
                return [held_offer(placement, f) for f in found]
            expire = t + span_us(placement.ttl)
            offers = [(held_offer(placement, f, uuid.uuid4().hex, expire), f.hold) for f in found]
            if offers:
                self._insert_offers(offers, expire, t)
            return [offer for offer, _ in offers]

    def earliest(
        self, need: Mapping[str, int], duration: timedelta, after: datetime, now: datetime
    ) -> Slot | None:
        with self._lock:
            t = self._tick(now)
            dur = span_us(duration)
            start = self._calendar.earliest(need, dur, to_us(after), now=t, horizon=self._horizon)
            return None if start is None else Slot(from_us(start), from_us(start + dur))

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
            self._holds.drop_offer(offer_id)

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
                        "UPDATE bookings SET state = ?, cancel_us = ?, announce_due_us = ?"
                        " WHERE id = ?",
                        (BookingState.CANCELLED.value, t, t + self._announce_after, booking_id),
                    )
            if live:
                self._holds.remove_booking(booking_id)
                row = self._booking_row(booking_id, owner)
            return _booking(row, t), live

    def announced(self, done: Mapping[str, str]) -> None:
        with self._lock, self._tx():
            self._db.executemany(
                "UPDATE bookings SET announced = max(announced, :level), announce_due_us ="
                " CASE WHEN max(announced, :level) >= state THEN NULL ELSE announce_due_us END"
                " WHERE id = :id",
                [{"id": i, "level": ANNOUNCED_LEVEL[event]} for i, event in done.items()],
            )

    def announced_event(self, booking_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT announced FROM bookings WHERE id = ?", (booking_id,)
            ).fetchone()
        return None if row is None else event_of_level(row["announced"])

    def due_announcements(self, now: datetime, limit: int) -> list[DueAnnouncement]:
        with self._lock:
            t = self._tick(now)
            due = "SELECT * FROM bookings WHERE announce_due_us <= ?"
            if self._db.execute(f"{due} LIMIT 1", (t,)).fetchone() is None:
                return []  # the usual case: no write, so no fsync
            with self._tx():
                rows = self._db.execute(
                    f"{due} ORDER BY announce_due_us, id LIMIT ?", (t, limit)
                ).fetchall()
                self._db.executemany(
                    "UPDATE bookings SET announce_due_us = ? WHERE id = ?",
                    [(t + self._announce_after, row["id"]) for row in rows],
                )
            rows.sort(key=lambda row: (row["create_us"], row["id"]))
            return [
                DueAnnouncement(_booking(row, t), pending_events(row["announced"], row["state"]))
                for row in rows
            ]

    def save_offerset(self, offerset: OfferSet, now: datetime) -> None:
        with self._lock:
            self._tick(now)
            row = (
                offerset.id,
                offerset.owner,
                to_us(offerset.create_time),
                to_us(offerset.expire_time),
                _dumps(offerset.document),
            )
            links = [(o, offerset.id, i) for i, o in enumerate(offerset.offer_ids)]
            try:
                with self._tx():
                    self._db.execute("INSERT INTO offersets VALUES (?,?,?,?,?)", row)
                    self._db.executemany("INSERT INTO offerset_offers VALUES (?,?,?)", links)
            except sqlite3.IntegrityError as exc:
                raise ValueError(f"offer set {offerset.id!r} or one of its offers exists") from exc

    def offerset(self, offerset_id: str, owner: str, now: datetime) -> OfferSet:
        with self._lock:
            self._tick(now)
            row = self._db.execute(
                "SELECT * FROM offersets WHERE id = ? AND owner = ?", (offerset_id, owner)
            ).fetchone()
            return self._offerset(row, offerset_id)

    def offerset_of(self, offer_id: str, owner: str, now: datetime) -> OfferSet:
        with self._lock:
            self._tick(now)
            row = self._db.execute(
                "SELECT o.* FROM offersets o JOIN offerset_offers s ON s.offerset_id = o.id"
                " WHERE s.offer_id = ? AND o.owner = ?",
                (offer_id, owner),
            ).fetchone()
            return self._offerset(row, f"holding offer {offer_id}")

    def fates(self, offer_ids: Sequence[str], owner: str, now: datetime) -> dict[str, OfferFate]:
        ids = list(dict.fromkeys(offer_ids))
        marks = ",".join("?" * len(ids))
        with self._lock:
            t = self._tick(now)
            booked = self._db.execute(
                f"SELECT * FROM bookings WHERE owner = ? AND offer_id IN ({marks})", (owner, *ids)
            ).fetchall()
            held = self._db.execute(
                f"SELECT id FROM offers WHERE owner = ? AND expire_us > ? AND id IN ({marks})",
                (owner, t, *ids),
            ).fetchall()
            fates = {i: OfferFate() for i in ids}
            fates.update({r[0]: OfferFate(held=True) for r in held})
            fates.update({r["offer_id"]: OfferFate(booking=_booking(r, t)) for r in booked})
            return fates

    def _offerset(self, row: sqlite3.Row | None, what: str) -> OfferSet:
        if row is None:
            raise OfferSetNotFound(f"no offer set {what}")
        links = self._db.execute(
            "SELECT offer_id FROM offerset_offers WHERE offerset_id = ? ORDER BY position",
            (row["id"],),
        ).fetchall()
        return OfferSet(
            id=row["id"],
            owner=row["owner"],
            create_time=from_us(row["create_us"]),
            expire_time=from_us(row["expire_us"]),
            offer_ids=tuple(r[0] for r in links),
            document=json.loads(row["document"]),
        )

    def peak(self, pool: str, slot: Slot, now: datetime) -> int:
        with self._lock:
            self._tick(now)
            return self._calendar.peak(pool, to_us(slot.start), to_us(slot.end))

    def occupancy(
        self, pool: str, start: datetime, end: datetime, now: datetime
    ) -> list[OccupancyStep]:
        with self._lock:
            lo, hi = max(to_us(start), self._tick(now)), to_us(end)
            booked, offered = self._holds.overlapping(lo, hi)
            return occupancy_steps(booked, offered, pool, lo, hi)

    @property
    def pools(self) -> Mapping[str, int]:
        return dict(self._calendar.pools)

    def ping(self) -> None:
        """A file the process holds open: nothing to reach."""

    def describe(self) -> str:
        return self._path

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
        self._clock = max(self._clock, to_us(now))
        self._holds.expire(self._clock)
        return self._clock

    def _offer_limit(self, placement: Placement) -> int:
        if not placement.hold:
            return placement.max_offers
        return offer_limit(placement, self._holds.outstanding(placement.owner))

    # --- Writing ------------------------------------------------------------------

    def _insert_offers(self, offers: list[tuple[HeldOffer, Hold]], expire: int, t: int) -> None:
        rows = [_offer_row(offer, hold, expire) for offer, hold in offers]
        with self._tx():
            self._db.executemany("INSERT INTO offers VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            if t >= self._next_purge:
                self._db.execute(
                    "DELETE FROM offers WHERE expire_us <= ?", (t - self._purge_after,)
                )
                self._db.execute(_PURGE_OFFERSETS, (t - self._purge_after,))
                self._db.execute(_PURGE_OFFERSET_LINKS)
        if t >= self._next_purge:
            self._next_purge = t + PURGE_EVERY_US
        for offer, hold in offers:
            self._holds.add_offer(offer.id, offer.owner, expire, hold)

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
                raise OfferExpired(f"offer {offer_id!r} expired at {from_us(offer['expire_us'])}")
            self._db.execute(
                "INSERT INTO bookings (id, offer_id, owner, plugin, servicetype, serviceinfo,"
                " start_us, end_us, need, state, create_us, announce_due_us) SELECT ?, id, owner,"
                " plugin, servicetype, serviceinfo, start_us, end_us, need, ?, ?, ?"
                " FROM offers WHERE id = ?",
                (booking_id, BookingState.BOOKED.value, t, t + self._announce_after, offer_id),
            )
            siblings = [
                r[0]
                for r in self._db.execute(
                    "DELETE FROM offers WHERE owner = ? AND ask_id = ? RETURNING id",
                    (owner, offer["ask_id"]),
                )
            ]
        for sibling in siblings:
            self._holds.drop_offer(sibling)
        need = json.loads(offer["need"])
        self._holds.add_booking(booking_id, Hold(offer["start_us"], offer["end_us"], need))
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
        offers = self._db.execute("SELECT id, start_us, end_us, need, owner, expire_us FROM offers")
        self._holds.load(
            ((r[0], Hold(r[1], r[2], json.loads(r[3]))) for r in booked),
            ((r[0], r[4], r[5], Hold(r[1], r[2], json.loads(r[3]))) for r in offers),
        )

    def _booking_row(self, booking_id: str, owner: str) -> sqlite3.Row:
        row: sqlite3.Row | None = self._db.execute(
            "SELECT * FROM bookings WHERE id = ? AND owner = ?", (booking_id, owner)
        ).fetchone()
        if row is None:
            raise BookingNotFound(f"no booking {booking_id!r}")
        return row


# --- Rows and conversions ---------------------------------------------------------


def _offer_row(offer: HeldOffer, hold: Hold, expire: int) -> tuple[object, ...]:
    cand = offer.candidate
    return (
        offer.id,
        offer.ask_id,
        offer.owner,
        cand.plugin,
        cand.servicetype,
        _dumps(cand.serviceinfo),
        hold.start,
        hold.end,
        _dumps(hold.need),
        expire,
    )


def _booking(row: sqlite3.Row, now: int) -> Booking:
    state = booking_state(row["state"], row["end_us"], now)
    cancel = row["cancel_us"]
    return Booking(
        id=row["id"],
        offer_id=row["offer_id"],
        owner=row["owner"],
        plugin=row["plugin"],
        servicetype=row["servicetype"],
        serviceinfo=json.loads(row["serviceinfo"]),
        slot=Slot(from_us(row["start_us"]), from_us(row["end_us"])),
        need=json.loads(row["need"]),
        state=state,
        create_time=from_us(row["create_us"]),
        cancel_time=None if cancel is None else from_us(cancel),
        extra=json.loads(row["extra"]),
    )
