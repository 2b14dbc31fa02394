"""The planner answers a :class:`TaskQuery`: no gRPC, no protobuf.

It looks up the plugins that claim the task type, consults them
concurrently, each under a deadline, and merges their offers and reasons. A
plugin that raises, returns nonsense or runs late adds a reason and never
takes the answer, or the server, down with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, cast

from ep_server.booking import HeldOffer
from ep_server.model import Cause, Offer, Reason, TaskQuery, Verdict
from ep_server.plugins import Claimant, Registry

__all__ = ["Answer", "Planner"]

log = logging.getLogger(__name__)

#: Reason codes the EP core itself gives.
UNSUPPORTED_TASK_TYPE = "UNSUPPORTED_TASK_TYPE"
PLUGIN_ERROR = "PLUGIN_ERROR"
PLUGIN_TIMEOUT = "PLUGIN_TIMEOUT"


@dataclass(frozen=True, slots=True)
class Answer:
    """The merged verdict: offers and reasons, each with the plugin that gave
    it (``""`` for the EP core)."""

    offers: Sequence[tuple[str, Offer]]
    reasons: Sequence[tuple[str, Reason]]
    #: For an Ask with a schedule: the time-slot offers, which replace
    #: ``offers`` in the answer (see :mod:`ep_server.scheduler`).
    held: Sequence[HeldOffer] = ()

    @property
    def yes(self) -> bool:
        """True when at least one plugin made an offer."""
        return bool(self.offers)


class Planner:
    """Answers queries from a :class:`Registry` of loaded plugins.

    :param deadline: seconds each plugin may take on one query.
    :param threads: worker threads for plugins whose ``ep_evaluate`` is a
        plain (blocking) function.
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
        # When each pending plugin call started, for its latency metric.
        self._started: dict[asyncio.Future[Any], float] = {}
        claimed = sorted(registry.index)
        self._claimed_hint = ", ".join(claimed[:10]) + (", ..." if len(claimed) > 10 else "")

    def close(self) -> None:
        """Stop the worker threads (without waiting for stuck plugins)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def ask(self, query: TaskQuery, budget: float | None = None) -> Answer:
        """Answer ``query``; ``budget`` (seconds) may shorten the per-plugin
        deadline, for example to fit the caller's own gRPC deadline."""
        limit = self.deadline if budget is None else max(0.0, min(self.deadline, budget))
        if self.registry.policies:
            refusals = await self._policies(query, limit)
            if refusals:
                return Answer((), refusals)
        claimants = self.registry.claimants(query.tasktype)
        if not claimants:
            return Answer((), (("", self._unsupported(query.tasktype)),))
        verdicts: list[Verdict | None] = []
        pending: dict[asyncio.Future[Any], int] = {}
        for claimant in claimants:
            started = self._start(claimant, query)
            if isinstance(started, Verdict):
                verdicts.append(started)
            else:
                pending[started] = len(verdicts)
                verdicts.append(None)
        if pending:
            await self._wait(claimants, pending, limit, verdicts)
        pairs = list(zip(claimants, cast("list[Verdict]", verdicts), strict=True))
        offers = [(c.plugin, o) for c, v in pairs for o in v.offers]
        reasons = [(c.plugin, r) for c, v in pairs for r in v.reasons]
        return Answer(offers, reasons)

    def _start(self, claimant: Claimant, query: TaskQuery) -> Verdict | asyncio.Future[Any]:
        """Start one plugin: a Verdict if it finished at once, else a future.

        Coroutines run eagerly until their first real suspension: a plugin
        that decides without awaiting anything (the common case) costs no
        task and no timer. Plain functions go to the worker threads.
        """
        started = time.perf_counter()
        if not claimant.is_async:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, claimant.evaluate, query)
            self._started[future] = started
            return future
        try:
            coro = claimant.evaluate(query)
            first = coro.send(None)
        except StopIteration as done:
            verdict = _checked(claimant.plugin, done.value)
        except Exception as exc:
            verdict = _failed(claimant, exc)
        else:
            task = asyncio.ensure_future(_Resumed(coro, first))
            self._started[task] = started
            return task
        self._observe(claimant.plugin, verdict, started)
        return verdict

    def _observe(self, plugin: str, verdict: Verdict, started: float) -> None:
        if self.metrics is not None:
            self.metrics.plugin(plugin, _outcome(verdict), time.perf_counter() - started)

    async def _wait(
        self,
        claimants: Sequence[Claimant],
        pending: dict[asyncio.Future[Any], int],
        limit: float,
        verdicts: list[Verdict | None],
    ) -> None:
        """Wait for the started plugins until the deadline; late ones are
        cancelled (coroutines) or abandoned (threads) and get a reason."""
        try:
            done, late = await asyncio.wait(pending, timeout=limit)
        except asyncio.CancelledError:
            # The call itself was cancelled (the client went away): stop the
            # plugins' work too, and forget their start times.
            for future in pending:
                future.cancel()
                self._started.pop(future, None)
            raise
        for future in late:
            future.cancel()
            claimant = claimants[pending[future]]
            log.warning("plugin %s ran past its %.3gs deadline", claimant.plugin, limit)
            message = f"plugin did not answer within {limit:.3g}s"
            verdicts[pending[future]] = _internal(PLUGIN_TIMEOUT, message, True)
        for future in done:
            claimant = claimants[pending[future]]
            exc = future.exception()
            if exc is None:
                verdicts[pending[future]] = _checked(claimant.plugin, future.result())
            else:
                verdicts[pending[future]] = _failed(claimant, exc)
        for future, i in pending.items():
            verdict = verdicts[i]
            assert verdict is not None
            self._observe(claimants[i].plugin, verdict, self._started.pop(future))

    async def _policies(self, query: TaskQuery, limit: float) -> list[tuple[str, Reason]]:
        """Every policy's refusals (none: the query may proceed). A policy
        that fails or runs late refuses: policy fails closed."""
        refusals: list[tuple[str, Reason]] = []
        for policy in self.registry.policies:
            try:
                result = policy.evaluate(query)
                if policy.is_async:
                    result = await asyncio.wait_for(result, limit)
                reasons = _policy_reasons(result)
            except TimeoutError:
                message = f"policy did not decide within {limit:.3g}s"
                reasons = [Reason(PLUGIN_TIMEOUT, message, Cause.INTERNAL, True)]
            except Exception as exc:
                log.error("policy of plugin %s raised", policy.plugin, exc_info=exc)
                message = f"policy failed: {type(exc).__name__}: {exc}"
                reasons = [Reason(PLUGIN_ERROR, message, Cause.INTERNAL, True)]
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
    return {PLUGIN_ERROR: "error", PLUGIN_TIMEOUT: "timeout"}.get(code, "no")


class PluginMetrics(Protocol):
    """What the planner reports per plugin evaluation (see ep_server.metrics)."""

    def plugin(self, plugin: str, outcome: str, seconds: float) -> None: ...


class _Resumed:
    """Awaitable that carries on a coroutine already stepped once by hand,
    passing through what it yields, so an asyncio Task can drive the rest."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, Any], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        value = self._first
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # cancellation and errors go to the plugin
                try:
                    value = self._coro.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    value = self._coro.send(sent)
                except StopIteration as done:
                    return done.value


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
        problem = "ep_evaluate returned offers or reasons of the wrong type"
    else:
        return _capped(plugin, verdict)  # a subclass of Verdict, well formed
    log.error("plugin %s: %s", plugin, problem)
    return _internal(PLUGIN_ERROR, problem, False)


def _well_formed(verdict: Verdict) -> bool:
    return bool(verdict.offers or verdict.reasons) and (
        all(isinstance(o, Offer) for o in verdict.offers)
        and all(isinstance(r, Reason) for r in verdict.reasons)
    )
