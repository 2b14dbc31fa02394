"""The planner answers a :class:`TaskQuery`: no gRPC, no protobuf.

It looks up the plugins that claim the task type, consults them
concurrently, each under a deadline, and merges their offers and reasons. A
plugin that raises, returns nonsense or runs late adds a reason and never
takes the answer, or the server, down with it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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

    def __init__(self, registry: Registry, deadline: float, threads: int = 8) -> None:
        self.registry = registry
        self.deadline = deadline
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="ep-plugin")
        claimed = sorted(registry.index)
        self._claimed_hint = ", ".join(claimed[:10]) + (", ..." if len(claimed) > 10 else "")

    def close(self) -> None:
        """Stop the worker threads (without waiting for stuck plugins)."""
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def ask(self, query: TaskQuery, budget: float | None = None) -> Answer:
        """Answer ``query``; ``budget`` (seconds) may shorten the per-plugin
        deadline, for example to fit the caller's own gRPC deadline."""
        claimants = self.registry.claimants(query.tasktype)
        if not claimants:
            return Answer((), (("", self._unsupported(query.tasktype)),))
        limit = self.deadline if budget is None else max(0.0, min(self.deadline, budget))
        if len(claimants) == 1:
            verdicts: Sequence[Verdict] = [await self._consult(claimants[0], query, limit)]
        else:
            verdicts = await asyncio.gather(*(self._consult(c, query, limit) for c in claimants))
        offers: list[tuple[str, Offer]] = []
        reasons: list[tuple[str, Reason]] = []
        for claimant, verdict in zip(claimants, verdicts, strict=True):
            offers.extend((claimant.plugin, o) for o in verdict.offers)
            reasons.extend((claimant.plugin, r) for r in verdict.reasons)
        return Answer(offers, reasons)

    def _unsupported(self, tasktype: str) -> Reason:
        hint = f"; it claims: {self._claimed_hint}" if self._claimed_hint else ""
        return Reason(
            UNSUPPORTED_TASK_TYPE,
            f"no plugin on this site claims task type {tasktype!r}{hint}",
            Cause.REQUEST,
            field="tasktype",
        )

    async def _consult(self, claimant: Claimant, query: TaskQuery, limit: float) -> Verdict:
        try:
            async with asyncio.timeout(limit):
                if claimant.is_async:
                    verdict = await claimant.evaluate(query=query)
                else:
                    loop = asyncio.get_running_loop()
                    call = functools.partial(claimant.evaluate, query=query)
                    verdict = await loop.run_in_executor(self._executor, call)
        except TimeoutError:
            log.warning("plugin %s ran past its %.3gs deadline", claimant.plugin, limit)
            return _internal(PLUGIN_TIMEOUT, f"plugin did not answer within {limit:.3g}s", True)
        except Exception as exc:
            log.exception("plugin %s raised while evaluating %s", claimant.plugin, query.tasktype)
            return _internal(PLUGIN_ERROR, f"plugin failed: {type(exc).__name__}: {exc}", True)
        return _checked(claimant.plugin, verdict)


def _internal(code: str, message: str, retryable: bool) -> Verdict:
    return Verdict(reasons=(Reason(code, message, Cause.INTERNAL, retryable),))


def _checked(plugin: str, verdict: object) -> Verdict:
    """Hold a plugin's answer to the contract, so a buggy plugin can only add
    a PLUGIN_ERROR reason, never a malformed answer."""
    problem = None
    if not isinstance(verdict, Verdict):
        problem = f"ep_evaluate returned {type(verdict).__name__}, not a Verdict"
    elif not verdict.offers and not verdict.reasons:
        problem = "ep_evaluate declined without giving a reason"
    elif not all(isinstance(o, Offer) for o in verdict.offers) or not all(
        isinstance(r, Reason) for r in verdict.reasons
    ):
        problem = "ep_evaluate returned offers or reasons of the wrong type"
    if problem is None:
        return verdict  # type: ignore[return-value]
    log.error("plugin %s: %s", plugin, problem)
    return _internal(PLUGIN_ERROR, problem, False)
