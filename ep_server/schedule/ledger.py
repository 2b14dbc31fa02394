"""Time slots, offers that hold resources, and bookings: plain objects and
the ledger interface. No gRPC, no SQL.

The site has *pools* of resources (``cores``, ``memory`` in bytes, and any
others the operator names, such as ``gpus``). A held offer or a booking
holds a *need* (pool name -> amount) over its slot ``[start, end)``. The
ledger's one invariant: **at no instant does the sum held by bookings and
outstanding (unexpired) offers exceed any pool.**

An offer is created by an ``Ask`` with a schedule and expires after a while
(``[schedule].offer_ttl``); accepting it turns it into a booking and releases
its siblings (the other offers made for the same ask). Because an offer
already holds its resources, accepting a valid, unexpired offer never fails
for lack of capacity.

Times are timezone-aware UTC datetimes throughout (a naive one is taken as
UTC); the ledger takes "now" as an argument, so tests control the clock.
Inside, a ledger works in integer microseconds since the Unix epoch and
finds slots with the pure :mod:`ep_server.schedule.calendar`; the helpers at
the end of this module convert both ways, the same for every backend.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ep_server.errors import FailedPrecondition, NotFound, Unavailable
from ep_server.model import Booking, BookingState, Schedule, Slot
from ep_server.schedule.calendar import Calendar, Found, Hold, occupancy

__all__ = [
    "PURGE_EVERY_US",
    "BookingNotFound",
    "Candidate",
    "HeldOffer",
    "Ledger",
    "LedgerUnavailable",
    "OccupancyStep",
    "OfferExpired",
    "OfferFate",
    "OfferNotFound",
    "OfferSet",
    "OfferSetNotFound",
    "Placement",
    "TooManyOffers",
    "booking_state",
    "event_of_level",
    "find_slots",
    "from_us",
    "held_offer",
    "occupancy_steps",
    "offer_limit",
    "pending_events",
    "span_us",
    "to_us",
]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A service a plugin offered for the task: what a slot offer will carry."""

    plugin: str
    servicetype: str
    serviceinfo: Mapping[str, Any]
    #: What it holds while offered or booked: pool name -> amount.
    need: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class Placement:
    """One request to find slots and hold them as offers."""

    owner: str
    ask_id: str
    candidates: tuple[Candidate, ...]
    schedule: Schedule
    #: At most this many offers, earliest first.
    max_offers: int = 3
    #: Offers expire this long after ``now``.
    ttl: timedelta = timedelta(minutes=5)
    #: An owner may hold at most this many unexpired offers at once.
    max_outstanding: int = 10
    #: False: find the slots but hold nothing (offers get no id).
    hold: bool = True
    #: Called per candidate slot; True refuses it (plugins' ep_slot hooks).
    #: A ledger may call it under its lock (SQLite does; PostgreSQL calls
    #: it outside any lock or transaction), so it must be quick and must
    #: not call the ledger.
    refuse: Callable[[Candidate, Slot], bool] | None = None


@dataclass(frozen=True, slots=True)
class HeldOffer:
    """An offer of a slot. ``id`` is empty when nothing was held."""

    id: str
    ask_id: str
    owner: str
    candidate: Candidate
    slot: Slot
    expire_time: datetime | None


@dataclass(frozen=True, slots=True)
class OccupancyStep:
    """How much of one pool is held from ``start`` to ``end``: ``booked`` by
    bookings, ``offered`` by outstanding offers. Whose, and which bookings
    or offers, it never says."""

    start: datetime
    end: datetime
    booked: int
    offered: int


@dataclass(frozen=True, slots=True)
class OfferSet:
    """What a door remembers of one Ask it answered as an offer set: who
    asked, until when its offers hold, its offers' ids (in the answer's
    order), and the document the door wrote, plain JSON that the ledger
    stores and never reads."""

    id: str
    owner: str
    create_time: datetime
    expire_time: datetime
    offer_ids: tuple[str, ...]
    document: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class OfferFate:
    """What has become of an offer, read now: the booking made of it, or
    whether it is still held (made, unexpired, neither accepted nor
    rejected nor released). Neither: it expired, was rejected, or was
    released when a sibling was accepted."""

    held: bool = False
    booking: Booking | None = None


class OfferNotFound(NotFound):
    """No such offer for this owner (never existed, rejected, or released)."""

    reason = "OFFER_NOT_FOUND"


class OfferExpired(FailedPrecondition):
    """The offer existed but has expired."""

    reason = "OFFER_EXPIRED"


class BookingNotFound(NotFound):
    """No such booking for this owner."""

    reason = "BOOKING_NOT_FOUND"


class OfferSetNotFound(NotFound):
    """No such offer set for this owner (never made, or purged)."""

    reason = "OFFERSET_NOT_FOUND"


class TooManyOffers(FailedPrecondition):
    """The owner already holds the maximum number of outstanding offers."""

    reason = "TOO_MANY_OFFERS"


class LedgerUnavailable(Unavailable):
    """The ledger's storage cannot be reached now (its database is down,
    restarting, or too busy to grant a lock in time); retrying can work.

    The message, sent to callers, says only that; :attr:`detail` says where
    and why, for the operator's log (never with a password).
    """

    reason = "LEDGER_UNAVAILABLE"

    def __init__(self, detail: str, retry_after: float = 1.0) -> None:
        super().__init__("the booking ledger is unavailable now; try again later", retry_after)
        self.detail = detail


#: How long after making a booking (or a cancellation) a ledger considers
#: its announcement overdue, unless configured (``[schedule]
#: announce_retry_after``): above the time an announcement may wait for its
#: plugin (60 s) plus a deadline.
ANNOUNCE_AFTER = timedelta(seconds=90)

#: The events plugins are told of, in the order they happen to a booking.
BOOKED, CANCELLED = "booked", "cancelled"
#: What the ledgers store of the announcements made of a booking: how far
#: they got (0: none, 1: booked, 2: cancelled too).
ANNOUNCED_LEVEL = {BOOKED: 1, CANCELLED: 2}


def event_of_level(level: int) -> str | None:
    """The latest event a stored announcement level says was announced."""
    return {1: BOOKED, 2: CANCELLED}.get(level)


@dataclass(frozen=True, slots=True)
class DueAnnouncement:
    """A booking with announcements still to make, in order."""

    booking: Booking
    events: tuple[str, ...]


def pending_events(announced: int, stored_state: int) -> tuple[str, ...]:
    """The events of a booking still to announce, given the level stored
    (see :data:`ANNOUNCED_LEVEL`) and its stored state (1 BOOKED, 2
    CANCELLED: also the level at which nothing is left)."""
    events = []
    if announced < ANNOUNCED_LEVEL[BOOKED]:
        events.append(BOOKED)
    if stored_state == BookingState.CANCELLED.value and announced < ANNOUNCED_LEVEL[CANCELLED]:
        events.append(CANCELLED)
    return tuple(events)


class Ledger(abc.ABC):
    """Where offers and bookings live.

    The contract every backend keeps (``tests/schedule/test_ledger_contract.py``
    runs it against each one):

    - The invariant holds under any concurrency: whatever calls run at once,
      from any thread (or, for a store shared by several EP processes, from
      any process). Each offer becomes at most one booking. A call changes
      the store wholly or not at all, and a call that returned has been
      committed (how durably is the backend's setting), so a crash at any
      instant loses no acknowledged booking.
    - The ledger's clock is the latest ``now`` any call gave it, and expiry
      reads that clock: once an offer has expired it stays released even if
      a later call (or a restart) passes an earlier ``now``; otherwise an
      offer whose capacity went to others could be accepted again.
    - Slots are found by the rules of :mod:`ep_server.schedule.calendar`
      (pairing of candidates, the longest slot that fits, the horizon).
    - Whether each booking and each cancellation was announced to its
      plugin is stored with it (:meth:`announced`), so that one the process
      that made it never announced (it died first) is found, by any process,
      ``announce_after`` later (:meth:`due_announcements`).

    Methods are synchronous and may block (disk, network); the server calls
    them from :attr:`threads` worker threads. A ``ValueError`` means a
    caller's bug (a negative need, a duration that is not positive); a
    :class:`LedgerUnavailable` that the storage cannot be reached now.
    """

    #: How many calls the server may run at once on this ledger: the size
    #: of its pool of worker threads.
    threads: int = 1

    @abc.abstractmethod
    def place(self, placement: Placement, now: datetime) -> list[HeldOffer]:
        """Find up to ``max_offers`` slots for the candidates, earliest
        first, and (when ``hold``) hold each as an offer, atomically: every
        offer fits alongside all bookings, unexpired offers and the offers
        placed before it. Returns [] when nothing fits. With ``hold``, at
        most ``max_outstanding`` minus the owner's unexpired offers are
        placed, so the cap is never exceeded.

        :raises TooManyOffers: when ``hold`` and the owner is at the cap.
        """

    @abc.abstractmethod
    def earliest(
        self, need: Mapping[str, int], duration: timedelta, after: datetime, now: datetime
    ) -> Slot | None:
        """The earliest slot of ``duration`` starting at or after ``after``
        (and ``now``) where ``need`` fits, if any within the ledger's
        horizon."""

    @abc.abstractmethod
    def accept(self, offer_id: str, owner: str, now: datetime) -> tuple[Booking, bool]:
        """Turn an offer into a booking and release its siblings (the other
        offers of its ask). Accepting an already-accepted offer returns the
        same booking, even after the offer's expiry or the booking's
        cancellation. The flag is True only for the call that created the
        booking, so the caller can announce it; until :meth:`announced`
        records that, the booking is due to be announced
        ``announce_after`` later (:meth:`due_announcements`).

        :raises OfferNotFound: no such offer for this owner (never made,
            rejected, released as a sibling, or purged long after expiry).
        :raises OfferExpired: the offer expired; expired offers are kept
            for a while (a backend's ``purge_after``) so that this is said
            rather than "not found".
        """

    @abc.abstractmethod
    def reject(self, offer_id: str, owner: str, now: datetime) -> None:
        """Release an offer; rejecting an expired one is allowed and
        forgets it. :raises OfferNotFound:"""

    @abc.abstractmethod
    def get(self, booking_id: str, owner: str, now: datetime) -> Booking:
        """One of the owner's bookings; a BOOKED one whose slot has ended
        reads as FINISHED. :raises BookingNotFound:"""

    @abc.abstractmethod
    def bookings(self, owner: str, now: datetime) -> Sequence[Booking]:
        """The owner's bookings, by slot start."""

    @abc.abstractmethod
    def cancel(self, booking_id: str, owner: str, now: datetime) -> tuple[Booking, bool]:
        """Cancel a booking and release what it holds. Idempotent: the flag
        is True only for the call that cancelled a live BOOKED booking (its
        cancellation is then due to be announced, as with :meth:`accept`);
        cancelling again, or cancelling a FINISHED booking (which changes
        nothing), returns the booking and False.

        :raises BookingNotFound:
        """

    @abc.abstractmethod
    def announced(self, done: Mapping[str, str]) -> None:
        """Record announcements made: booking id -> the latest event of it
        its plugin was told of (:data:`BOOKED` or :data:`CANCELLED`, the
        latter implying the former). An unknown id is ignored."""

    @abc.abstractmethod
    def announced_event(self, booking_id: str) -> str | None:
        """The latest event of a booking recorded as announced
        (:data:`BOOKED` or :data:`CANCELLED`), or None (none recorded, or no
        such booking)."""

    @abc.abstractmethod
    def due_announcements(self, now: datetime, limit: int) -> list[DueAnnouncement]:
        """Up to ``limit`` bookings whose booking or cancellation no process
        has recorded as announced within ``announce_after`` of making it
        (the process that made it died first, or its plugin stayed busy):
        the longest overdue, in the order the bookings were made, each with
        the events still to announce, in order.
        Each is claimed: no call, from any process, returns it again for
        another ``announce_after`` unless it is recorded as announced."""

    @abc.abstractmethod
    def save_offerset(self, offerset: OfferSet, now: datetime) -> None:
        """Remember an offer set, for its owner. Offer sets are purged with
        expired offers, ``purge_after`` past their expiry, unless one of
        their offers became a booking (then they stay, as bookings do).

        :raises ValueError: when the id is taken.
        """

    @abc.abstractmethod
    def offerset(self, offerset_id: str, owner: str, now: datetime) -> OfferSet:
        """One of the owner's offer sets. :raises OfferSetNotFound:"""

    @abc.abstractmethod
    def offerset_of(self, offer_id: str, owner: str, now: datetime) -> OfferSet:
        """The owner's offer set that holds the offer ``offer_id``.
        :raises OfferSetNotFound:"""

    @abc.abstractmethod
    def fates(self, offer_ids: Sequence[str], owner: str, now: datetime) -> dict[str, OfferFate]:
        """What has become of each of the owner's offers named: every id is
        in the result (another owner's offer, or an unknown id, reads as
        neither held nor booked)."""

    @abc.abstractmethod
    def peak(self, pool: str, slot: Slot, now: datetime) -> int:
        """The most held in ``pool`` at any instant of ``slot`` by bookings
        and unexpired offers (for checks and tests)."""

    @abc.abstractmethod
    def occupancy(
        self, pool: str, start: datetime, end: datetime, now: datetime
    ) -> list[OccupancyStep]:
        """How much of ``pool`` BOOKED bookings and unexpired offers hold,
        each counted apart, over ``[start, end)`` from the ledger's clock
        on: steps from ``start`` (or the clock, when later) to ``end``, none
        of them empty, no two neighbours alike. Nothing before the clock is
        held (bookings there have finished, offers expired); a cancelled
        booking holds nothing, nor does a rejected, accepted or released
        offer (its booking holds instead)."""

    @property
    @abc.abstractmethod
    def pools(self) -> Mapping[str, int]:
        """The pools' capacities the ledger keeps to: pool name -> amount."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Check that the storage can be reached now (for health checks).

        :raises LedgerUnavailable: when it cannot.
        """

    @abc.abstractmethod
    def describe(self) -> str:
        """Where the ledger lives, safe to log: never a password."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the storage; closing twice is harmless."""


# --- Ledger time: every backend converts the same way -----------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(when: datetime) -> int:
    """Microseconds since the Unix epoch; a naive datetime is taken as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _US


def from_us(us: int) -> datetime:
    """The UTC datetime ``us`` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=us)


def span_us(span: timedelta) -> int:
    """A duration in whole microseconds."""
    return span // _US


def find_slots(
    calendar: Calendar, placement: Placement, *, limit: int, now: int, horizon: int
) -> list[Found]:
    """The calendar's search for ``placement`` (at most ``limit`` slots;
    ``now`` and ``horizon`` in microseconds), with its ``refuse`` asked
    about each candidate slot as a :class:`Candidate` and a :class:`Slot`."""
    schedule, candidates, refuse = placement.schedule, placement.candidates, placement.refuse
    longest = schedule.max_duration
    return calendar.search(
        [(to_us(w.start), to_us(w.end)) for w in schedule.windows],
        span_us(schedule.min_duration),
        None if longest is None else span_us(longest),
        [c.need for c in candidates],
        limit=limit,
        now=now,
        horizon=horizon,
        refuse=None
        if refuse is None
        else (lambda i, start, end: refuse(candidates[i], Slot(from_us(start), from_us(end)))),
    )


def held_offer(
    placement: Placement, found: Found, offer_id: str = "", expire: int | None = None
) -> HeldOffer:
    """The offer of a slot the search found; without ``offer_id`` nothing
    is held."""
    slot = Slot(from_us(found.hold.start), from_us(found.hold.end))
    candidate = placement.candidates[found.candidate]
    expire_time = None if expire is None else from_us(expire)
    return HeldOffer(offer_id, placement.ask_id, placement.owner, candidate, slot, expire_time)


def occupancy_steps(
    booked: Iterable[Hold], offered: Iterable[Hold], pool: str, lo: int, hi: int
) -> list[OccupancyStep]:
    """The calendar's :func:`~ep_server.schedule.calendar.occupancy` of
    ``pool`` over ``[lo, hi)`` (microseconds), in steps of :class:`OccupancyStep`."""
    steps = occupancy(booked, offered, pool, lo, hi)
    return [OccupancyStep(from_us(s), from_us(e), b, o) for s, e, b, o in steps]


#: How often, in ledger time, expired offers are purged (in microseconds).
PURGE_EVERY_US = 10 * 60 * 1_000_000


def offer_limit(placement: Placement, outstanding: int) -> int:
    """How many offers a held placement may make when its owner already has
    ``outstanding`` ones.

    :raises TooManyOffers: when the owner may hold no more.
    """
    if outstanding >= placement.max_outstanding:
        raise TooManyOffers(
            f"{outstanding} outstanding offers (at most {placement.max_outstanding})"
        )
    return min(placement.max_offers, placement.max_outstanding - outstanding)


def booking_state(stored: int, end_us: int, now: int) -> BookingState:
    """A booking's state as read at ``now``: a BOOKED one whose slot has
    ended is FINISHED (no write marks it so)."""
    state = BookingState(stored)
    if state is BookingState.BOOKED and end_us <= now:
        return BookingState.FINISHED
    return state
