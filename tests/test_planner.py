"""The planner core: no gRPC, no protobuf."""

from __future__ import annotations

import asyncio
import time

import pytest
from fake_plugins.common import BlockingSync, Declining, Offering, Raising, Returning, SlowAsync

from ep_server import Cause, Claim, IntRange, Offer, Reason, Resources, TaskQuery, Verdict, hookimpl
from ep_server.planner import Planner
from ep_server.plugins import PluginCaller

DOCKER = "uri://docker-container"


@pytest.fixture
def planner_of(registry_of):
    made = []

    def build(deadline=1.0, **plugins):
        made.append(Planner(registry_of(**plugins), PluginCaller(deadline=deadline)))
        return made[-1]

    yield build
    for planner in made:
        planner.caller.close()


async def test_only_claimants_are_consulted(planner_of):
    docker, jupyter = Offering("uri://docker-uws", DOCKER), Offering("uri://hub", "uri://jupyter")
    answer = await planner_of(docker=docker, jupyter=jupyter).ask(TaskQuery(DOCKER))
    assert answer.yes
    assert [(p, o.servicetype) for p, o in answer.offers] == [("docker", "uri://docker-uws")]
    assert len(docker.calls) == 1
    assert jupyter.calls == []


async def test_offers_of_several_claimants_are_merged(planner_of):
    planner = planner_of(
        a=Offering("uri://docker-uws", DOCKER),
        b=Offering("uri://rosetta-rest-api", DOCKER, "uri://other"),
    )
    answer = await planner.ask(TaskQuery(DOCKER, {"image": "x"}))
    assert {o.servicetype for _, o in answer.offers} == {
        "uri://docker-uws",
        "uri://rosetta-rest-api",
    }
    assert answer.reasons == []


async def test_unknown_tasktype_is_a_no_with_a_reason(planner_of):
    answer = await planner_of(a=Offering("uri://docker-uws", DOCKER)).ask(TaskQuery("uri://nope"))
    assert not answer.yes
    [(plugin, reason)] = answer.reasons
    assert plugin == ""
    assert reason.code == "UNSUPPORTED_TASK_TYPE"
    assert reason.cause is Cause.REQUEST
    assert reason.field == "tasktype"
    assert DOCKER in reason.message  # tells the caller what this site does claim


async def test_every_decliner_contributes_its_reasons(planner_of):
    r1 = Reason("TOO_BIG", "too big", Cause.CAPACITY, retryable=True)
    r2, r3 = Reason("POLICY_A", "a", Cause.POLICY), Reason("POLICY_B", "b", Cause.POLICY)
    planner = planner_of(
        one=Declining(DOCKER, reasons=(r1,)), two=Declining(DOCKER, reasons=(r2, r3))
    )
    answer = await planner.ask(TaskQuery(DOCKER))
    assert not answer.yes
    assert sorted((p, r.code) for p, r in answer.reasons) == [
        ("one", "TOO_BIG"),
        ("two", "POLICY_A"),
        ("two", "POLICY_B"),
    ]


async def test_a_yes_keeps_the_reasons_of_those_who_declined(planner_of):
    planner = planner_of(yes=Offering("uri://docker-uws", DOCKER), no=Declining(DOCKER))
    answer = await planner.ask(TaskQuery(DOCKER))
    assert answer.yes
    assert [(p, r.code) for p, r in answer.reasons] == [("no", "NOPE")]


async def test_a_raising_plugin_adds_a_reason_and_others_still_offer(planner_of, caplog):
    planner = planner_of(bad=Raising(DOCKER), good=Offering("uri://docker-uws", DOCKER))
    answer = await planner.ask(TaskQuery(DOCKER))
    assert [p for p, _ in answer.offers] == ["good"]
    [(plugin, reason)] = answer.reasons
    assert (plugin, reason.code, reason.cause) == ("bad", "PLUGIN_ERROR", Cause.INTERNAL)
    assert "plugin bug" in reason.message
    assert "bad" in caplog.text


@pytest.mark.parametrize(
    "result",
    ["YES", None, Verdict(), Verdict(offers=("not an offer",))],  # type: ignore[arg-type]
    ids=["string", "none", "empty-verdict", "bad-offer"],
)
async def test_a_malformed_verdict_becomes_a_plugin_error(planner_of, result):
    answer = await planner_of(odd=Returning(DOCKER, result)).ask(TaskQuery(DOCKER))
    assert not answer.yes
    assert [(p, r.code) for p, r in answer.reasons] == [("odd", "PLUGIN_ERROR")]


async def test_a_slow_async_plugin_is_cancelled_at_the_deadline(planner_of):
    slow = SlowAsync(DOCKER, seconds=30)
    planner = planner_of(deadline=0.2, slow=slow, fast=Offering("uri://docker-uws", DOCKER))
    started = time.monotonic()
    answer = await planner.ask(TaskQuery(DOCKER))
    elapsed = time.monotonic() - started
    assert elapsed < 2.0
    assert [p for p, _ in answer.offers] == ["fast"]
    assert [(p, r.code, r.retryable) for p, r in answer.reasons] == [
        ("slow", "PLUGIN_TIMEOUT", True)
    ]
    await asyncio.sleep(0.05)  # cancellation is delivered on the loop's next turns
    assert slow.cancelled


async def test_a_blocking_sync_plugin_cannot_hold_the_ask(planner_of):
    blocking = BlockingSync(DOCKER)
    planner = planner_of(deadline=0.2, blocking=blocking)
    try:
        started = time.monotonic()
        answer = await planner.ask(TaskQuery(DOCKER))
        assert time.monotonic() - started < 2.0
        assert [r.code for _, r in answer.reasons] == ["PLUGIN_TIMEOUT"]
        # The event loop was never blocked: other work ran meanwhile.
        assert await asyncio.wait_for(asyncio.sleep(0, "alive"), 1) == "alive"
    finally:
        blocking.release.set()


async def test_the_callers_budget_shortens_the_deadline(planner_of):
    planner = planner_of(deadline=10, slow=SlowAsync(DOCKER, seconds=30))
    started = time.monotonic()
    answer = await planner.ask(TaskQuery(DOCKER), budget=0.1)
    assert time.monotonic() - started < 2.0
    assert [r.code for _, r in answer.reasons] == ["PLUGIN_TIMEOUT"]


async def test_a_plugin_that_awaits_is_resumed_correctly(planner_of):
    # Eagerly started, then suspended on a real future: the rest of it must
    # run under a task and its result must come back intact.
    answer = await planner_of(deadline=5, wait=SlowAsync(DOCKER, 0.05)).ask(TaskQuery(DOCKER))
    assert [(p, o.servicetype) for p, o in answer.offers] == [("wait", "uri://slow")]


async def test_a_plugin_raising_after_awaiting_is_a_plugin_error(planner_of):
    class LateRaise:
        @hookimpl
        def ep_claims(self):
            return [Claim(DOCKER)]

        @hookimpl
        async def ep_evaluate(self):
            await asyncio.sleep(0.01)
            raise ValueError("late")

    answer = await planner_of(late=LateRaise()).ask(TaskQuery(DOCKER))
    assert [(p, r.code) for p, r in answer.reasons] == [("late", "PLUGIN_ERROR")]
    assert "late" in answer.reasons[0][1].message


async def test_concurrent_claimants_run_in_parallel(planner_of):
    planner = planner_of(deadline=5, **{f"p{i}": SlowAsync(DOCKER, 0.3) for i in range(5)})
    started = time.monotonic()
    answer = await planner.ask(TaskQuery(DOCKER))
    assert len(answer.offers) == 5
    assert time.monotonic() - started < 1.2  # 5 x 0.3 s one after another would be 1.5 s


async def test_a_cancelled_ask_cancels_its_plugins(planner_of):
    slow = SlowAsync(DOCKER, seconds=30)
    planner = planner_of(deadline=10, slow=slow)
    task = asyncio.ensure_future(planner.ask(TaskQuery(DOCKER)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert slow.cancelled


class Misbehaving:
    """Async plugins that use asyncio in ways that must stay their own."""

    def __init__(self, how: str) -> None:
        self.how = how

    @hookimpl
    def ep_claims(self):
        return [Claim(DOCKER)]

    @hookimpl
    async def ep_evaluate(self):
        if self.how == "own-timeout":  # its own 50 ms timeout fires
            async with asyncio.timeout(0.05):
                await asyncio.sleep(10)
        if self.how == "cancels-itself":
            raise asyncio.CancelledError
        if self.how == "task-group":
            async with asyncio.TaskGroup() as group:
                group.create_task(_fail_soon())
                await asyncio.sleep(10)
        return Verdict.no(Reason("NOPE", "never"))


async def _fail_soon() -> None:
    await asyncio.sleep(0.01)
    raise ConnectionError("backend down")


@pytest.mark.parametrize("how", ["own-timeout", "cancels-itself", "task-group"])
async def test_a_plugins_own_asyncio_trouble_stays_its_own(planner_of, how):
    planner = planner_of(deadline=5, odd=Misbehaving(how), good=Offering("uri://ok", DOCKER))
    started = time.monotonic()
    answer = await asyncio.wait_for(planner.ask(TaskQuery(DOCKER)), 3)
    assert time.monotonic() - started < 2
    assert [p for p, _ in answer.offers] == ["good"]
    assert [(p, r.code) for p, r in answer.reasons] == [("odd", "PLUGIN_ERROR")]


async def test_one_deadline_covers_policies_and_plugins(planner_of):
    class SlowPolicy:
        @hookimpl
        async def ep_policy(self):
            await asyncio.sleep(0.3)

    planner = planner_of(
        deadline=0.5, p1=SlowPolicy(), p2=SlowPolicy(), stuck=SlowAsync(DOCKER, 30)
    )
    started = time.monotonic()
    answer = await planner.ask(TaskQuery(DOCKER))
    assert time.monotonic() - started < 0.9  # policies at once, then what is left
    assert [r.code for _, r in answer.reasons] == ["PLUGIN_TIMEOUT"]


async def test_a_stuck_blocking_plugin_cannot_take_every_thread(registry_of):
    stuck, fast = BlockingSync(DOCKER), Declining("uri://other")
    planner = Planner(registry_of(stuck=stuck, fast=fast), PluginCaller(threads=4, deadline=0.1))
    try:
        for _ in range(4):  # more calls than it may hold threads
            answer = await planner.ask(TaskQuery(DOCKER))
        assert [r.code for _, r in answer.reasons] == ["PLUGIN_BUSY"]
        other = await planner.ask(TaskQuery("uri://other"))
        assert [r.code for _, r in other.reasons] == ["NOPE"]  # still served
    finally:
        stuck.release.set()
        planner.caller.close()


async def test_blocking_plugins_run_in_the_calls_context(registry_of):
    """So the request id reaches the log lines of plain (threaded) plugins."""
    from ep_server.logs import REQUEST_ID

    seen: list[str] = []

    class Threaded:
        @hookimpl
        def ep_claims(self):
            return [Claim(DOCKER)]

        @hookimpl
        def ep_evaluate(self):
            seen.append(REQUEST_ID.get())
            return Verdict.no(Reason("NOPE", "never"))

    planner = Planner(registry_of(t=Threaded()), PluginCaller(deadline=2))
    token = REQUEST_ID.set("req-42")
    try:
        await planner.ask(TaskQuery(DOCKER))
    finally:
        REQUEST_ID.reset(token)
        planner.caller.close()
    assert seen == ["req-42"]


@pytest.mark.parametrize(
    "offer",
    [
        Offer("uri://s", {}, Resources(IntRange(1, 2.5))),  # type: ignore[arg-type]
        Offer("uri://s", {}, Resources(IntRange(-1))),
        Offer("uri://s", {}, message=RuntimeError("x")),  # type: ignore[arg-type]
    ],
    ids=["float-max", "negative", "message-not-str"],
)
async def test_offers_with_bad_fields_are_plugin_errors(planner_of, offer):
    answer = await planner_of(odd=Returning(DOCKER, Verdict.yes(offer))).ask(TaskQuery(DOCKER))
    assert [(p, r.code) for p, r in answer.reasons] == [("odd", "PLUGIN_ERROR")]
