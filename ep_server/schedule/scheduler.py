"""When can I run this? Turning a YES into time-slot offers, and bookings.

The planner answers an ``Ask`` as usual; when it has a schedule and the
answer is YES, :class:`Scheduler` asks each offering plugin what the task
holds (``ep_resources``), has the ledger find and hold slots within the
requested windows (plugins may refuse a slot with ``ep_slot``), and answers
with those time-slot offers instead. When nothing fits, the answer is NO with
a CAPACITY reason that asking later may help, and the earliest slot that
would fit.

All ledger calls run on one worker thread, in order: the ledger may block on
its disk, and never on the event loop. Plugins hear of bookings and
cancellations (``ep_booked``, ``ep_cancelled``) after they are committed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import dataclasses
import functools
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from ep_server.config import ScheduleSettings
from ep_server.errors import EPError
from ep_server.model import (
    Booking,
    BookingState,
    Cause,
    HostInfo,
    Identity,
    Reason,
    Schedule,
    Slot,
    TaskQuery,
    Window,
)
from ep_server.planner import Answer
from ep_server.plugins import Registry
from ep_server.schedule.ledger import (
    Candidate,
    HeldOffer,
    Ledger,
    Placement,
    TooManyOffers,
)

__all__ = ["Scheduler", "owner_of", "resolve_pools", "utcnow"]

log = logging.getLogger(__name__)
T = TypeVar("T")

NO_SLOT = "NO_SLOT"
TOO_MANY_OFFERS = "TOO_MANY_OFFERS"
SCHEDULING_UNSUPPORTED = "SCHEDULING_UNSUPPORTED"

#: Seconds a plugin's slots are refused after one of its ep_slot calls took
#: longer than the whole deadline (counted from when that call returned).
_SLOT_COOLDOWN = 30.0


def utcnow() -> datetime:
    """The default clock: now, in UTC."""
    return datetime.now(UTC)


def owner_of(identity: Identity) -> str:
    """Who owns offers and bookings: the way a caller was identified and its
    subject, since a token's "alice" and a JWT's "alice" are different
    callers."""
    return f"{identity.method}:{identity.subject}"


def _from_now(schedule: Schedule, now: datetime) -> Schedule | None:
    """The schedule without the past: windows that ended are dropped and
    those under way start now. None when nothing is left."""
    windows = tuple(Window(max(w.start, now), w.end) for w in schedule.windows if w.end >= now)
    return dataclasses.replace(schedule, windows=windows) if windows else None


def _checked_need(need: Any) -> dict[str, int]:
    """An ep_resources answer: pool name -> a non-negative int."""
    if not isinstance(need, Mapping):
        raise TypeError(f"ep_resources returned {type(need).__name__}, not a mapping")
    result = {}
    for pool, amount in need.items():
        if not isinstance(pool, str) or type(amount) is not int or not 0 <= amount < 2**63:
            raise ValueError(f"ep_resources: {pool!r}: {amount!r} is not a non-negative int")
        result[pool] = amount
    return result


_RESOURCES_FAILED = "ep_resources of plugin %s failed; using the request's minimum"


def _default_need(query: TaskQuery) -> dict[str, int]:
    """What a task holds when its plugin does not say: the request's minimum
    cores (at least 1) and memory."""
    cores, memory = query.resources.cores.min, query.resources.memory.min
    return {"cores": max(1, cores or 1), "memory": memory or 0}


def resolve_pools(settings: ScheduleSettings, host: HostInfo) -> dict[str, int]:
    """The pools' capacities, with "host" read from the host."""
    host_amounts = {"cores": host.cores, "memory": host.memory}
    pools = {}
    for name, amount in settings.pools.items():
        pools[name] = host_amounts.get(name, 0) if amount == "host" else int(amount)
    return pools


class Scheduler:
    """Time-slot offers and bookings over a :class:`Ledger`."""

    def __init__(
        self,
        ledger: Ledger,
        settings: ScheduleSettings,
        registry: Registry,
        clock: Callable[[], datetime] = utcnow,
        deadline: float = 2.0,
    ) -> None:
        self.ledger = ledger
        self.settings = settings
        self.registry = registry
        self.clock = clock
        self.deadline = deadline
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ep-ledger")
        # ep_slot calls run here, so that the ledger thread waits for one
        # only as long as the placement's budget; a stuck call keeps its
        # thread, never the ledger's. A plugin running late is refused new
        # calls (see _refuser), so each holds at most one thread: one per
        # plugin with ep_slot, and one more, are always enough.
        slot_plugins = len(registry.scheduling.get("ep_slot", {}))
        self._slots = ThreadPoolExecutor(slot_plugins + 1, thread_name_prefix="ep-slot")
        # Plain ep_booked/ep_cancelled hooks run here, not in asyncio's
        # default executor, which asyncio.run waits for without a limit at
        # exit: a stuck hook would keep a stopped server from ending.
        # Plain ep_resources hooks run here too.
        self._hooks = ThreadPoolExecutor(4, thread_name_prefix="ep-notify")
        self._slot_lock = threading.Lock()
        self._slot_running_late: dict[str, int] = {}  # ep_slot calls past the deadline
        self._slot_cool: dict[str, float] = {}  # refuse a plugin's slots until then
        self._notifications: set[asyncio.Task[None]] = set()
        self._announced: OrderedDict[str, None] = OrderedDict()
        self._closed = False

    async def close(self) -> None:
        """Let pending notifications finish (briefly), then close the ledger.
        Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        if self._notifications:
            await asyncio.wait(self._notifications, timeout=self.deadline)
        await self._run(self.ledger.close)
        self._thread.shutdown(wait=True)
        self._slots.shutdown(wait=False, cancel_futures=True)
        self._hooks.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    # --- Ask with a schedule ---------------------------------------------

    async def place(self, query: TaskQuery, answer: Answer, until: float | None = None) -> Answer:
        """Turn a YES into time-slot offers, or a NO saying when it would fit.

        ``until`` (from ``Planner.deadline_at``: the event loop's clock,
        which is ``time.monotonic``) is when the Ask's one deadline ends;
        ``ep_resources`` and ``ep_slot`` share what is left of it. By
        default, a deadline from now."""
        if until is None:
            until = time.monotonic() + self.deadline
        assert query.schedule is not None
        schedule = _from_now(query.schedule, self.clock())
        if schedule is None:
            why = "every start window has passed; ask with windows in the future"
            reason = Reason(NO_SLOT, why, Cause.REQUEST, field="schedule.windows")
            return Answer((), [("", reason), *answer.reasons])
        query = dataclasses.replace(query, schedule=schedule)
        needs = await self._needs(query, [plugin for plugin, _ in answer.offers], until)
        candidates = tuple(
            Candidate(plugin, offer.servicetype, offer.serviceinfo, needs[plugin])
            for plugin, offer in answer.offers
        )
        placement = Placement(
            owner=owner_of(query.identity),
            ask_id=uuid.uuid4().hex,
            candidates=candidates,
            schedule=schedule,
            max_offers=self.settings.max_offers,
            ttl=timedelta(seconds=self.settings.offer_ttl),
            max_outstanding=self.settings.max_outstanding_offers,
            # Anonymous callers learn the slots but hold nothing: nobody can
            # tie up the site without being accountable for it.
            hold=not query.identity.anonymous,
            refuse=self._refuser(query, candidates, until),
        )
        try:
            held = await self._place(placement)
        except TooManyOffers as exc:
            reason = Reason(TOO_MANY_OFFERS, str(exc), Cause.POLICY, retryable=True)
            return Answer((), [("", reason), *answer.reasons])
        if held:
            return Answer(answer.offers, answer.reasons, held)
        return Answer((), [("", await self._no_slot(query, candidates)), *answer.reasons])

    async def _place(self, placement: Placement) -> list[HeldOffer]:
        """``ledger.place`` on the ledger thread. If the Ask is cancelled
        meanwhile (the caller gave up), whatever it held is released when the
        ledger is done, instead of blocking the site until it expires."""
        job = asyncio.get_running_loop().run_in_executor(
            self._thread, self.ledger.place, placement, self.clock()
        )
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            job.add_done_callback(functools.partial(self._release_orphans, placement.owner))
            raise

    def _release_orphans(self, owner: str, job: asyncio.Future[list[HeldOffer]]) -> None:
        if job.cancelled() or job.exception() is not None:
            return
        for offer in job.result():
            if offer.id and not self._closed:
                self._thread.submit(self._quietly_reject, offer.id, owner)

    def _quietly_reject(self, offer_id: str, owner: str) -> None:
        with contextlib.suppress(EPError):
            self.ledger.reject(offer_id, owner, self.clock())

    async def _needs(
        self, query: TaskQuery, plugins: list[str], until: float
    ) -> dict[str, Mapping[str, int]]:
        """What each plugin says its task holds (``ep_resources``), checked;
        the request's minimum when it says nothing or something unusable,
        fails or runs past ``until``. All plugins are asked at once; plain
        hooks run in the scheduler's threads, never on the event loop (a
        slow one cannot stall the server)."""
        hooks = self.registry.scheduling.get("ep_resources", {})
        loop = asyncio.get_running_loop()
        jobs: dict[str, asyncio.Future[Any]] = {}
        for plugin in dict.fromkeys(plugins):
            bound = hooks.get(plugin)
            if bound is None:
                continue
            try:
                if bound.is_async:
                    jobs[plugin] = asyncio.ensure_future(bound(query=query))
                else:
                    call = functools.partial(bound, query=query)
                    run = contextvars.copy_context().run
                    jobs[plugin] = loop.run_in_executor(self._hooks, run, call)
            except Exception:
                log.exception(
                    "ep_resources of plugin %s failed; using the request's minimum", plugin
                )
        if jobs:
            try:
                await asyncio.wait(jobs.values(), timeout=max(0.0, until - time.monotonic()))
            except asyncio.CancelledError:  # the caller left: so do the hooks
                for pending in jobs.values():
                    pending.cancel()
                raise
        default = _default_need(query)
        needs: dict[str, Mapping[str, int]] = {}
        for plugin in plugins:
            needs[plugin] = default
            job = jobs.get(plugin)
            if job is None:
                continue
            if not job.done():
                job.cancel()
                log.warning("ep_resources of plugin %s ran past the deadline", plugin)
                continue
            try:
                need = job.result()
                if need is not None:
                    needs[plugin] = _checked_need(need)
            except Exception:
                log.exception(
                    "ep_resources of plugin %s failed; using the request's minimum", plugin
                )
        return needs

    def _refuser(
        self, query: TaskQuery, candidates: tuple[Candidate, ...], until: float
    ) -> Callable[[Candidate, Slot], bool] | None:
        """The slot check for one Ask's placement, run on the ledger thread.

        Each ``ep_slot`` call runs in a slot thread while the ledger thread
        waits. One placement waits for ``ep_slot`` at most what is left of
        the Ask's deadline (``until``), shared equally by the plugins with
        ``ep_slot`` among its candidates: a plugin past its share has its remaining slots
        refused in this placement, so a slow one cannot use up the others'
        time. A call still running when its share ends is left to finish in
        its thread, and its plugin's slots are refused, uncalled, until it
        returns; one that took longer than the whole deadline trips its
        plugin for :data:`_SLOT_COOLDOWN` seconds more. So each plugin holds
        at most one slot thread, and a stuck or slow ``ep_slot`` holds the
        ledger (every booking RPC) for at most its share of one deadline,
        then not again until it returns. A plugin that raises refuses the
        slot.
        """
        hooks = self.registry.scheduling.get("ep_slot", {})
        checking = {c.plugin for c in candidates} & hooks.keys()
        if not checking:
            return None
        shares: list[float] = []  # each plugin's share, set when the ledger starts
        spent: dict[str, float] = {}  # seconds each plugin's calls took in this placement

        def refuse(candidate: Candidate, slot: Slot) -> bool:
            plugin = candidate.plugin
            if plugin not in checking:
                return False
            if not shares:  # what is left of the Ask's deadline, shared equally
                shares.append(max(0.0, until - time.monotonic()) / len(checking))
            left = shares[0] - spent.get(plugin, 0.0)
            if left <= 0 or self._slot_refused(plugin):
                return True
            started = time.monotonic()
            job = self._slots.submit(self._timed_slot, plugin, query, slot)
            concurrent.futures.wait([job], timeout=left)
            spent[plugin] = spent.get(plugin, 0.0) + time.monotonic() - started
            if not job.done():
                self._abandon(plugin, job)
                return True
            try:
                reason = job.result()
            except Exception:
                log.exception("ep_slot of plugin %s raised; the slot is refused", plugin)
                return True
            return reason is not None

        return refuse

    def _timed_slot(self, plugin: str, query: TaskQuery, slot: Slot) -> Any:
        """Call ``plugin``'s ep_slot in a slot thread; if it takes longer
        than the whole deadline, refuse its slots for the cool-down too."""
        started = time.monotonic()
        try:
            return self.registry.call("ep_slot", plugin, query=query, slot=slot)
        finally:
            took = time.monotonic() - started
            if took > self.deadline:
                log.warning(
                    "ep_slot of plugin %s took %.3gs, past the deadline (%.3gs); its slots "
                    "are refused for %gs",
                    plugin,
                    took,
                    self.deadline,
                    _SLOT_COOLDOWN,
                )
                with self._slot_lock:
                    self._slot_cool[plugin] = time.monotonic() + _SLOT_COOLDOWN

    def _slot_refused(self, plugin: str) -> bool:
        """True while a call of ``plugin``'s ep_slot is still running after
        its placement stopped waiting, or in its cool-down."""
        with self._slot_lock:
            if self._slot_running_late.get(plugin, 0) > 0:
                return True
            cool = self._slot_cool.get(plugin)
        return cool is not None and time.monotonic() < cool

    def _abandon(self, plugin: str, job: concurrent.futures.Future[Any]) -> None:
        """Stop waiting for a call; refuse ``plugin``'s slots until it returns."""
        with self._slot_lock:
            if job.cancel():  # never started (cannot happen while each plugin
                return  # holds at most one thread; kept safe anyway)
            self._slot_running_late[plugin] = self._slot_running_late.get(plugin, 0) + 1
        log.warning(
            "ep_slot of plugin %s is still running after its share of the deadline; its "
            "slots are refused until it returns",
            plugin,
        )
        job.add_done_callback(functools.partial(self._returned, plugin))

    def _returned(self, plugin: str, _: object) -> None:
        with self._slot_lock:
            self._slot_running_late[plugin] -= 1

    async def _no_slot(self, query: TaskQuery, candidates: tuple[Candidate, ...]) -> Reason:
        assert query.schedule is not None
        first = min(window.start for window in query.schedule.windows)
        earliest = None
        if candidates:
            need, duration = candidates[0].need, query.schedule.min_duration
            earliest = await self._run(
                self.ledger.earliest, need, duration, max(first, self.clock()), self.clock()
            )
        message = "no slot in the requested windows fits; asking later may help"
        if earliest is not None:
            message += f"; the earliest that would fit starts {earliest.start.isoformat()}"
        return Reason(NO_SLOT, message, Cause.CAPACITY, True, "schedule.windows", earliest)

    # --- bookings --------------------------------------------------------

    async def accept(self, offer_id: str, identity: Identity) -> Booking:
        booking = await self._ledger_call(self.ledger.accept, offer_id, identity)
        # Accepting again returns the same booking: tell the plugin once. (Kept
        # in memory, bounded: after a restart a repeated accept of an old
        # offer tells it once more.)
        if booking.id not in self._announced:
            self._announced[booking.id] = None
            if len(self._announced) > 10_000:
                self._announced.popitem(last=False)
            self._notify("ep_booked", booking)
        return booking

    async def reject(self, offer_id: str, identity: Identity) -> None:
        await self._ledger_call(self.ledger.reject, offer_id, identity)

    async def get(self, booking_id: str, identity: Identity) -> Booking:
        return await self._ledger_call(self.ledger.get, booking_id, identity)

    async def bookings(self, identity: Identity) -> list[Booking]:
        return list(await self._run(self.ledger.bookings, owner_of(identity), self.clock()))

    async def cancel(self, booking_id: str, identity: Identity) -> tuple[Booking, bool]:
        """Cancel a booking: it, and whether this call changed anything
        (cancelling twice, or a finished booking, does not; plugins and
        metrics hear only of real cancellations)."""
        booking, changed = await self._ledger_call(self._cancel_once, booking_id, identity)
        if changed:
            self._notify("ep_cancelled", booking)
        return booking, changed

    def _cancel_once(self, booking_id: str, owner: str, now: datetime) -> tuple[Booking, bool]:
        before = self.ledger.get(booking_id, owner, now)
        after = self.ledger.cancel(booking_id, owner, now)
        return after, before.state is BookingState.BOOKED and after.state is BookingState.CANCELLED

    async def _ledger_call(
        self, fn: Callable[[str, str, datetime], T], key: str, who: Identity
    ) -> T:
        return await self._run(fn, key, owner_of(who), self.clock())

    def _notify(self, hook: str, booking: Booking) -> None:
        bound = self.registry.scheduling.get(hook, {}).get(booking.plugin)
        if bound is None:
            return
        task = asyncio.ensure_future(self._deliver(hook, booking, bound.is_async))
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

    async def _deliver(self, hook: str, booking: Booking, is_async: bool) -> None:
        call = self.registry.call
        try:
            async with asyncio.timeout(self.deadline):
                if is_async:
                    await call(hook, booking.plugin, booking=booking)
                else:
                    loop = asyncio.get_running_loop()
                    job = functools.partial(call, hook, booking.plugin, booking=booking)
                    await loop.run_in_executor(self._hooks, contextvars.copy_context().run, job)
        except Exception:
            log.exception("%s of plugin %s failed for booking %s", hook, booking.plugin, booking.id)
