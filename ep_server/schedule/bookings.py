"""Bookings: accepting, rejecting, reading and cancelling offers and
bookings, over a :class:`~ep_server.schedule.ledger.Ledger`.

Every ledger call runs on the ledger's own threads (as many as the ledger
can take calls at once: one for SQLite, in order; one per connection for
PostgreSQL): the ledger may block on its disk or network, never the event
loop. Offers and bookings belong
to their owner (:func:`owner_of`); another caller's are NOT_FOUND, as the
ledger's errors say.

Plugins hear of bookings and cancellations (``ep_booked``, ``ep_cancelled``)
after they are committed: the ledger says whether a call created or
cancelled anything, and that call announces it, in the background (the
caller already has its answer), then records in the ledger that it did
(batched: one write for the announcements of a fifth of a second). An
announcement is not dropped when its plugin holds its whole share of the
plugin threads: it waits for a thread (up to ``patience``). One that was
never recorded (the process died first, or the plugin stayed busy) is due
``[schedule] announce_retry_after`` later, and :meth:`Bookings.sweep`, run
periodically by every process, announces it from whichever process claims
it first. So every booking is announced at least once: twice when a
process dies between announcing and recording, or when an announcement
takes longer than ``announce_retry_after``.

A booking's cancellation is announced only after its booking was: after
``ep_booked`` returned (or ran past the plugin deadline) in this process,
or once the ledger has recorded it announced by any process. Until then
the cancellation is left to the sweep, which announces both, in order (a
cancellation made through another replica moments after the booking, or
of a booking whose announcement failed, is announced up to
``announce_retry_after`` later).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from ep_server.config import ScheduleSettings
from ep_server.errors import FieldViolation, InvalidArgument
from ep_server.model import Booking, HostInfo, Identity
from ep_server.plugins.caller import PluginCaller, Status
from ep_server.plugins.registry import NotifyImpl, Registry
from ep_server.schedule.ledger import (
    ANNOUNCED_LEVEL,
    BOOKED,
    CANCELLED,
    Ledger,
    LedgerUnavailable,
    OccupancyStep,
    OfferFate,
    OfferSet,
)

__all__ = ["Bookings", "Occupancy", "owner_of", "resolve_pools", "utcnow"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds an announcement waits for its plugin to have a thread free
#: before it is left to a later sweep (and logged, naming the booking).
ANNOUNCE_PATIENCE = 60.0
#: Seconds between writes of the announcements made meanwhile.
RECORD_EVERY = 0.2
#: Bookings announced by one sweep, at most.
SWEEP_LIMIT = 100
#: The longest pause between two tries of a waiting announcement.
_MAX_PAUSE = 0.5


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


@dataclass(frozen=True, slots=True)
class Occupancy:
    """How much of each pool bookings and outstanding offers hold over
    ``[start, end)``: pool name -> its steps (see
    :meth:`~ep_server.schedule.ledger.Ledger.occupancy`). Amounts only:
    never whose, never an id."""

    start: datetime
    end: datetime
    pools: Mapping[str, Sequence[OccupancyStep]]


class BookingMetrics(Protocol):
    """What bookings report (see :mod:`ep_server.metrics`)."""

    def bookings(self, event: str, n: int = 1) -> None: ...


class Bookings:
    """The booking RPCs' work, over one ledger on its own threads."""

    def __init__(
        self,
        ledger: Ledger,
        registry: Registry,
        caller: PluginCaller,
        clock: Callable[[], datetime] = utcnow,
        metrics: BookingMetrics | None = None,
        patience: float = ANNOUNCE_PATIENCE,
    ) -> None:
        self.ledger = ledger
        self.patience = patience
        self.registry = registry
        self.caller = caller
        self.clock = clock
        self.metrics = metrics
        # One thread per call the ledger can take at once (SQLite: one, in
        # order; PostgreSQL: one per connection).
        self._thread = ThreadPoolExecutor(ledger.threads, thread_name_prefix="ep-ledger")
        # Health checks run beside the calls, never queued behind them.
        self._pinger = ThreadPoolExecutor(1, thread_name_prefix="ep-ledger-ping")
        # Changes and announcements running on their own (see _whole and
        # _announce); close() lets them finish, briefly.
        self._background: set[asyncio.Task[Any]] = set()
        # The latest announcement of each booking, while it runs: the next
        # one of the same booking waits for it.
        self._latest: dict[str, asyncio.Task[bool]] = {}
        # Announcements made and not yet recorded in the ledger: booking id
        # -> the latest event announced; and the task that records them.
        self._made: dict[str, str] = {}
        self._writing: dict[str, str] = {}  # the batch being recorded now
        self._recorder: asyncio.Task[None] | None = None
        self._closed = False
        self._reachable = True  # what the last reachable() found

    # --- the ledger's thread -------------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue one ledger call on the ledger's threads."""
        return self._thread.submit(fn, *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """One ledger call on the ledger's threads, awaited."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    async def reachable(self) -> bool:
        """Whether the ledger's storage answers now (for the health service)."""
        try:
            await asyncio.wrap_future(self._pinger.submit(self.ledger.ping))
        except LedgerUnavailable as exc:
            if self._reachable:  # once per outage, not once per check
                log.warning("the booking ledger is unreachable: %s", exc.detail)
            self._reachable = False
            return False
        self._reachable = True
        return True

    async def close(self) -> None:
        """Let changes and announcements still running finish (briefly),
        then close the ledger.
        Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        until = loop.time() + self.caller.deadline
        # Announcements started meanwhile (by a change that ended) count too.
        while self._background and loop.time() < until:
            await asyncio.wait(set(self._background), timeout=until - loop.time())
        if self._background:
            log.error(
                "closing with %d ledger change(s) or announcement(s) to plugins unfinished",
                len(self._background),
            )
            for task in list(self._background):
                task.cancel()
        if self._recorder is not None:  # a write under way ends first
            await asyncio.wait([self._recorder], timeout=1.0)
            self._recorder.cancel()
            await asyncio.wait([self._recorder])  # a batch cut short goes back to _made
        await self._record_made()
        await self.run(self.ledger.close)
        # Off the event loop: a call stuck in its database must not stop the
        # server's other work while it winds down.
        await asyncio.to_thread(self._thread.shutdown, wait=True)
        self._pinger.shutdown(wait=False, cancel_futures=True)

    # --- the RPCs' work ----------------------------------------------------

    async def accept(self, offer_id: str, identity: Identity) -> Booking:
        """Book an offer; accepting it again returns the same booking."""
        return await self._whole(self._accept(offer_id, owner_of(identity)))

    async def _accept(self, offer_id: str, owner: str) -> Booking:
        booking, created = await self.run(self.ledger.accept, offer_id, owner, self.clock())
        if created:
            self._count("booked")
            self._announce(BOOKED, booking)
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
        return await self._whole(self._cancel(booking_id, owner_of(identity)))

    async def _cancel(self, booking_id: str, owner: str) -> Booking:
        booking, changed = await self.run(self.ledger.cancel, booking_id, owner, self.clock())
        if changed:
            self._count("cancelled")
            self._announce(CANCELLED, booking)
        return booking

    # --- offer sets (the HTTP door's ExecutionBroker routes) -------------

    async def save_offerset(self, offerset: OfferSet) -> None:
        """Remember an offer set for its owner."""
        await self.run(self.ledger.save_offerset, offerset, self.clock())

    async def offerset(self, offerset_id: str, identity: Identity) -> OfferSet:
        """One of the caller's offer sets."""
        return await self.run(self.ledger.offerset, offerset_id, owner_of(identity), self.clock())

    async def offerset_of(self, offer_id: str, identity: Identity) -> OfferSet:
        """The caller's offer set that holds the offer ``offer_id``."""
        return await self.run(self.ledger.offerset_of, offer_id, owner_of(identity), self.clock())

    async def fates(self, offer_ids: Sequence[str], identity: Identity) -> dict[str, OfferFate]:
        """What has become of each of the caller's offers named."""
        return await self.run(self.ledger.fates, offer_ids, owner_of(identity), self.clock())

    async def occupancy(self, days: int = 7) -> Occupancy:
        """How much of every pool is booked and offered from now to ``days``
        days on, read for all pools at once (on as many ledger threads as
        there are)."""
        start = self.clock()
        end = start + timedelta(days=days)
        pools = sorted(self.ledger.pools)
        steps = await asyncio.gather(
            *(self.run(self.ledger.occupancy, pool, start, end, start) for pool in pools)
        )
        return Occupancy(start, end, dict(zip(pools, steps, strict=True)))

    async def _whole(self, change: Coroutine[Any, Any, Booking]) -> Booking:
        """Run ``change`` to its end even if the caller leaves meanwhile (its
        RPC cancelled): the ledger may have committed it, and only this call
        knows at once that it did, so it announces it now and counts it (a
        sweep would announce it only ``announce_retry_after`` later)."""
        task = asyncio.ensure_future(change)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return await asyncio.shield(task)

    # --- telling plugins -------------------------------------------------

    async def sweep(self) -> int:
        """Announce what is due: bookings and cancellations that no process
        recorded as announced in time (see the module's docstring), claimed
        from the ledger; how many bookings were claimed."""
        due = await self.run(self.ledger.due_announcements, self.clock(), SWEEP_LIMIT)
        if due:
            log.warning(
                "announcing %d booking(s) or cancellation(s) that no process announced in time",
                len(due),
            )
        for item in due:
            for event in item.events:
                # A cancellation alone: the ledger recorded its booking announced.
                self._announce(event, item.booking, booked=BOOKED not in item.events)
        return len(due)

    def _announce(self, event: str, booking: Booking, booked: bool = False) -> None:
        """Tell ``booking``'s plugin of ``event`` in the background, after any
        earlier announcement of the same booking. ``booked``: the booking is
        known to have been announced (a cancellation needs that)."""
        hook = self.registry.ep_booked if event == BOOKED else self.registry.ep_cancelled
        after = self._latest.get(booking.id)
        task = asyncio.ensure_future(
            self._deliver(event, hook(booking.plugin), booking, after, booked)
        )
        self._latest[booking.id] = task
        self._background.add(task)
        task.add_done_callback(functools.partial(self._delivered, booking.id))

    def _delivered(self, booking_id: str, task: asyncio.Task[bool]) -> None:
        self._background.discard(task)
        if self._latest.get(booking_id) is task:
            del self._latest[booking_id]

    async def _deliver(
        self,
        event: str,
        impl: NotifyImpl | None,
        booking: Booking,
        after: asyncio.Task[bool] | None,
        booked: bool,
    ) -> bool:
        """One announcement: waits for ``after`` (the booking's previous one
        in this process), calls the hook (a plugin without it has nothing to
        hear), and records that it was made; whether it was. A cancellation
        whose booking was not announced is left to a sweep, which announces
        both in order."""
        if after is not None:
            await asyncio.wait([after])
            booked = not after.cancelled() and after.exception() is None and after.result()
        elif event == CANCELLED and not booked:
            booked = await self._booked_announced(booking.id)
        if event == CANCELLED and not booked:
            log.info(
                "the cancellation of booking %s is left to a later sweep: its booking"
                " is not recorded as announced yet",
                booking.id,
            )
            return False
        if impl is None or await self._call(impl, booking):
            self._record(booking.id, event)
            return True
        return False

    async def _booked_announced(self, booking_id: str) -> bool:
        """Whether ``booking_id``'s booking is known to have been announced:
        by this process (not yet recorded), or as the ledger records."""
        if booking_id in self._made or booking_id in self._writing:
            return True
        try:
            return await self.run(self.ledger.announced_event, booking_id) is not None
        except Exception as exc:  # unknown: the sweep decides later
            log.warning("reading whether booking %s was announced failed: %s", booking_id, exc)
            return False

    async def _call(self, impl: NotifyImpl, booking: Booking) -> bool:
        """Call the hook, again while its plugin is busy (up to
        :attr:`patience`); whether it was called. A hook that raised or ran
        late was called: it is logged, not called again."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.patience
        pause = 0.01
        while True:
            [outcome] = await self.caller.gather(
                [impl], loop.time() + self.caller.deadline, booking
            )
            if outcome.status is not Status.BUSY or loop.time() + pause > give_up:
                break
            await asyncio.sleep(pause)
            pause = min(2 * pause, _MAX_PAUSE)
        if outcome.status is Status.BUSY:
            log.error(
                "%s of plugin %s for booking %s not made: the plugin stayed busy for %gs (%s);"
                " a later sweep tries again",
                impl.hook, impl.plugin, booking.id, self.patience, outcome.problem,
            )  # fmt: skip
            return False
        if not outcome.ok:
            log.warning(
                "%s of plugin %s for booking %s: %s",
                impl.hook, impl.plugin, booking.id, outcome.problem,
            )  # fmt: skip
        return True

    def _record(self, booking_id: str, event: str) -> None:
        """Note an announcement made; the recorder writes it soon."""
        self._note(booking_id, event)
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.ensure_future(self._recording())

    async def _recording(self) -> None:
        """Write the announcements made, a batch every :data:`RECORD_EVERY`
        seconds while there are any."""
        while self._made and not self._closed:
            await asyncio.sleep(RECORD_EVERY)
            if not await self._record_made():
                await asyncio.sleep(1.0)  # the ledger is unreachable: not at once again

    async def _record_made(self) -> bool:
        """Write the announcements made so far in one ledger call; whether it
        succeeded (if not, they are kept for the next try)."""
        if not self._made:
            return True
        batch, self._made = self._made, {}
        self._writing = batch
        try:
            await self.run(self.ledger.announced, batch)
        except BaseException as exc:  # cancelled too (closing): the batch is kept
            for booking_id, event in batch.items():
                self._note(booking_id, event)
            if not isinstance(exc, Exception):
                raise
            log.warning("recording %d announcement(s) failed: %s", len(batch), exc)
            return False
        finally:
            self._writing = {}
        return True

    def _note(self, booking_id: str, event: str) -> None:
        """Keep the latest event announced of a booking, to record."""
        known = self._made.get(booking_id)
        if known is None or ANNOUNCED_LEVEL[known] < ANNOUNCED_LEVEL[event]:
            self._made[booking_id] = event

    def _count(self, event: str) -> None:
        if self.metrics is not None:
            self.metrics.bookings(event)
