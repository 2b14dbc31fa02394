"""Consulting the claimants of an Ask: each async plugin in a task of its
own, one deadline, every failure a reason, every call measured.

Most plugins answer in their task's first step; the planner collects those
after one turn of the event loop, with no timer, and waits under the
deadline only for those still running then. These tests hold both kinds of
plugin, alone and mixed, to the same guarantees.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import pytest

from ep_server import Cause, Claim, Offer, Reason, TaskQuery, Verdict, hookimpl
from ep_server.planner import Planner
from ep_server.plugins import PluginCaller

TASK = "uri://task"
QUERY = TaskQuery(TASK, {"image": "x"})


class Recorder:
    """The planner's metrics: what it reports per plugin call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    def plugin(self, plugin: str, outcome: str, seconds: float) -> None:
        self.calls.append((plugin, outcome, seconds))

    def by_plugin(self) -> dict[str, tuple[str, float]]:
        return {plugin: (outcome, seconds) for plugin, outcome, seconds in self.calls}


class Plugin:
    """An async ep_evaluate that does what ``how`` says, in its first step
    or after waiting ``wait`` seconds; it records the task it ran in and
    whether it was cancelled."""

    def __init__(self, how: str = "yes", wait: float | None = None, busy: float = 0.0) -> None:
        self.how, self.wait, self.busy = how, wait, busy
        self.tasks: list[asyncio.Task[Any] | None] = []
        self.cancelled = False

    @hookimpl
    def ep_claims(self) -> list[Claim]:
        return [Claim(TASK)]

    @hookimpl
    async def ep_evaluate(self, query: TaskQuery) -> Any:
        self.tasks.append(asyncio.current_task())
        if self.busy:  # works without waiting, holding the loop
            time.sleep(self.busy)  # noqa: ASYNC251  # the point: a step that does not yield
        if self.wait is not None:
            try:
                await asyncio.sleep(self.wait)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        if self.how == "raise":
            raise RuntimeError("plugin bug")
        if self.how == "nonsense":
            return "YES"
        if self.how == "cancel-itself":
            raise asyncio.CancelledError
        if self.how == "no":
            return Verdict.no(Reason("NOPE", "never", Cause.POLICY))
        return Verdict.yes(Offer("uri://service", {"endpoint": "http://example.org"}))


@pytest.fixture
def planner_of(registry_of):
    made: list[Planner] = []

    def build(deadline: float = 1.0, **plugins: Any) -> tuple[Planner, Recorder]:
        metrics = Recorder()
        made.append(Planner(registry_of(**plugins), PluginCaller(deadline=deadline), metrics))
        return made[-1], metrics

    yield build
    for planner in made:
        planner.caller.close()


@pytest.fixture
async def timers(monkeypatch):
    """The timers the running loop is asked for (``call_at``)."""
    loop = asyncio.get_running_loop()
    armed: list[float] = []
    call_at = loop.call_at

    def counting(when: float, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        armed.append(when)
        return call_at(when, *args, **kwargs)

    monkeypatch.setattr(loop, "call_at", counting)
    return armed


def codes(answer) -> list[tuple[str, str]]:
    return sorted((plugin, reason.code) for plugin, reason in answer.reasons)


async def test_a_claimant_answering_at_once_runs_in_a_task_of_its_own(planner_of, timers):
    plugin = Plugin()
    planner, metrics = planner_of(only=plugin)
    answer = await planner.ask(QUERY)
    assert [(p, o.servicetype) for p, o in answer.offers] == [("only", "uri://service")]
    [task] = plugin.tasks
    assert task is not None
    assert task is not asyncio.current_task()
    assert task.done()
    [(name, outcome, seconds)] = metrics.calls
    assert (name, outcome) == ("only", "yes")
    assert 0 < seconds < 0.5
    assert timers == []  # collected after the loop's turn: no timer was needed


async def test_every_claimant_has_a_task_of_its_own(planner_of):
    plugins = {f"p{i}": Plugin() for i in range(4)}
    planner, _ = planner_of(**plugins)
    answer = await planner.ask(QUERY)
    assert len(answer.offers) == 4
    tasks = [plugin.tasks[0] for plugin in plugins.values()]
    assert len(set(map(id, tasks))) == 4
    assert asyncio.current_task() not in tasks


async def test_a_claimant_working_without_waiting_is_measured(planner_of):
    planner, metrics = planner_of(busy=Plugin(busy=0.05))
    await planner.ask(QUERY)
    [(_, outcome, seconds)] = metrics.calls
    assert outcome == "yes"
    assert 0.05 <= seconds < 0.5


@pytest.mark.skipif(
    sys.version_info < (3, 12),
    reason="tasks start eagerly from Python 3.12; on 3.11 every claimant's first step "
    "runs on the loop's next turn, after all of them were started",
)
async def test_an_eager_claimant_is_not_charged_for_the_claimants_started_after_it(planner_of):
    # One quick claimant comes before the busy one whether the registry
    # gives them in the order of their names or in its reverse.
    planner, metrics = planner_of(a=Plugin(), b_busy=Plugin(busy=0.05), c=Plugin())
    await planner.ask(QUERY)
    seconds = metrics.by_plugin()
    assert seconds["b_busy"][1] >= 0.05
    assert min(seconds["a"][1], seconds["c"][1]) < 0.025


async def test_a_claimant_that_waits_is_waited_for_under_the_deadline(planner_of, timers):
    planner, metrics = planner_of(deadline=2, waits=Plugin(wait=0.05))
    started = asyncio.get_running_loop().time()
    answer = await planner.ask(QUERY)
    assert [p for p, _ in answer.offers] == ["waits"]
    # One timer at the deadline (the plugin's own sleep has another).
    assert [t for t in timers if t > started + 1] == [pytest.approx(started + 2, abs=0.05)]
    [(_, outcome, seconds)] = metrics.calls
    assert outcome == "yes"
    assert 0.05 <= seconds < 1


async def test_a_late_claimant_is_a_timeout_and_is_cancelled(planner_of):
    late = Plugin(wait=30)
    planner, metrics = planner_of(deadline=0.1, late=late)
    started = time.monotonic()
    answer = await planner.ask(QUERY)
    assert time.monotonic() - started < 1
    [(plugin, reason)] = answer.reasons
    assert (plugin, reason.code, reason.retryable) == ("late", "PLUGIN_TIMEOUT", True)
    [(_, outcome, seconds)] = metrics.calls
    assert outcome == "timeout"
    assert 0.09 < seconds < 1
    await asyncio.sleep(0.01)  # the cancellation is delivered on the loop's next turn
    assert late.cancelled


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("raise", "plugin failed: RuntimeError: plugin bug"),
        ("nonsense", "ep_evaluate returned str, not a Verdict"),
        ("cancel-itself", "plugin failed: CancelledError: the plugin cancelled itself"),
    ],
)
@pytest.mark.parametrize("wait", [None, 0.01], ids=["at-once", "after-waiting"])
async def test_a_failing_claimant_is_a_reason_logged_and_counted(
    planner_of, caplog, how, message, wait
):
    planner, metrics = planner_of(odd=Plugin(how, wait=wait))
    answer = await planner.ask(QUERY)
    assert not answer.offers
    [(plugin, reason)] = answer.reasons
    assert (plugin, reason.code, reason.cause) == ("odd", "PLUGIN_ERROR", Cause.INTERNAL)
    assert reason.message == message
    assert [(p, o) for p, o, _ in metrics.calls] == [("odd", "error")]
    assert "plugin odd: " in caplog.text


async def test_a_cancelled_ask_cancels_a_claimant_made_on_the_same_turn(planner_of):
    waiting = Plugin(wait=30)
    planner, _ = planner_of(deadline=10, waiting=waiting)
    asking = asyncio.ensure_future(planner.ask(QUERY))
    await asyncio.sleep(0)  # the Ask has made the plugin's task and waits for a turn
    if sys.version_info < (3, 12):  # no eager start: the task has not taken its first step
        assert waiting.tasks == []
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    [task] = waiting.tasks  # it took its first step, then was cancelled
    assert task is not None
    await asyncio.sleep(0.01)
    assert waiting.cancelled
    assert task.cancelled()


async def test_a_cancelled_ask_cancels_a_waiting_claimant(planner_of):
    waiting = Plugin(wait=30)
    planner, _ = planner_of(deadline=10, waiting=waiting, quick=Plugin())
    asking = asyncio.ensure_future(planner.ask(QUERY))
    await asyncio.sleep(0.05)
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    await asyncio.sleep(0.01)
    assert waiting.cancelled


async def test_mixed_claimants_each_come_to_their_own_outcome(planner_of, caplog):
    planner, metrics = planner_of(
        deadline=0.3,
        at_once=Plugin(),
        declines=Plugin("no"),
        waits=Plugin(wait=0.05),
        late=Plugin(wait=30),
        raises=Plugin("raise"),
        nonsense=Plugin("nonsense", wait=0.01),
        cancels=Plugin("cancel-itself"),
    )
    started = time.monotonic()
    answer = await planner.ask(QUERY)
    assert time.monotonic() - started < 1.5
    assert sorted(p for p, _ in answer.offers) == ["at_once", "waits"]
    assert codes(answer) == [
        ("cancels", "PLUGIN_ERROR"),
        ("declines", "NOPE"),
        ("late", "PLUGIN_TIMEOUT"),
        ("nonsense", "PLUGIN_ERROR"),
        ("raises", "PLUGIN_ERROR"),
    ]
    seen = metrics.by_plugin()
    assert {p: o for p, (o, _) in seen.items()} == {
        "at_once": "yes",
        "declines": "no",
        "waits": "yes",
        "late": "timeout",
        "raises": "error",
        "nonsense": "error",
        "cancels": "error",
    }
    # Each is measured to its own end, not to the end of the whole wait.
    assert seen["at_once"][1] < 0.2
    assert 0.05 <= seen["waits"][1] < 0.25
    assert seen["late"][1] >= 0.29


async def test_async_and_plain_claimants_together(planner_of):
    class Plain:
        @hookimpl
        def ep_claims(self) -> list[Claim]:
            return [Claim(TASK)]

        @hookimpl
        def ep_evaluate(self) -> Verdict:
            time.sleep(0.02)  # in a worker thread: the loop is free meanwhile
            return Verdict.yes(Offer("uri://plain"))

    planner, metrics = planner_of(plain=Plain(), quick=Plugin(), waits=Plugin(wait=0.01))
    answer = await planner.ask(QUERY)
    assert sorted(p for p, _ in answer.offers) == ["plain", "quick", "waits"]
    seen = metrics.by_plugin()
    assert seen["plain"][0] == "yes"
    assert seen["plain"][1] >= 0.02
    assert seen["quick"][1] < seen["plain"][1]


async def test_the_callers_budget_holds_when_shorter_than_the_deadline(planner_of):
    late = Plugin(wait=30)
    planner, metrics = planner_of(deadline=10, late=late, quick=Plugin())
    started = time.monotonic()
    answer = await planner.ask(QUERY, budget=0.1)
    assert time.monotonic() - started < 1
    assert [p for p, _ in answer.offers] == ["quick"]
    assert codes(answer) == [("late", "PLUGIN_TIMEOUT")]
    assert 0.09 < metrics.by_plugin()["late"][1] < 1


@pytest.mark.parametrize("budget", [0.0, -1.0])
async def test_no_budget_left_leaves_no_time_for_waiting(planner_of, budget):
    planner, _ = planner_of(deadline=10, late=Plugin(wait=0.5), quick=Plugin())
    started = time.monotonic()
    answer = await planner.ask(QUERY, budget=budget)
    assert time.monotonic() - started < 0.3
    assert [p for p, _ in answer.offers] == ["quick"]  # its first step came before the deadline
    assert codes(answer) == [("late", "PLUGIN_TIMEOUT")]


async def test_every_ask_consults_every_claimant(planner_of):
    first, second = Plugin(), Plugin("no")
    planner, metrics = planner_of(first=first, second=second)
    for _ in range(3):
        answer = await planner.ask(QUERY)
        assert [p for p, _ in answer.offers] == ["first"]
    assert len(first.tasks) == len(second.tasks) == 3
    assert len(metrics.calls) == 6


async def test_a_plugins_own_timeout_in_its_first_step_stays_its_own(planner_of):
    class OwnTimeout:
        @hookimpl
        def ep_claims(self) -> list[Claim]:
            return [Claim(TASK)]

        @hookimpl
        async def ep_evaluate(self) -> Verdict:
            try:
                async with asyncio.timeout(0.02):  # its own task's timeout
                    await asyncio.sleep(10)
            except TimeoutError:
                return Verdict.no(Reason("BACKEND_SLOW", "the backend did not answer"))
            return Verdict.yes(Offer("uri://never"))

    planner, _ = planner_of(deadline=2, own=OwnTimeout(), quick=Plugin())
    answer = await asyncio.wait_for(planner.ask(QUERY), 1)
    assert [p for p, _ in answer.offers] == ["quick"]
    assert codes(answer) == [("own", "BACKEND_SLOW")]
    assert asyncio.current_task().cancelling() == 0  # the asker was never cancelled


class Plain:
    """A plain ep_evaluate (run in a worker thread) that sleeps, then says yes."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    @hookimpl
    def ep_claims(self) -> list[Claim]:
        return [Claim(TASK)]

    @hookimpl
    def ep_evaluate(self) -> Verdict:
        self.calls += 1
        time.sleep(self.seconds)
        return Verdict.yes(Offer("uri://plain"))


async def test_a_plain_claimant_is_measured_to_its_own_end(planner_of):
    planner, metrics = planner_of(deadline=0.3, plain=Plain(0.02), late=Plugin(wait=30))
    answer = await planner.ask(QUERY)
    assert [p for p, _ in answer.offers] == ["plain"]
    seen = metrics.by_plugin()
    assert 0.02 <= seen["plain"][1] < 0.2
    assert seen["late"] == ("timeout", pytest.approx(0.3, abs=0.2))


async def test_a_plain_claimant_past_the_deadline_holds_its_thread_until_it_returns(planner_of):
    slow = Plain(0.3)
    planner, metrics = planner_of(deadline=0.05, slow=slow)
    answer = await planner.ask(QUERY)
    assert codes(answer) == [("slow", "PLUGIN_TIMEOUT")]
    assert metrics.by_plugin()["slow"][0] == "timeout"
    assert planner.caller.busy_threads() == 1
    for _ in range(100):
        await asyncio.sleep(0.01)
        if planner.caller.busy_threads() == 0:
            break
    assert planner.caller.busy_threads() == 0
    assert slow.calls == 1


async def test_a_cancelled_ask_cancels_its_queued_plain_call(registry_of):
    class Gate:
        """A plain ep_evaluate that blocks until opened."""

        def __init__(self) -> None:
            self.open = threading.Event()
            self.calls = 0

        @hookimpl
        def ep_claims(self) -> list[Claim]:
            return [Claim(TASK)]

        @hookimpl
        def ep_evaluate(self) -> Verdict:
            self.calls += 1
            self.open.wait(10)
            return Verdict.yes(Offer("uri://gate"))

    gates = [Gate(), Gate()]
    queued = Plain(0)
    registry = registry_of(g0=gates[0], g1=gates[1], queued=queued)
    # Two threads, each held by a gate: the third plugin's call waits in the queue.
    planner = Planner(registry, PluginCaller(threads=2, deadline=10))
    try:
        asking = asyncio.ensure_future(planner.ask(QUERY))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if gates[0].calls and gates[1].calls:
                break
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
    finally:
        for gate in gates:
            gate.open.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if planner.caller.busy_threads() == 0:
            break
    assert planner.caller.busy_threads() == 0
    assert queued.calls == 0  # cancelled in the queue: it never ran
    planner.caller.close()
