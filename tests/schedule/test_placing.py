"""Time-slot offers on a real server: a YES to an Ask with a schedule becomes
offers of slots that hold the site's pools; plugins say what a task holds
(ep_resources) and refuse slots (ep_slot) within the Ask's one deadline."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, timedelta

import grpc
import pytest
from schedule.rpc_site import (
    HOUR,
    T0,
    Offers,
    SlotPlugin,
    SlowSlots,
    StuckResources,
    ask_as,
    scheduled,
    start_of,
    timed_ask,
    who,
)

from ep_server import Offer, TaskQuery, Verdict, hookimpl
from ep_server.pb import execution_planner_pb2 as pb


async def test_a_scheduled_ask_gets_time_slot_offers(site):
    stub, clock, _, _ = await site()
    answer = await ask_as(stub, "alice", cores=4, hours=2)
    assert answer.responseword == pb.YES
    assert 1 <= len(answer.offers) <= 3
    starts = [start_of(o) for o in answer.offers]
    assert starts == sorted(starts)
    first = answer.offers[0]
    assert first.id
    assert start_of(first) == T0
    assert first.slot.end.ToDatetime(tzinfo=UTC) == T0 + 2 * HOUR
    assert first.expire_time.ToDatetime(tzinfo=UTC) == clock.now + timedelta(minutes=5)
    assert dict(first.hold) == {"cores": 4}  # pools holding nothing are left out
    assert first.servicetype == "uri://docker-uws"


async def test_offers_hold_capacity_and_rejecting_releases_it(site):
    stub, _, _, _ = await site({"max_offers": 1})
    one_window = ((T0, T0),)  # must start exactly at T0
    first = await stub.Ask(
        scheduled(cores=8, windows=one_window), metadata=who("alice"), timeout=10
    )
    assert first.responseword == pb.YES
    second = await ask_as(stub, "bob", cores=8, windows=one_window)
    assert second.responseword == pb.NO
    [reason] = second.reasons
    assert (reason.code, reason.cause, reason.retryable) == (
        "NO_SLOT",
        pb.REASON_CAUSE_CAPACITY,
        True,
    )
    assert reason.earliest_slot.start.ToDatetime(tzinfo=UTC) == T0 + 2 * HOUR
    await stub.RejectOffer(
        pb.RejectOfferRequest(offer_id=first.offers[0].id), metadata=who("alice")
    )
    third = await ask_as(stub, "bob", cores=8, windows=one_window)
    assert third.responseword == pb.YES


async def test_plugins_refuse_slots_and_hear_of_cancellations(site):
    stub, _, plugin, _ = await site({"max_offers": 1})
    at_lunch = ((T0 + 4 * HOUR, T0 + 4 * HOUR),)  # 13:00 only
    answer = await ask_as(stub, "alice", windows=at_lunch)
    assert answer.responseword == pb.NO
    answer = await ask_as(stub, "alice")
    booking = (
        await stub.AcceptOffer(
            pb.AcceptOfferRequest(offer_id=answer.offers[0].id), metadata=who("alice")
        )
    ).booking
    cancelled = await stub.CancelBooking(
        pb.CancelBookingRequest(booking_id=booking.id), metadata=who("alice")
    )
    assert cancelled.booking.state == pb.BOOKING_STATE_CANCELLED
    await asyncio.sleep(0.05)
    assert plugin.cancelled == [booking.id]


async def test_outstanding_offers_per_caller_are_capped(site):
    stub, _, _, _ = await site({"max_offers": 1, "max_outstanding_offers": 2})
    words = []
    for _ in range(3):
        answer = await ask_as(stub, "alice", cores=1)
        words.append((answer.responseword, [r.code for r in answer.reasons]))
    assert words[:2] == [(pb.YES, []), (pb.YES, [])]
    assert words[2] == (pb.NO, ["TOO_MANY_OFFERS"])
    assert (await ask_as(stub, "bob", cores=1)).responseword == pb.YES


async def test_a_bad_schedule_names_its_fields(site):
    stub, _, _, _ = await site()
    request = scheduled()
    request.schedule.windows[0].end.FromDatetime(T0 - HOUR)
    request.schedule.min_duration.seconds = -5
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(request, metadata=who("alice"), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "schedule.windows[0].end" in info.value.details()
    assert "schedule.min_duration" in info.value.details()


async def test_windows_beyond_the_horizon_get_a_reason_naming_it(site):
    stub, _, _, _ = await site({"horizon_days": 30})
    later = T0 + timedelta(days=31)
    answer = await ask_as(stub, "alice", windows=((later, later + 8 * HOUR),))
    assert answer.responseword == pb.NO
    [reason] = answer.reasons
    assert (reason.code, reason.cause, reason.retryable) == (
        "BEYOND_HORIZON",
        pb.REASON_CAUSE_POLICY,
        False,
    )
    assert reason.field == "schedule.windows"
    assert "30 days ahead ([schedule] horizon_days)" in reason.message
    assert "2031-04-03T09:00" in reason.message  # where the horizon ends


async def test_a_window_reaching_past_the_horizon_still_gets_slots(site):
    stub, _, _, _ = await site({"horizon_days": 30})
    answer = await ask_as(stub, "alice", windows=((T0, T0 + timedelta(days=60)),))
    assert answer.responseword == pb.YES


async def test_no_slot_within_the_horizon_says_so(site):
    stub, _, _, _ = await site({"horizon_days": 1})
    answer = await ask_as(stub, "alice", cores=9, windows=((T0, T0 + HOUR),))
    [reason] = answer.reasons
    assert reason.code == "NO_SLOT"
    assert "nothing fits within this site's booking horizon (1 days ahead)" in reason.message


async def test_scheduling_can_be_off(site):
    stub, _, _, _ = await site({"enabled": False})
    answer = await ask_as(stub, "alice")
    assert [r.code for r in answer.reasons] == ["SCHEDULING_UNSUPPORTED"]
    info = await stub.GetServiceInfo(pb.GetServiceInfoRequest())
    assert not info.pools


async def test_an_unusable_hold_from_a_plugin_falls_back_to_the_request(site):
    stub, _, _, _ = await site()
    request = scheduled()
    request.taskinfo.fields["cores"].number_value = -3  # Booker would hold -3 cores
    answer = await stub.Ask(request, metadata=who("alice"), timeout=10)
    assert answer.responseword == pb.YES
    assert dict(answer.offers[0].hold) == {"cores": 1}


async def test_holds_of_an_ask_its_caller_gave_up_on_are_released(site):
    config = {"max_offers": 1, "max_outstanding_offers": 1}
    stub, _, _, server = await site(config, plugin=Offers("plain"))
    server.bookings.submit(time.sleep, 0.4)  # the ledger is busy a while
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Ask(scheduled(), metadata=who("alice"), timeout=0.1)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.sleep(1.0)  # the ledger places that Ask's offer, then releases it
    answer = await stub.Ask(scheduled(), metadata=who("alice"), timeout=10)
    assert answer.responseword == pb.YES, answer.reasons  # not TOO_MANY_OFFERS


async def test_a_stuck_ep_slot_is_tripped_and_never_starves_the_others(slot_site):
    start, release = slot_site
    stub = await start(SlotPlugin("astuck", release), SlotPlugin("healthy"))
    answer, took = await timed_ask(stub)
    assert took < 2, f"the first Ask took {took:.2f}s"  # one budget (0.3 s) for the placement
    for _ in range(8):  # the stuck plugin is refused at once from now on, holding one thread
        answer, took = await timed_ask(stub)
        assert {o.plugin for o in answer.offers} == {"healthy"}, answer.reasons
        assert took < 0.25, f"an Ask took {took:.2f}s"


async def test_several_stuck_ep_slots_share_one_budget(slot_site):
    start, release = slot_site
    stub = await start(*(SlotPlugin(f"s{i}", release) for i in range(3)))
    answer, took = await timed_ask(stub)
    assert took < 0.75, f"one Ask held the ledger {took:.2f}s, not one deadline (0.3 s)"
    assert [r.code for r in answer.reasons] == ["NO_SLOT"]


async def test_a_stuck_ep_slot_does_not_back_up_the_bookings(slot_site):
    start, release = slot_site
    stub = await start(SlotPlugin("stuck", release))
    asks = [
        asyncio.ensure_future(stub.Ask(scheduled(cores=1), metadata=who("alice"), timeout=5))
        for _ in range(10)
    ]
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    listed = await stub.ListBookings(pb.ListBookingsRequest(), metadata=who("alice"), timeout=5)
    waited = loop.time() - started
    assert list(listed.bookings) == []
    assert waited < 1.0, f"ListBookings waited {waited:.2f}s behind the Asks"
    for answer in await asyncio.gather(*asks):
        assert [r.code for r in answer.reasons] == ["NO_SLOT"]


async def test_a_slow_ep_slot_cannot_use_up_a_quick_ones_time(slot_site):
    start, _ = slot_site
    slow, quick = SlowSlots("aslow", 0.27), SlowSlots("bquick", 0.05)
    stub = await start(slow, quick)
    for _ in range(4):
        answer, took = await timed_ask(stub)
        assert "bquick" in {o.plugin for o in answer.offers}, answer.reasons
        assert took < 0.6, f"an Ask held the ledger {took:.2f}s (deadline 0.3 s)"
    assert quick.calls >= 4  # never tripped


async def test_an_ep_slot_raising_timeouterror_refuses_that_slot_only(slot_site):
    """Its own socket timing out is the plugin's exception, not a late call."""
    start, _ = slot_site
    raiser = SlowSlots("raiser", 0.0, TimeoutError("its own socket timed out"))
    stub = await start(raiser, SlotPlugin("healthy"))
    for asked in range(1, 4):
        await timed_ask(stub)
        assert raiser.calls > asked  # called again in every Ask: not tripped


async def test_a_stuck_plain_ep_resources_never_stalls_the_server(slot_site):
    start, release = slot_site
    plugin = StuckResources("stuckres", release)
    stub = await start(plugin)
    ask = asyncio.ensure_future(timed_ask(stub))
    await asyncio.sleep(0.05)  # the hook is blocking now; the event loop is not
    loop = asyncio.get_running_loop()
    started = loop.time()
    await stub.GetServiceInfo(pb.GetServiceInfoRequest(), timeout=5)
    assert loop.time() - started < 0.2
    answer, took = await ask
    assert took < 2, f"the Ask took {took:.2f}s (deadline 0.3 s)"
    assert answer.responseword == pb.YES  # placed with the request's minimum
    assert answer.offers[0].hold["cores"] == 1  # not the 3 it would have said


async def test_every_plugins_ep_resources_is_asked_at_once(slot_site):
    class SlowResources(SlotPlugin):
        @hookimpl
        async def ep_resources(self, query: TaskQuery):
            await asyncio.sleep(0.2)
            return {"cores": 2}

    start, _ = slot_site
    stub = await start(*(SlowResources(f"r{i}") for i in range(3)))
    answer, took = await timed_ask(stub)
    assert took < 0.3 + 0.15, f"three 0.2 s hooks took {took:.2f}s: not at once"
    assert {o.hold["cores"] for o in answer.offers} == {2}


async def test_one_deadline_covers_a_scheduled_ask(slot_site):
    """Evaluation, ep_resources and ep_slot share the Ask's one deadline."""

    class Slow(SlotPlugin):
        @hookimpl
        async def ep_evaluate(self, query: TaskQuery):
            await asyncio.sleep(0.2)
            return Verdict.yes(Offer(f"uri://{self.name}", {"endpoint": "http://127.0.0.1:1/x"}))

        @hookimpl
        async def ep_resources(self, query: TaskQuery):
            await asyncio.sleep(5)

    start, _ = slot_site
    stub = await start(Slow("slow"))
    answer, took = await timed_ask(stub)
    assert took < 0.3 + 0.15, f"the Ask took {took:.2f}s with a 0.3 s deadline"
    assert [r.code for r in answer.reasons] == ["NO_SLOT"]  # no time left for ep_slot


async def test_an_ask_its_caller_cancels_cancels_its_ep_resources(site):
    cancelled = asyncio.Event()

    class Waits(Offers):
        @hookimpl
        async def ep_resources(self, query: TaskQuery):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.set()
                raise

    stub, _, _, _ = await site(plugin=Waits("waits"))  # plugin deadline 2 s
    call = stub.Ask(scheduled(), metadata=who("alice"), timeout=10)
    await asyncio.sleep(0.3)
    call.cancel()
    await asyncio.wait_for(cancelled.wait(), 1.0)  # well before the deadline would
