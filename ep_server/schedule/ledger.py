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

Times are timezone-aware UTC datetimes throughout; the ledger takes "now" as
an argument, so tests control the clock.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from ep_server.errors import FailedPrecondition, NotFound
from ep_server.model import Booking, Schedule, Slot

__all__ = [
    "BookingNotFound",
    "Candidate",
    "HeldOffer",
    "Ledger",
    "OfferExpired",
    "OfferNotFound",
    "Placement",
    "TooManyOffers",
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


class OfferNotFound(NotFound):
    """No such offer for this owner (never existed, rejected, or released)."""

    reason = "OFFER_NOT_FOUND"


class OfferExpired(FailedPrecondition):
    """The offer existed but has expired."""

    reason = "OFFER_EXPIRED"


class BookingNotFound(NotFound):
    """No such booking for this owner."""

    reason = "BOOKING_NOT_FOUND"


class TooManyOffers(FailedPrecondition):
    """The owner already holds the maximum number of outstanding offers."""

    reason = "TOO_MANY_OFFERS"


class Ledger(abc.ABC):
    """Where offers and bookings live. Implementations must keep the
    invariant under any concurrency: SQLite (:mod:`ep_server.schedule.sqlite`)
    serializes writers; a PostgreSQL one shared by several EP replicas would
    use SERIALIZABLE transactions or a lock per pool.

    Methods are synchronous and may block (disk); the server calls them from
    one worker thread.
    """

    @abc.abstractmethod
    def place(self, placement: Placement, now: datetime) -> list[HeldOffer]:
        """Find up to ``max_offers`` slots for the candidates, earliest
        first, and (when ``hold``) hold each as an offer, atomically: every
        offer fits alongside all bookings, unexpired offers and the offers
        placed before it. Returns [] when nothing fits.

        :raises TooManyOffers: when ``hold`` and the owner is at the cap.
        """

    @abc.abstractmethod
    def earliest(
        self, need: Mapping[str, int], duration: timedelta, after: datetime, now: datetime
    ) -> Slot | None:
        """The earliest slot of ``duration`` starting at or after ``after``
        where ``need`` fits, if any within the ledger's horizon."""

    @abc.abstractmethod
    def accept(self, offer_id: str, owner: str, now: datetime) -> tuple[Booking, bool]:
        """Turn an offer into a booking and release its siblings. Accepting
        an already-accepted offer returns the same booking.

        :raises OfferNotFound, OfferExpired:
        """

    @abc.abstractmethod
    def reject(self, offer_id: str, owner: str, now: datetime) -> None:
        """Release an offer. :raises OfferNotFound:"""

    @abc.abstractmethod
    def get(self, booking_id: str, owner: str, now: datetime) -> Booking:
        """One of the owner's bookings. :raises BookingNotFound:"""

    @abc.abstractmethod
    def bookings(self, owner: str, now: datetime) -> Sequence[Booking]:
        """The owner's bookings, by slot start."""

    @abc.abstractmethod
    def cancel(self, booking_id: str, owner: str, now: datetime) -> tuple[Booking, bool]:
        """Cancel a booking (idempotent) and release what it holds.
        :raises BookingNotFound:"""

    @abc.abstractmethod
    def peak(self, pool: str, slot: Slot, now: datetime) -> int:
        """The most held in ``pool`` at any instant of ``slot`` by bookings
        and unexpired offers (for checks and tests)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the storage."""
