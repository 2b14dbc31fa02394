"""Turning a YES into time-slot offers ("when can I run this?").

For an ``Ask`` with a schedule whose answer is YES, the :class:`Placer` asks
each offering plugin what the task holds (``ep_resources``), has the ledger
find and hold slots within the requested start windows (plugins may refuse a
slot with ``ep_slot``), and answers with those time-slot offers instead.
When nothing fits, the answer is NO with a CAPACITY reason that asking later
may help, and the earliest slot that would fit.

``ep_resources`` and ``ep_slot`` share what is left of the Ask's one
deadline. Anonymous callers learn the slots but hold nothing: nobody can tie
up the site without being accountable for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from datetime import datetime, timedelta

from ep_server.config import ScheduleSettings
from ep_server.errors import EPError
from ep_server.model import Cause, Offer, Reason, Schedule, Slot, TaskQuery, Window
from ep_server.planner import Answer
from ep_server.plugins.caller import PluginCaller, Status
from ep_server.plugins.registry import Registry
from ep_server.schedule.bookings import Bookings, owner_of
from ep_server.schedule.ledger import Candidate, HeldOffer, Placement, TooManyOffers

__all__ = ["BEYOND_HORIZON", "NO_SLOT", "TOO_MANY_OFFERS", "Placer"]

NO_SLOT = "NO_SLOT"
#: Every start window begins after the last start this site books.
BEYOND_HORIZON = "BEYOND_HORIZON"
TOO_MANY_OFFERS = "TOO_MANY_OFFERS"


class Placer:
    """Time-slot offers for scheduled Asks, held in the ledger of ``bookings``."""

    def __init__(
        self,
        bookings: Bookings,
        settings: ScheduleSettings,
        registry: Registry,
        caller: PluginCaller,
    ) -> None:
        self.bookings = bookings
        self.settings = settings
        self.registry = registry
        self.caller = caller

    async def place(self, query: TaskQuery, answer: Answer, until: float) -> Answer:
        """Turn a YES into time-slot offers, or a NO saying when it would fit.

        ``until`` (the event loop's clock, ``time.monotonic``) is when the
        Ask's one deadline ends; ``ep_resources`` and ``ep_slot`` share what
        is left of it."""
        assert query.schedule is not None
        now = self.bookings.clock()
        schedule = _from_now(query.schedule, now)
        if schedule is None:
            why = "every start window has passed; ask with windows in the future"
            reason = Reason(NO_SLOT, why, Cause.REQUEST, field="schedule.windows")
            return Answer((), [("", reason), *answer.reasons])
        horizon = now + timedelta(days=self.settings.horizon_days)
        if all(window.start > horizon for window in schedule.windows):
            reason = Reason(BEYOND_HORIZON, _beyond(horizon, self.settings.horizon_days),
                            Cause.POLICY, field="schedule.windows")  # fmt: skip
            return Answer((), [("", reason), *answer.reasons])
        query = dataclasses.replace(query, schedule=schedule)
        offered = [(p, o) for p, o in answer.offers if isinstance(o, Offer)]
        needs = await self._needs(query, [plugin for plugin, _ in offered], until)
        candidates = tuple(
            Candidate(plugin, offer.servicetype, offer.serviceinfo, needs[plugin])
            for plugin, offer in offered
        )
        placement = Placement(
            owner=owner_of(query.identity),
            ask_id=uuid.uuid4().hex,
            candidates=candidates,
            schedule=schedule,
            max_offers=self.settings.max_offers,
            ttl=timedelta(seconds=self.settings.offer_ttl),
            max_outstanding=self.settings.max_outstanding_offers,
            hold=not query.identity.anonymous,
            refuse=self._refuser(query, candidates, until),
        )
        try:
            held = await self._place(placement)
        except TooManyOffers as exc:
            reason = Reason(TOO_MANY_OFFERS, str(exc), Cause.POLICY, retryable=True)
            return Answer((), [("", reason), *answer.reasons])
        if held:
            return Answer([(h.candidate.plugin, h) for h in held], answer.reasons)
        return Answer((), [("", await self._no_slot(query, candidates)), *answer.reasons])

    async def _place(self, placement: Placement) -> list[HeldOffer]:
        """``ledger.place`` on the ledger's thread. If the Ask is cancelled
        meanwhile (the caller gave up), whatever it held is released when the
        ledger is done, instead of blocking the site until it expires."""
        bookings = self.bookings
        job = bookings.submit(bookings.ledger.place, placement, bookings.clock())
        try:
            return await asyncio.shield(asyncio.wrap_future(job))
        except asyncio.CancelledError:
            job.add_done_callback(functools.partial(self._release_orphans, placement.owner))
            raise

    def _release_orphans(self, owner: str, job: Future[list[HeldOffer]]) -> None:
        if job.cancelled() or job.exception() is not None:
            return
        for offer in job.result():
            if offer.id:
                self.bookings.submit(self._quietly_reject, offer.id, owner)

    def _quietly_reject(self, offer_id: str, owner: str) -> None:
        with contextlib.suppress(EPError):
            self.bookings.ledger.reject(offer_id, owner, self.bookings.clock())

    async def _needs(
        self, query: TaskQuery, plugins: list[str], until: float
    ) -> dict[str, Mapping[str, int]]:
        """What each plugin says its task holds (``ep_resources``, all asked at
        once); the request's minimum when it says nothing, or fails."""
        impls = [i for p in dict.fromkeys(plugins) if (i := self.registry.ep_resources(p))]
        said = {
            outcome.plugin: outcome.value
            for outcome in await self.caller.gather(impls, until, query)
            if outcome.value is not None
        }
        default = _default_need(query)
        return {plugin: said.get(plugin, default) for plugin in plugins}

    def _refuser(
        self, query: TaskQuery, candidates: tuple[Candidate, ...], until: float
    ) -> Callable[[Candidate, Slot], bool] | None:
        """The slot check for one Ask's placement, run on the ledger's thread.

        Each ``ep_slot`` call runs in a plugin thread while the ledger's
        thread waits. One placement waits for ``ep_slot`` at most what is left
        of the Ask's deadline (``until``), shared equally by the plugins with
        ``ep_slot`` among its candidates: a plugin past its share has its
        remaining slots refused in this placement, so a slow one cannot use
        up the others' time. A call still running when its share ends is left
        to finish, and the caller refuses that plugin's ``ep_slot``, uncalled,
        until it returns (and for a while after a call longer than the whole
        deadline: see the hook's contract). So a stuck or slow ``ep_slot``
        holds the ledger for at most its share of one deadline. A plugin that
        raises refuses the slot.
        """
        impls = {c.plugin: i for c in candidates if (i := self.registry.ep_slot(c.plugin))}
        if not impls:
            return None
        shares: list[float] = []  # each plugin's share, set when the ledger starts
        spent: dict[str, float] = {}  # seconds each plugin's calls took in this placement

        def refuse(candidate: Candidate, slot: Slot) -> bool:
            impl = impls.get(candidate.plugin)
            if impl is None:
                return False
            if not shares:  # what is left of the Ask's deadline, shared equally
                shares.append(max(0.0, until - time.monotonic()) / len(impls))
            left = shares[0] - spent.get(impl.plugin, 0.0)
            if left <= 0:
                return True
            outcome = self.caller.call_blocking(impl, left, query, slot)
            if outcome.status is not Status.BUSY:
                spent[impl.plugin] = spent.get(impl.plugin, 0.0) + outcome.seconds
            return not outcome.ok or outcome.value is not None

        return refuse

    async def _no_slot(self, query: TaskQuery, candidates: tuple[Candidate, ...]) -> Reason:
        assert query.schedule is not None
        first = min(window.start for window in query.schedule.windows)
        earliest = None
        if candidates:
            need, duration = candidates[0].need, query.schedule.min_duration
            now = self.bookings.clock()
            ledger = self.bookings.ledger
            earliest = await self.bookings.run(
                ledger.earliest, need, duration, max(first, now), now
            )
        message = "no slot in the requested windows fits; asking later may help"
        if earliest is not None:
            message += f"; the earliest that would fit starts {earliest.start.isoformat()}"
        else:
            days = self.settings.horizon_days
            message += f"; nothing fits within this site's booking horizon ({days} days ahead)"
        return Reason(NO_SLOT, message, Cause.CAPACITY, True, "schedule.windows", earliest)


def _beyond(horizon: datetime, days: int) -> str:
    return (
        f"every start window begins after {horizon.isoformat(timespec='minutes')}: this site "
        f"books at most {days} days ahead ([schedule] horizon_days); ask for earlier windows"
    )


def _from_now(schedule: Schedule, now: datetime) -> Schedule | None:
    """The schedule without the past: windows that ended are dropped and
    those under way start now. None when nothing is left."""
    windows = tuple(Window(max(w.start, now), w.end) for w in schedule.windows if w.end >= now)
    return dataclasses.replace(schedule, windows=windows) if windows else None


def _default_need(query: TaskQuery) -> dict[str, int]:
    """What a task holds when its plugin does not say: the request's minimum
    cores (at least 1) and memory."""
    cores, memory = query.resources.cores.min, query.resources.memory.min
    return {"cores": max(1, cores or 1), "memory": memory or 0}
