"""The planner answers a :class:`TaskQuery`: no gRPC, no protobuf.

One deadline covers the whole query. Site policies (``ep_policy``) run
first, all at once; if none refuses, the plugins claiming the task type are
consulted at once (``ep_evaluate``) and their offers and reasons merged. A
plugin that raises, returns nonsense, runs late or is busy adds a reason and
never takes the answer, or the server, down with it: the
:class:`~ep_server.plugins.caller.PluginCaller` turns each of those into an
outcome, and :func:`stand_in` into the reason. For a query with a schedule, a
YES goes on to the :class:`Placer` (``ep_server.schedule.placing``), which
turns its offers into time-slot offers with what is left of the deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ep_server.model import Cause, Offer, Reason, TaskQuery, Verdict
from ep_server.plugins.caller import Outcome, PluginCaller, Status
from ep_server.plugins.registry import Registry

if TYPE_CHECKING:
    from ep_server.schedule.ledger import HeldOffer

__all__ = ["Answer", "Placer", "Planner", "stand_in"]

#: Reason codes the EP core itself gives.
UNSUPPORTED_TASK_TYPE = "UNSUPPORTED_TASK_TYPE"
PLUGIN_ERROR = "PLUGIN_ERROR"
PLUGIN_TIMEOUT = "PLUGIN_TIMEOUT"
PLUGIN_BUSY = "PLUGIN_BUSY"
SCHEDULING_UNSUPPORTED = "SCHEDULING_UNSUPPORTED"


@dataclass(frozen=True, slots=True)
class Answer:
    """The merged verdict: offers and reasons, each with the plugin that gave
    it (``""`` for the EP core). For a query with a schedule, the offers are
    time-slot offers (:class:`~ep_server.schedule.ledger.HeldOffer`), each
    for one slot of one plugin's service."""

    offers: Sequence[tuple[str, Offer | HeldOffer]]
    reasons: Sequence[tuple[str, Reason]]

    @property
    def yes(self) -> bool:
        """True when there is at least one offer."""
        return bool(self.offers)


class Placer(Protocol):
    """Turns a YES to a query with a schedule into time-slot offers."""

    async def place(self, query: TaskQuery, answer: Answer, until: float) -> Answer: ...


class PluginMetrics(Protocol):
    """What the planner reports (see :mod:`ep_server.metrics`)."""

    def plugin(self, plugin: str, outcome: str, seconds: float) -> None: ...


class Planner:
    """Answers queries from a :class:`Registry` of loaded plugins.

    :param caller: calls the hooks; its ``deadline`` is what the plugins may
        take on one query, policies and evaluation together.
    :param placer: time-slot offers for queries with a schedule; None when
        the site takes no bookings.
    """

    def __init__(
        self,
        registry: Registry,
        caller: PluginCaller,
        metrics: PluginMetrics | None = None,
        placer: Placer | None = None,
    ) -> None:
        self.registry = registry
        self.caller = caller
        self.metrics = metrics
        self.placer = placer
        claimed = sorted(registry.index)
        self._claimed_hint = ", ".join(claimed[:10]) + (", ..." if len(claimed) > 10 else "")

    @property
    def deadline(self) -> float:
        """Seconds the plugins may take on one query."""
        return self.caller.deadline

    def deadline_at(self, budget: float | None = None) -> float:
        """When a query starting now must be done, on the event loop's clock
        (``time.monotonic``): the plugin deadline from now, or ``budget``
        seconds when shorter (to fit the caller's own gRPC deadline)."""
        return self._until(asyncio.get_running_loop(), budget)

    def _until(self, loop: asyncio.AbstractEventLoop, budget: float | None) -> float:
        limit = self.deadline if budget is None else max(0.0, min(self.deadline, budget))
        return loop.time() + limit

    async def ask(self, query: TaskQuery, budget: float | None = None) -> Answer:
        """Answer ``query`` within the plugin deadline, or ``budget`` seconds
        when shorter."""
        loop = asyncio.get_running_loop()  # once: a system call on Python 3.11
        until = self._until(loop, budget)
        if self.registry.policies:
            refusals = await self._policies(query, until, loop)
            if refusals:
                return Answer((), refusals)
        claimants = self.registry.ep_evaluate(query.tasktype)
        if not claimants:
            return Answer((), (("", self._unsupported(query.tasktype)),))
        offers: list[tuple[str, Offer | HeldOffer]] = []
        reasons: list[tuple[str, Reason]] = []
        metrics = self.metrics
        for outcome in await self.caller.gather_on(loop, claimants, until, (query,)):
            plugin, verdict = outcome.plugin, outcome.value
            if verdict is not None:
                label = "yes" if verdict.offers else "no"
            else:
                verdict = stand_in(outcome)
                label = "timeout" if outcome.status is Status.LATE else "error"
            if metrics is not None:
                metrics.plugin(plugin, label, outcome.seconds)
            for offer in verdict.offers:
                offers.append((plugin, offer))
            for reason in verdict.reasons:
                reasons.append((plugin, reason))
        answer = Answer(offers, reasons)
        if query.schedule is not None and offers:
            return await self._schedule(query, answer, until)
        return answer

    async def _policies(
        self, query: TaskQuery, until: float, loop: asyncio.AbstractEventLoop
    ) -> list[tuple[str, Reason]]:
        """Every policy's refusals (none: the query may proceed). A policy
        that fails or runs late refuses: policy fails closed."""
        refusals: list[tuple[str, Reason]] = []
        policies = self.registry.ep_policy()
        for outcome in await self.caller.gather_on(loop, policies, until, (query,)):
            reasons = outcome.value if outcome.value is not None else stand_in(outcome).reasons
            refusals.extend((outcome.plugin, r) for r in reasons)
        return refusals

    async def _schedule(self, query: TaskQuery, answer: Answer, until: float) -> Answer:
        if self.placer is None:
            why = "this site takes no bookings; ask without a schedule"
            reason = Reason(SCHEDULING_UNSUPPORTED, why, Cause.POLICY, field="schedule")
            return Answer((), [("", reason), *answer.reasons])
        return await self.placer.place(query, answer, until)

    def _unsupported(self, tasktype: str) -> Reason:
        hint = f"; it claims: {self._claimed_hint}" if self._claimed_hint else ""
        return Reason(
            UNSUPPORTED_TASK_TYPE,
            f"no plugin on this site claims task type {tasktype!r}{hint}",
            Cause.REQUEST,
            field="tasktype",
        )


def stand_in(outcome: Outcome[Any]) -> Verdict:
    """The NO that stands for a hook call that gave no usable value: one
    INTERNAL reason saying what went wrong."""
    status, problem = outcome.status, outcome.problem
    if status is Status.LATE:
        return _internal(PLUGIN_TIMEOUT, problem, retryable=True)
    if status is Status.BUSY:
        return _internal(PLUGIN_BUSY, f"plugin busy: {problem}", retryable=True)
    if status is Status.MALFORMED:
        return _internal(PLUGIN_ERROR, problem, retryable=False)
    return _internal(PLUGIN_ERROR, f"plugin failed: {problem}", retryable=True)


def _internal(code: str, message: str, retryable: bool) -> Verdict:
    return Verdict(reasons=(Reason(code, message, Cause.INTERNAL, retryable),))
