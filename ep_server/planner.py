"""The planner answers a :class:`TaskQuery`: no gRPC, no protobuf.

It looks up the plugins that claim the task type, consults them
concurrently, each under a deadline, and merges their offers and reasons. A
plugin that raises, returns nonsense or runs late adds a reason and never
takes the answer, or the server, down with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast

from ep_server.model import Cause, Offer, Reason, Resources, TaskQuery, Verdict
from ep_server.plugins import Claimant, Registry
from ep_server.schedule.ledger import HeldOffer

__all__ = ["Answer", "Planner"]

log = logging.getLogger(__name__)

#: Reason codes the EP core itself gives.
UNSUPPORTED_TASK_TYPE = "UNSUPPORTED_TASK_TYPE"
PLUGIN_ERROR = "PLUGIN_ERROR"
PLUGIN_TIMEOUT = "PLUGIN_TIMEOUT"
PLUGIN_BUSY = "PLUGIN_BUSY"


@dataclass(frozen=True, slots=True)
class Answer:
    """The merged verdict: offers and reasons, each with the plugin that gave
    it (``""`` for the EP core)."""

    offers: Sequence[tuple[str, Offer]]
    reasons: Sequence[tuple[str, Reason]]
    #: For an Ask with a schedule: the time-slot offers, which replace
    #: ``offers`` in the answer (see :mod:`ep_server.schedule.scheduler`).
    held: Sequence[HeldOffer] = ()

    @property
    def yes(self) -> bool:
        """True when at least one plugin made an offer."""
        return bool(self.offers)


class Planner:
    """Answers queries from a :class:`Registry` of loaded plugins.

    :param deadline: seconds the plugins may take on one query, policies and
        evaluation together.
    :param threads: worker threads for plugins whose hooks are plain
        (blocking) functions; one plugin may hold at most half of them, so a
        stuck plugin cannot starve the others.
    """

    def __init__(
        self,
        registry: Registry,
        deadline: float,
        threads: int = 8,
        metrics: PluginMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.deadline = deadline
        self.metrics = metrics
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="ep-plugin")
        self._per_plugin = max(1, threads // 2)
        # Worker threads each plugin occupies, abandoned ones included.
        self._busy: dict[str, int] = {}
        claimed = sorted(registry.index)
        self._claimed_hint = ", ".join(claimed[:10]) + (", ..." if len(claimed) > 10 else "")

    def close(self) -> None:
        """Stop the worker threads (without waiting for stuck plugins)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    def deadline_at(self, budget: float | None = None) -> float:
        """When an Ask starting now must be done, on the event loop's clock
        (``time.monotonic``): the plugin deadline from now, or ``budget``
        seconds when shorter (to fit the caller's own gRPC deadline)."""
        limit = self.deadline if budget is None else max(0.0, min(self.deadline, budget))
        return asyncio.get_running_loop().time() + limit

    async def ask(
        self, query: TaskQuery, budget: float | None = None, *, until: float | None = None
    ) -> Answer:
        """Answer ``query`` by ``until`` (from :meth:`deadline_at`; by
        default ``deadline_at(budget)``). One deadline covers the whole
        query: policies first, then the claimants, with what is left."""
        deadline = self.deadline_at(budget) if until is None else until
        if self.registry.policies:
            refusals = await self._policies(query, deadline)
            if refusals:
                return Answer((), refusals)
        claimants = self.registry.claimants(query.tasktype)
        if not claimants:
            return Answer((), (("", self._unsupported(query.tasktype)),))
        verdicts = []
        for claimant, (value, problem, seconds) in zip(
            claimants, await self._run(claimants, query, deadline), strict=True
        ):
            verdict = _checked(claimant.plugin, value) if problem is None else problem
            self._observe(claimant.plugin, verdict, seconds)
            verdicts.append(verdict)
        pairs = list(zip(claimants, verdicts, strict=True))
        offers = [(c.plugin, o) for c, v in pairs for o in v.offers]
        reasons = [(c.plugin, r) for c, v in pairs for r in v.reasons]
        return Answer(offers, reasons)

    async def _run(
        self, callers: Sequence[Claimant], query: TaskQuery, deadline: float
    ) -> list[tuple[Any, Verdict | None, float]]:
        """Call every plugin at once and wait until the deadline: (its
        result, or the Verdict standing for its failure; seconds taken).

        Each ``async`` hook runs as a task of its own, so its own timeouts,
        task groups and cancellations stay its own; plain functions run in
        the worker threads with the call's context (the request id reaches
        their log lines). Late tasks are cancelled; late threads abandoned.
        """
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        futures: list[asyncio.Future[Any] | None] = []
        results: list[tuple[Any, Verdict | None, float]] = [(None, None, 0.0)] * len(callers)
        finished: dict[int, float] = {}
        for i, caller in enumerate(callers):
            try:
                future = self._launch(caller, query, loop)
            except Exception as exc:
                results[i] = (None, self._problem(caller, exc), 0.0)
                futures.append(None)
                continue
            if future.done():  # an eagerly started hook that did not wait
                finished[i] = time.perf_counter()
            futures.append(future)
        pending = {i: f for i, f in enumerate(futures) if f is not None and not f.done()}
        if pending:
            await _all_or_deadline(pending, finished, deadline, loop)
        for i, maybe in enumerate(futures):
            if maybe is not None:
                seconds = finished.get(i, time.perf_counter()) - started
                results[i] = self._settle(callers[i], maybe, seconds)
        return results

    def _launch(
        self, caller: Claimant, query: TaskQuery, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Any]:
        if caller.is_async:
            return _start(caller.evaluate(query), loop)
        busy = self._busy.get(caller.plugin, 0)
        if busy >= self._per_plugin:
            raise _Busy(f"{busy} earlier calls of this plugin still hold worker threads")
        self._busy[caller.plugin] = busy + 1
        context = contextvars.copy_context()
        return loop.run_in_executor(self._executor, self._in_thread, loop, caller, context, query)

    def _in_thread(
        self,
        loop: asyncio.AbstractEventLoop,
        caller: Claimant,
        context: contextvars.Context,
        query: TaskQuery,
    ) -> Any:
        """Run a plain hook in a worker thread; its thread counts as busy
        until the hook returns, even after the Ask stopped waiting for it."""
        try:
            return context.run(caller.evaluate, query)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                loop.call_soon_threadsafe(self._release, caller.plugin)

    def _release(self, plugin: str) -> None:
        self._busy[plugin] -= 1

    def _settle(
        self, caller: Claimant, future: asyncio.Future[Any], seconds: float
    ) -> tuple[Any, Verdict | None, float]:
        if not future.done():
            future.cancel()
            log.warning("plugin %s ran past the deadline", caller.plugin)
            message = f"plugin did not answer within the deadline ({self.deadline:.3g}s)"
            return None, _internal(PLUGIN_TIMEOUT, message, True), seconds
        if future.cancelled():
            error: BaseException = asyncio.CancelledError("the plugin cancelled itself")
        elif future.exception() is None:
            return future.result(), None, seconds
        else:
            error = cast("BaseException", future.exception())
        return None, self._problem(caller, error), seconds

    def _problem(self, caller: Claimant, exc: BaseException) -> Verdict:
        if isinstance(exc, _Busy):
            log.warning("plugin %s is busy: %s", caller.plugin, exc)
            return _internal(PLUGIN_BUSY, f"plugin busy: {exc}", True)
        return _failed(caller, exc)

    def _observe(self, plugin: str, verdict: Verdict, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.plugin(plugin, _outcome(verdict), seconds)

    async def _policies(self, query: TaskQuery, deadline: float) -> list[tuple[str, Reason]]:
        """Every policy's refusals (none: the query may proceed), all run at
        once. A policy that fails or runs late refuses: policy fails closed."""
        policies = self.registry.policies
        refusals: list[tuple[str, Reason]] = []
        for policy, (value, problem, _) in zip(
            policies, await self._run(policies, query, deadline), strict=True
        ):
            try:
                reasons = list(problem.reasons) if problem else _policy_reasons(value)
            except TypeError as exc:
                reasons = list(_failed(policy, exc).reasons)
            refusals.extend((policy.plugin, r) for r in reasons)
        return refusals

    def _unsupported(self, tasktype: str) -> Reason:
        hint = f"; it claims: {self._claimed_hint}" if self._claimed_hint else ""
        return Reason(
            UNSUPPORTED_TASK_TYPE,
            f"no plugin on this site claims task type {tasktype!r}{hint}",
            Cause.REQUEST,
            field="tasktype",
        )


if sys.version_info >= (3, 12):

    def _start(coro: Any, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """A task of its own for an async hook, whose first step runs now
        (Python 3.12 eager start): a plugin that answers without waiting
        costs no trip through the event loop, and one that waits still has
        its own task, so its timeouts and cancellations stay its own."""
        if loop.get_task_factory() is not None:  # someone's own tasks: theirs to make
            return loop.create_task(coro)
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]

else:

    def _start(coro: Any, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        """A task of its own for an async hook (Python 3.11 has no eager
        start: its first step waits for the next turn of the event loop)."""
        return loop.create_task(coro)


async def _all_or_deadline(
    pending: dict[int, asyncio.Future[Any]],
    finished: dict[int, float],
    deadline: float,
    loop: asyncio.AbstractEventLoop,
) -> None:
    """Wait until every future in ``pending`` is done or the loop's clock
    reaches ``deadline``, noting in ``finished`` when each one ended.

    What ``asyncio.wait`` does, with one callback per future that also takes
    the time (this runs once per Ask). If the wait itself is cancelled (the
    caller left), the futures are cancelled too.
    """
    waiter: asyncio.Future[None] = loop.create_future()
    left = len(pending)

    def done(i: int, _: object) -> None:
        nonlocal left
        finished[i] = time.perf_counter()
        left -= 1
        if not left and not waiter.done():
            waiter.set_result(None)

    for i, future in pending.items():
        future.add_done_callback(functools.partial(done, i))
    timer = loop.call_at(deadline, _wake, waiter)
    try:
        await waiter
    except asyncio.CancelledError:
        for future in pending.values():
            future.cancel()
        raise
    finally:
        timer.cancel()


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Busy(Exception):
    """A plugin already holds its share of the worker threads."""


def _policy_reasons(result: object) -> list[Reason]:
    if result is None:
        return []
    reasons = [result] if isinstance(result, Reason) else list(result)  # type: ignore[call-overload]
    if not all(isinstance(r, Reason) for r in reasons):
        raise TypeError("ep_policy must return None, a Reason or Reasons")
    return reasons


def _outcome(verdict: Verdict) -> str:
    if verdict.offers:
        return "yes"
    code = verdict.reasons[0].code if verdict.reasons else ""
    return {PLUGIN_ERROR: "error", PLUGIN_BUSY: "error", PLUGIN_TIMEOUT: "timeout"}.get(code, "no")


class PluginMetrics(Protocol):
    """What the planner reports per plugin evaluation (see ep_server.metrics)."""

    def plugin(self, plugin: str, outcome: str, seconds: float) -> None: ...


def _failed(claimant: Claimant, exc: BaseException) -> Verdict:
    log.error("plugin %s raised while evaluating", claimant.plugin, exc_info=exc)
    return _internal(PLUGIN_ERROR, f"plugin failed: {type(exc).__name__}: {exc}", True)


def _internal(code: str, message: str, retryable: bool) -> Verdict:
    return Verdict(reasons=(Reason(code, message, Cause.INTERNAL, retryable),))


#: Most offers and reasons one plugin may put in an answer; the rest are
#: dropped (with a note), so no plugin can blow an answer past gRPC's limits.
MAX_OFFERS_PER_PLUGIN = 20
MAX_REASONS_PER_PLUGIN = 20


def _capped(plugin: str, verdict: Verdict) -> Verdict:
    offers, reasons = verdict.offers, verdict.reasons
    if len(offers) <= MAX_OFFERS_PER_PLUGIN and len(reasons) <= MAX_REASONS_PER_PLUGIN:
        return verdict
    log.warning("plugin %s gave %d offers, %d reasons; capped", plugin, len(offers), len(reasons))
    kept = (
        reasons[: MAX_REASONS_PER_PLUGIN - 1] if len(reasons) > MAX_REASONS_PER_PLUGIN else reasons
    )
    if len(kept) < len(reasons):
        more = len(reasons) - len(kept)
        kept = (*kept, Reason("MORE_REASONS", f"and {more} more reasons", reasons[-1].cause))
    return Verdict(offers[:MAX_OFFERS_PER_PLUGIN], kept)


def _checked(plugin: str, verdict: object) -> Verdict:
    """Hold a plugin's answer to the contract, so a buggy plugin can only add
    a PLUGIN_ERROR reason, never a malformed or oversized answer."""
    if type(verdict) is Verdict and _well_formed(verdict):
        return _capped(plugin, verdict)
    if not isinstance(verdict, Verdict):
        problem = f"ep_evaluate returned {type(verdict).__name__}, not a Verdict"
    elif not verdict.offers and not verdict.reasons:
        problem = "ep_evaluate declined without giving a reason"
    elif not _well_formed(verdict):
        problem = "ep_evaluate returned offers or reasons with fields of the wrong type"
    else:
        return _capped(plugin, verdict)  # a subclass of Verdict, well formed
    log.error("plugin %s: %s", plugin, problem)
    return _internal(PLUGIN_ERROR, problem, False)


def _well_formed(verdict: Verdict) -> bool:
    return bool(verdict.offers or verdict.reasons) and (
        all(_offer_ok(o) for o in verdict.offers) and all(_reason_ok(r) for r in verdict.reasons)
    )


def _offer_ok(offer: object) -> bool:
    """An Offer whose fields have the types the protocol needs (a plugin's
    float where an int belongs must not fail the whole answer later)."""
    return (
        isinstance(offer, Offer)
        and isinstance(offer.servicetype, str)
        and isinstance(offer.serviceinfo, Mapping)
        and isinstance(offer.message, str)
        and (offer.resources is None or _resources_ok(offer.resources))
    )


def _resources_ok(resources: object) -> bool:
    if not isinstance(resources, Resources):
        return False
    ends = (resources.cores.min, resources.cores.max, resources.memory.min, resources.memory.max)
    return all(v is None or (type(v) is int and 0 <= v < 2**63) for v in ends)


def _reason_ok(reason: object) -> bool:
    return (
        isinstance(reason, Reason)
        and isinstance(reason.code, str)
        and isinstance(reason.message, str)
        and isinstance(reason.field, str)
        and isinstance(reason.cause, Cause)
        and isinstance(reason.retryable, bool)
    )
