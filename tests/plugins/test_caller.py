"""The plugin caller: every hook's call, under a deadline, as one Outcome."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ep_server.model import Cause, Reason, Verdict
from ep_server.plugins.caller import Outcome, PluginCaller, Status
from ep_server.plugins.contract import HOOKS, HookContract
from ep_server.plugins.registry import Impl

NO = Verdict.no(Reason("NOPE", "never", Cause.REQUEST))
SEEN: contextvars.ContextVar[str] = contextvars.ContextVar("seen", default="")


def impl(
    function: Callable[..., Any], plugin: str = "p", hook: str = "ep_evaluate", **rules: Any
) -> Impl[..., Any]:
    contract = HOOKS[hook]
    if rules:
        contract = HookContract(contract.name, contract.arguments, contract.check, **rules)
    is_async = asyncio.iscoroutinefunction(function)
    return Impl(plugin, contract, function, is_async)


@pytest.fixture
def caller() -> Iterator[PluginCaller]:
    made = PluginCaller(threads=4, deadline=0.2)
    yield made
    made.close(wait=0)


def soon(seconds: float = 0.2) -> float:
    return asyncio.get_running_loop().time() + seconds


class Gate:
    """A plain hook that blocks until opened, then returns ``value``."""

    def __init__(self, value: Any = NO) -> None:
        self.open = threading.Event()
        self.value = value
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        self.open.wait(10)
        return self.value


async def test_an_async_hook_answers_in_a_task_of_its_own(caller):
    async def evaluate(query):
        return NO, asyncio.current_task()

    async def checked(query):
        value, task = await evaluate(query)
        assert task is not outer
        return value

    outer = asyncio.current_task()
    [outcome] = await caller.gather([impl(checked)], soon(), "query")
    assert outcome == Outcome("p", Status.OK, NO, seconds=outcome.seconds)


async def test_a_plain_hook_runs_in_a_plugin_thread_in_the_callers_context(caller):
    seen = []

    def evaluate(query):
        seen.append((threading.current_thread().name, SEEN.get()))
        return NO

    SEEN.set("request-7")
    [outcome] = await caller.gather([impl(evaluate)], soon(), "query")
    assert outcome.ok
    assert seen == [("ep-plugin-0", "request-7")]


async def test_a_late_async_hook_is_cancelled(caller):
    cancelled = asyncio.Event()

    async def evaluate(query):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    [outcome] = await caller.gather([impl(evaluate)], soon(0.1), "query")
    assert outcome.status is Status.LATE
    assert "within the deadline (0.2s)" in outcome.problem
    assert 0.09 < outcome.seconds < 0.5
    await asyncio.wait_for(cancelled.wait(), 1)


async def test_every_call_is_made_at_once_under_one_deadline(caller):
    async def slow(query):
        await asyncio.sleep(0.15)
        return NO

    started = time.monotonic()
    outcomes = await caller.gather([impl(slow, f"p{i}") for i in range(3)], soon(1), "q")
    assert [o.status for o in outcomes] == [Status.OK] * 3
    assert time.monotonic() - started < 0.4


@pytest.mark.parametrize("plain", [True, False], ids=["plain", "async"])
async def test_a_raising_hook_is_an_outcome_naming_the_error(caller, plain):
    def boom(query):
        raise ConnectionError("backend down")

    async def aboom(query):
        raise ConnectionError("backend down")

    [outcome] = await caller.gather([impl(boom if plain else aboom)], soon(), "q")
    assert outcome.status is Status.RAISED
    assert outcome.problem == "ConnectionError: backend down"


async def test_an_async_hook_that_cancels_itself_raised(caller):
    async def evaluate(query):
        raise asyncio.CancelledError

    [outcome] = await caller.gather([impl(evaluate)], soon(), "q")
    assert outcome.status is Status.RAISED
    assert "cancelled itself" in outcome.problem


async def test_a_result_outside_the_contract_is_malformed(caller):
    [outcome] = await caller.gather([impl(lambda query: "yes")], soon(), "q")
    assert outcome.status is Status.MALFORMED
    assert outcome.problem == "ep_evaluate returned str, not a Verdict"


async def test_a_plugin_holds_at_most_half_the_threads_over_all_its_hooks(caller):
    gate = Gate()
    try:
        stuck = [impl(gate), impl(gate, hook="ep_resources")]
        first = await caller.gather([stuck[0], stuck[1]], soon(0.05), "q")
        assert [o.status for o in first] == [Status.LATE, Status.LATE]  # 2 of 4 threads held
        [busy] = await caller.gather([stuck[1]], soon(0.05), "q")
        assert busy.status is Status.BUSY
        assert "2 earlier calls of this plugin still hold worker threads" in busy.problem
        [other] = await caller.gather([impl(lambda q: NO, "other")], soon(), "q")
        assert other.ok  # the other plugins are still served
    finally:
        gate.open.set()
    for _ in range(100):
        if caller.busy_threads() == 0:
            break
        await asyncio.sleep(0.01)
    assert caller.busy_threads() == 0
    [again] = await caller.gather([stuck[0]], soon(), "q")
    assert again.ok  # its threads are its own again once the calls return


def test_one_late_call_bars_the_hook_until_it_returns(caller):
    gate = Gate(value=None)
    slot = impl(gate, hook="ep_slot", one_late_call=True)
    try:
        late = caller.call_blocking(slot, 0.05, "q", "slot")
        assert late.status is Status.LATE
        barred = caller.call_blocking(slot, 0.05, "q", "slot")
        assert barred.status is Status.BUSY
        assert gate.calls == 1  # refused uncalled
    finally:
        gate.open.set()
    time.sleep(0.1)
    assert caller.call_blocking(slot, 1, "q", "slot").ok


def test_a_call_longer_than_the_whole_deadline_trips_a_cooldown(caller):
    def slow(query, slot):
        time.sleep(0.3)  # past the caller's deadline (0.2 s)

    slot = impl(slow, hook="ep_slot", one_late_call=True, cooldown=0.4)
    assert caller.call_blocking(slot, 1, "q", "slot").ok
    cooling = caller.call_blocking(slot, 1, "q", "slot")
    assert cooling.status is Status.BUSY
    assert "refused for a while" in cooling.problem
    time.sleep(0.45)
    quick = impl(lambda query, slot: None, hook="ep_slot", cooldown=0.4)
    assert caller.call_blocking(quick, 1, "q", "slot").ok


def test_blocking_calls_of_an_async_hook_are_refused(caller):
    async def slot(query, slot):
        return None

    outcome = caller.call_blocking(impl(slot, hook="ep_slot"), 1, "q", "slot")
    assert outcome.status is Status.RAISED
    assert "must be a plain function" in outcome.problem


def test_a_queued_call_that_times_out_never_runs_and_holds_nothing():
    caller = PluginCaller(threads=2, deadline=0.2)  # a share of one thread each
    gates = [Gate(), Gate()]
    try:
        for i, gate in enumerate(gates):  # both threads taken, by two plugins
            assert caller.call_blocking(impl(gate, f"p{i}"), 0.02, "q").status is Status.LATE
        queued = Gate()
        assert caller.call_blocking(impl(queued, "p2"), 0.05, "q").status is Status.LATE
        assert queued.calls == 0
        assert caller.busy_threads() == 2  # the queued call was cancelled, not left waiting
    finally:
        for gate in gates:
            gate.open.set()
        caller.close(wait=1)


async def test_a_cancelled_gather_cancels_its_calls(caller):
    cancelled = asyncio.Event()

    async def evaluate(query):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    waiting = asyncio.ensure_future(caller.gather([impl(evaluate)], soon(5), "q"))
    await asyncio.sleep(0.05)
    waiting.cancel()
    await asyncio.wait_for(cancelled.wait(), 1)


def test_closing_leaves_stuck_calls_behind_on_daemon_threads(caplog):
    caller = PluginCaller(threads=2, deadline=0.1)
    gate = Gate()
    try:
        caller.call_blocking(impl(gate), 0.02, "q")
        started = time.monotonic()
        caller.close(wait=0.1)
        assert time.monotonic() - started < 1
        assert "1 plugin thread(s) still running (ep-plugin-0)" in caplog.text
        assert all(t.daemon for t in threading.enumerate() if t.name.startswith("ep-plugin"))
    finally:
        gate.open.set()


def test_a_plain_call_ending_as_its_loop_closes_raises_nothing_in_its_thread():
    # The loop can close between _job_ended's check and its hand-over; the
    # worker thread then has nobody to tell, and must not fail.
    from ep_server.plugins import caller as caller_module

    class ClosingLoop:
        def create_future(self) -> object:
            return object()

        def is_closed(self) -> bool:
            return False  # still open when checked...

        def call_soon_threadsafe(self, *args: object) -> None:
            raise RuntimeError("Event loop is closed")  # ...closed when called

    wait = caller_module._Wait(ClosingLoop())  # type: ignore[arg-type]
    job: concurrent.futures.Future[None] = concurrent.futures.Future()
    wait._job_ended(job)  # no exception
