"""Bookings: accepting, rejecting, reading and cancelling offers and
bookings, over a :class:`~ep_server.schedule.ledger.Ledger`.

Every ledger call runs on the ledger's own threads (as many as the ledger
can take calls at once: one for SQLite, in order; one per connection for
PostgreSQL): the ledger may block on its disk or network, never the event
loop. Offers and bookings belong
to their owner (:func:`owner_of`); another caller's are NOT_FOUND, as the
ledger's errors say. Plugins hear of bookings and cancellations
(``ep_booked``, ``ep_cancelled``) after they are committed, once each: the
ledger says whether a call created or cancelled anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from ep_server.config import ScheduleSettings
from ep_server.errors import FieldViolation, InvalidArgument
from ep_server.model import Booking, HostInfo, Identity
from ep_server.plugins.caller import PluginCaller
from ep_server.plugins.registry import NotifyImpl, Registry
from ep_server.schedule.ledger import Ledger, LedgerUnavailable

__all__ = ["Bookings", "owner_of", "resolve_pools", "utcnow"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def utcnow() -> datetime:
    """The default clock: now, in UTC."""
    return datetime.now(UTC)


def owner_of(identity: Identity) -> str:
    """Who owns offers and bookings: the way a caller was identified and its
    subject, since a token's "alice" and a JWT's "alice" are different
    callers."""
    return f"{identity.method}:{identity.subject}"


def resolve_pools(settings: ScheduleSettings, host: HostInfo) -> dict[str, int]:
    """The pools' capacities, with "host" read from the host."""
    host_amounts = {"cores": host.cores, "memory": host.memory}
    return {
        name: host_amounts.get(name, 0) if amount == "host" else int(amount)
        for name, amount in settings.pools.items()
    }


class BookingMetrics(Protocol):
    """What bookings report (see :mod:`ep_server.metrics`)."""

    def bookings(self, event: str, n: int = 1) -> None: ...


class Bookings:
    """The booking RPCs' work, over one ledger on one thread."""

    def __init__(
        self,
        ledger: Ledger,
        registry: Registry,
        caller: PluginCaller,
        clock: Callable[[], datetime] = utcnow,
        metrics: BookingMetrics | None = None,
    ) -> None:
        self.ledger = ledger
        self.registry = registry
        self.caller = caller
        self.clock = clock
        self.metrics = metrics
        # One thread per call the ledger can take at once (SQLite: one, in
        # order; PostgreSQL: one per connection).
        self._thread = ThreadPoolExecutor(ledger.threads, thread_name_prefix="ep-ledger")
        # Health checks run beside the calls, never queued behind them.
        self._pinger = ThreadPoolExecutor(1, thread_name_prefix="ep-ledger-ping")
        self._notifications: set[asyncio.Task[None]] = set()
        self._closed = False

    # --- the ledger's thread -------------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue one ledger call on the ledger's thread."""
        return self._thread.submit(fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """One ledger call on the ledger's thread, awaited."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    async def reachable(self) -> bool:
        """Whether the ledger's storage answers now (for the health service)."""
        try:
            await asyncio.wrap_future(self._pinger.submit(self.ledger.ping))
        except LedgerUnavailable as exc:
            log.warning("the booking ledger is unreachable: %s", exc.detail)
            return False
        return True

    async def close(self) -> None:
        """Let pending notifications finish (briefly), then close the ledger.
        Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._notifications:
            await asyncio.wait(self._notifications, timeout=self.caller.deadline)
        await self.run(self.ledger.close)
        self._thread.shutdown(wait=True)
        self._pinger.shutdown(wait=False, cancel_futures=True)

    # --- the RPCs' work ----------------------------------------------------

    async def accept(self, offer_id: str, identity: Identity) -> Booking:
        """Book an offer; accepting it again returns the same booking."""
        booking, created = await self.run(
            self.ledger.accept, offer_id, owner_of(identity), self.clock()
        )
        if created:
            self._count("booked")
            self._announce(self.registry.ep_booked(booking.plugin), booking)
        return booking

    async def reject(self, offer_id: str, identity: Identity) -> None:
        """Release an offer."""
        await self.run(self.ledger.reject, offer_id, owner_of(identity), self.clock())
        self._count("rejected")

    async def get(self, booking_id: str, identity: Identity) -> Booking:
        """One of the caller's bookings."""
        return await self.run(self.ledger.get, booking_id, owner_of(identity), self.clock())

    async def page(
        self, identity: Identity, size: int, token: str = ""
    ) -> tuple[list[Booking], str]:
        """A page of the caller's bookings, by slot start: up to ``size``
        after the one ``token`` names, and the token of the next page (""
        at the end). A token is the id of the last booking on its page
        (bookings are never deleted, so it stays valid).

        :raises InvalidArgument: when ``token`` is not from this list.
        """
        bookings = list(await self.run(self.ledger.bookings, owner_of(identity), self.clock()))
        start = 0
        if token:
            ids = [b.id for b in bookings]
            if token not in ids:
                violation = FieldViolation("page_token", "is not from this list")
                raise InvalidArgument("ListBookingsRequest", [violation])
            start = ids.index(token) + 1
        page = bookings[start : start + size]
        more = start + size < len(bookings)
        return page, page[-1].id if more and page else ""

    async def cancel(self, booking_id: str, identity: Identity) -> Booking:
        """Cancel a booking. Cancelling twice, or a finished booking, changes
        nothing; plugins and metrics hear only of real cancellations."""
        booking, changed = await self.run(
            self.ledger.cancel, booking_id, owner_of(identity), self.clock()
        )
        if changed:
            self._count("cancelled")
            self._announce(self.registry.ep_cancelled(booking.plugin), booking)
        return booking

    # --- telling plugins -------------------------------------------------

    def _announce(self, impl: NotifyImpl | None, booking: Booking) -> None:
        """Call ``impl`` with ``booking`` in the background: the caller of
        the RPC already has its answer, and a failure is only logged."""
        if impl is None:
            return
        task = asyncio.ensure_future(self._deliver(impl, booking))
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

    async def _deliver(self, impl: NotifyImpl, booking: Booking) -> None:
        until = asyncio.get_running_loop().time() + self.caller.deadline
        [outcome] = await self.caller.gather([impl], until, booking)
        if not outcome.ok:
            log.warning(
                "%s of plugin %s for booking %s: %s",
                impl.hook, impl.plugin, booking.id, outcome.problem,
            )  # fmt: skip

    def _count(self, event: str) -> None:
        if self.metrics is not None:
            self.metrics.bookings(event)
