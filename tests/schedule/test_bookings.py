"""Bookings on a real server: accepting, rejecting, reading, listing and
cancelling, owned by their caller, never overbooked, never lost, and
announced to plugins once."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from fake_plugins.common import FakeSource
from schedule.rpc_site import (
    DOCKER,
    HOUR,
    T0,
    TOKENS,
    Booker,
    Clock,
    accept,
    ask_as,
    reason_of,
    scheduled,
    tokens_file,
    who,
)

from ep_server import Offer, Verdict, hookimpl
from ep_server.host import detect_host
from ep_server.model import Booking, BookingState, Identity, Schedule, Slot, Window
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import load_registry
from ep_server.plugins.caller import PluginCaller
from ep_server.schedule.bookings import RECORD_EVERY, Bookings
from ep_server.schedule.ledger import ANNOUNCE_AFTER, Candidate, OccupancyStep, Placement
from ep_server.schedule.sqlite import SQLiteLedger
from ep_server.server import start_server
from ep_server.testing import build_settings


async def test_accepting_books_releases_siblings_and_is_idempotent(site):
    stub, _, plugin, _ = await site()
    answer = await ask_as(stub, "alice", cores=6)
    first, *siblings = answer.offers
    booked = await accept(stub, first.id, "alice")
    again = await accept(stub, first.id, "alice")
    assert booked.booking.id == again.booking.id
    assert booked.booking.state == pb.BOOKING_STATE_BOOKED
    assert booked.booking.owner == "token:alice"
    assert dict(booked.booking.hold) == {"cores": 6}
    for sibling in siblings:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.AcceptOffer(
                pb.AcceptOfferRequest(offer_id=sibling.id), metadata=who("alice")
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    listed = await stub.ListBookings(pb.ListBookingsRequest(), metadata=who("alice"))
    assert [b.id for b in listed.bookings] == [booked.booking.id]
    await asyncio.sleep(0.05)
    assert plugin.booked == [booked.booking.id]


async def test_nobody_sees_or_touches_another_callers_offers_and_bookings(site):
    stub, _, _, _ = await site()
    answer = await ask_as(stub, "alice")
    offer_id = answer.offers[0].id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await accept(stub, offer_id, "bob")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    booking = (await accept(stub, offer_id, "alice")).booking
    for call, request in (
        (stub.GetBooking, pb.GetBookingRequest(booking_id=booking.id)),
        (stub.CancelBooking, pb.CancelBookingRequest(booking_id=booking.id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(request, metadata=who("bob"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (await stub.ListBookings(pb.ListBookingsRequest(), metadata=who("bob"))).bookings


async def test_booking_rpcs_are_never_anonymous(site):
    stub, _, _, _ = await site()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListBookings(pb.ListBookingsRequest())
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # An anonymous scheduled Ask learns the slots but holds nothing.
    answer = await ask_as(stub)
    assert answer.responseword == pb.YES
    assert all(not o.id and not o.HasField("expire_time") for o in answer.offers)


async def test_an_expired_offer_is_failed_precondition(site):
    stub, clock, _, _ = await site()
    answer = await ask_as(stub, "alice")
    clock.now += timedelta(minutes=6)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.AcceptOffer(
            pb.AcceptOfferRequest(offer_id=answer.offers[0].id), metadata=who("alice")
        )
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(info.value) == "OFFER_EXPIRED"


async def test_an_unknown_offer_is_not_found(site):
    stub, _, _, _ = await site()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await accept(stub, "nope", "alice")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(info.value) == "OFFER_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await accept(stub, "", "alice")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_booking_finishes_when_its_slot_ends(site):
    stub, clock, _, _ = await site()
    answer = await ask_as(stub, "alice", hours=1)
    offer = answer.offers[0]
    booking = (await accept(stub, offer.id, "alice")).booking
    clock.now = offer.slot.end.ToDatetime(tzinfo=UTC)
    got = await stub.GetBooking(pb.GetBookingRequest(booking_id=booking.id), metadata=who("alice"))
    assert got.booking.state == pb.BOOKING_STATE_FINISHED


async def test_200_concurrent_accepts_never_overbook(site, tmp_path):
    stub, _, _, server = await site({"max_offers": 1, "max_outstanding_offers": 1000})
    window = ((T0, T0 + 200 * HOUR),)
    offers = []
    for _ in range(100):  # each holds 3 of 8 cores: at most two at once
        answer = await stub.Ask(
            scheduled(cores=3, windows=window, hours=1), metadata=who("alice"), timeout=10
        )
        offers.append(answer.offers[0].id)
    ids = offers + offers  # every offer accepted twice, concurrently
    calls = [accept(stub, i, timeout=30) for i in ids]
    results = await asyncio.gather(*calls)
    by_offer = {}
    for offer_id, result in zip(ids, results, strict=True):
        by_offer.setdefault(offer_id, set()).add(result.booking.id)
    assert all(len(b) == 1 for b in by_offer.values()), "an offer accepted twice made two bookings"
    listed = await stub.ListBookings(pb.ListBookingsRequest(), metadata=who("alice"))
    assert len(listed.bookings) == 100
    ledger = server.bookings.ledger
    from ep_server.model import Slot

    for booking in listed.bookings:
        start = booking.slot.start.ToDatetime(tzinfo=UTC)
        peak = ledger.peak("cores", Slot(start, start + HOUR), T0)
        assert peak <= 8, f"overbooked at {start}: {peak} cores"


def test_a_server_killed_during_a_flood_of_accepts_loses_no_acknowledged_booking(tmp_path):
    """ep-server with a SQLite ledger file; offers held, then accepted from
    8 threads; SIGKILL mid-flood; restarted on the same file: every booking
    acknowledged before the kill is there, once, and nothing is overbooked."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import threading

    from ep_server.model import Slot
    from ep_server.schedule.sqlite import SQLiteLedger

    ledger_path = tmp_path / "ledger.sqlite3"
    config = tmp_path / "ep.toml"
    config.write_text(
        f'[auth]\ntokens_file = "{tokens_file(tmp_path)}"\n'
        f'[schedule]\nledger = "{ledger_path}"\nmax_outstanding_offers = 1000\nmax_offers = 1\n'
        'pools = { cores = 8, memory = "16GiB" }\n'
        '[[plugin.static.claims]]\ntasktype = "uri://docker-container"\n'
        'servicetype = "uri://docker-uws"\nserviceinfo = { endpoint = "http://127.0.0.1:1/uws" }\n'
        '[plugins]\nallow = ["static"]\n'
    )

    def start():
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        proc = subprocess.Popen(
            [sys.executable, "-m", "ep_server", "serve", "--config", str(config),
             "--listen", f"127.0.0.1:{port}"],
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=30)
        return proc, channel, pb_grpc.ExecutionPlannerServiceStub(channel)

    proc, channel, stub = start()
    try:
        now = datetime.now(UTC)
        request = scheduled(cores=3, windows=((now + HOUR, now + 400 * HOUR),), hours=1)
        offers = [
            stub.Ask(request, metadata=who("alice"), timeout=10).offers[0].id for _ in range(300)
        ]
        acknowledged: dict[str, str] = {}
        todo = list(offers)
        lock = threading.Lock()

        def flood():
            while True:
                with lock:
                    if not todo:
                        return
                    offer_id = todo.pop()
                try:
                    reply = stub.AcceptOffer(
                        pb.AcceptOfferRequest(offer_id=offer_id), metadata=who("alice"), timeout=10
                    )
                except grpc.RpcError:
                    return  # the server is gone
                with lock:
                    acknowledged[offer_id] = reply.booking.id

        threads = [threading.Thread(target=flood) for _ in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        for thread in threads:
            thread.join(timeout=30)
        proc.wait(timeout=30)
        channel.close()
        assert 60 <= len(acknowledged) < len(offers), "the kill must land mid-flood"
    finally:
        if proc.poll() is None:
            proc.kill()

    proc, channel, stub = start()
    try:
        listed = stub.ListBookings(pb.ListBookingsRequest(), metadata=who("alice"), timeout=10)
        by_offer = {b.offer_id: b.id for b in listed.bookings}
        lost = {o: b for o, b in acknowledged.items() if by_offer.get(o) != b}
        assert not lost, f"acknowledged bookings lost after SIGKILL: {lost}"
        assert len(by_offer) == len(listed.bookings), "an offer became two bookings"
    finally:
        channel.close()
        proc.terminate()
        proc.wait(timeout=30)
    ledger = SQLiteLedger(ledger_path, {"cores": 8, "memory": 16 * 2**30})
    try:
        for booking in listed.bookings:
            start_time = booking.slot.start.ToDatetime(tzinfo=UTC)
            slot = Slot(start_time, booking.slot.end.ToDatetime(tzinfo=UTC))
            assert ledger.peak("cores", slot, datetime.now(UTC)) <= 8
    finally:
        ledger.close()


def test_the_ep_command_books_lists_and_cancels(tmp_path, capsys, monkeypatch):
    import json

    from ep_server.client.cli import main
    from ep_server.testing import EPTestServer

    settings = build_settings(
        {
            "auth": {"tokens_file": str(tokens_file(tmp_path))},
            "schedule": {"pools": {"cores": 8, "memory": "16GiB"}},
        }
    )
    registry = load_registry(settings, detect_host(), [FakeSource("booker", Booker())])
    server = EPTestServer(settings, registry)
    try:
        monkeypatch.setenv("EP_TOKEN", TOKENS["alice"])
        at = ["--endpoint", server.address, "--json"]
        ask = ["ask", "--tasktype", DOCKER, "--window", "+1h/+9h", "--duration", "2h"]
        assert main([*ask, *at]) == 0
        offers = json.loads(capsys.readouterr().out)["results"][0]["answer"]["offers"]
        assert all(o["id"] and o["slot"] for o in offers)
        assert main(["accept", server.address, offers[0]["id"], "--json"]) == 0
        [booked] = json.loads(capsys.readouterr().out)
        assert booked["state"] == "BOOKED"
        assert main(["bookings", server.address, "--json"]) == 0
        assert [b["id"] for b in json.loads(capsys.readouterr().out)] == [booked["id"]]
        assert main(["cancel", server.address, booked["id"], "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["state"] == "CANCELLED"
        assert main(["accept", server.address, offers[1]["id"]]) == 1  # a released sibling
        assert "NOT_FOUND" in capsys.readouterr().err
        assert main([*ask[:-2], *at]) == 2  # --window without --duration
        monkeypatch.delenv("EP_TOKEN")
        assert main(["bookings", server.address]) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
    finally:
        server.close()


async def test_cancelling_twice_tells_the_plugin_once(site):
    stub, _, plugin, _ = await site()
    answer = await ask_as(stub, "alice")
    booking = (await accept(stub, answer.offers[0].id, "alice")).booking
    for _ in range(3):
        request = pb.CancelBookingRequest(booking_id=booking.id)
        await stub.CancelBooking(request, metadata=who("alice"))
    await asyncio.sleep(0.05)
    assert plugin.cancelled == [booking.id]


async def test_a_failed_start_releases_the_ledger(tmp_path):
    import socket

    from ep_server.testing import build_settings as settings_of

    ledger = str(tmp_path / "ledger.sqlite3")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        settings = settings_of({"schedule": {"ledger": ledger}}, listen=taken)
        with pytest.raises(OSError, match="cannot listen"):
            await start_server(settings, load_registry(settings, detect_host(), []))
    settings = settings_of({"schedule": {"ledger": ledger}})
    server = await start_server(settings, load_registry(settings, detect_host(), []))
    await server.shutdown(0)


async def test_list_bookings_pages(site):
    stub, _, _, _ = await site({"max_offers": 1, "max_outstanding_offers": 100})
    window = ((T0, T0 + 100 * HOUR),)
    for _ in range(5):
        answer = await ask_as(stub, "alice", cores=8, windows=window, hours=1)
        await accept(stub, answer.offers[0].id, "alice")
    seen, token = [], ""
    for _ in range(10):
        request = pb.ListBookingsRequest(page_size=2, page_token=token)
        page = await stub.ListBookings(request, metadata=who("alice"))
        assert len(page.bookings) <= 2
        seen += [b.id for b in page.bookings]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 5
    starts = [
        b.slot.start.ToDatetime()
        for b in (await stub.ListBookings(pb.ListBookingsRequest(), metadata=who("alice"))).bookings
    ]
    assert starts == sorted(starts)
    bad = pb.ListBookingsRequest(page_token="not-a-token")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListBookings(bad, metadata=who("alice"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_plain_booking_hooks_run_in_the_plugin_threads(site):
    """Not in asyncio's default executor, which asyncio.run waits for without
    a limit at exit: a stuck hook would keep a stopped server from ending."""
    names = []

    class Recording(Booker):
        @hookimpl
        def ep_booked(self, booking):
            names.append(threading.current_thread().name)

    stub, _, _, _ = await site(plugin=Recording())
    answer = await stub.Ask(scheduled(), metadata=who("alice"), timeout=10)
    offer_id = answer.offers[0].id
    await stub.AcceptOffer(pb.AcceptOfferRequest(offer_id=offer_id), metadata=who("alice"))
    for _ in range(50):
        if names:
            break
        await asyncio.sleep(0.02)
    assert names, "ep_booked was called"
    assert names[0].startswith("ep-plugin"), names


async def test_the_booked_metric_counts_each_booking_once(site):
    stub, _, plugin, server = await site()
    answer = await ask_as(stub, "alice", cores=2)
    for _ in range(3):  # accepting again returns the same booking
        await accept(stub, answer.offers[0].id)
    registry = server.metrics.registry
    assert registry.get_sample_value("ep_bookings_total", {"event": "booked"}) == 1
    for _ in range(100):  # ep_booked runs after the answer; give it time
        if plugin.booked:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)  # and time for any second announcement
    assert len(plugin.booked) == 1


class SlowAnnouncements(Booker):
    """Booker whose announcements are plain hooks taking 0.2 s each, noted
    in order with the booking they were for."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[tuple[str, str]] = []

    @hookimpl
    def ep_booked(self, booking):
        time.sleep(0.2)
        self.heard.append(("booked", booking.id))

    @hookimpl
    def ep_cancelled(self, booking):
        self.heard.append(("cancelled", booking.id))


async def heard(plugin: SlowAnnouncements, count: int, seconds: float = 10.0):
    for _ in range(int(seconds / 0.02)):
        if len(plugin.heard) >= count:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # and time for any announcement too many
    return plugin.heard


async def test_announcements_wait_for_a_plugin_holding_its_threads(site):
    """With 2 plugin threads a plugin may hold 1: four bookings made at once
    are announced one after another, none dropped as busy."""
    plugin = SlowAnnouncements()
    stub, _, _, _ = await site(plugin=plugin, plugins={"threads": 2})
    offers = [(await ask_as(stub, "alice", cores=1)).offers[0].id for _ in range(4)]
    booked = await asyncio.gather(*(accept(stub, offer_id) for offer_id in offers))
    ids = sorted(b.booking.id for b in booked)
    assert sorted(i for _, i in await heard(plugin, 4)) == ids


async def test_a_cancellation_is_announced_after_its_booking(site):
    plugin = SlowAnnouncements()
    stub, _, _, _ = await site(plugin=plugin)
    answer = await ask_as(stub, "alice", cores=1)
    booking = (await accept(stub, answer.offers[0].id)).booking
    await stub.CancelBooking(pb.CancelBookingRequest(booking_id=booking.id), metadata=who("alice"))
    assert await heard(plugin, 2) == [("booked", booking.id), ("cancelled", booking.id)]


class HeldLedger:
    """A ledger whose ``accept`` waits for :attr:`release`, then books."""

    threads = 1

    def __init__(self, booking) -> None:
        self.booking = booking
        self.release = threading.Event()

    def accept(self, offer_id, owner, now):
        assert self.release.wait(10)
        return self.booking, True

    def announced(self, done) -> None:
        pass

    def close(self) -> None:
        pass


async def test_a_booking_made_after_its_caller_left_is_still_announced():
    """The caller's RPC is cancelled while the ledger commits: the ledger made
    the booking (and will say created=False to any retry), so this call must
    announce it."""
    plugin = Booker()
    registry = load_registry(build_settings({}), detect_host(), [FakeSource("booker", plugin)])
    slot = Slot(datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, 1, tzinfo=UTC))
    booking = Booking(
        "b1", "o1", "token:alice", "booker", "uri://docker-uws", {}, slot, {},
        BookingState.BOOKED, slot.start,
    )  # fmt: skip
    ledger = HeldLedger(booking)
    caller = PluginCaller(threads=2, deadline=1.0)
    bookings = Bookings(ledger, registry, caller)  # type: ignore[arg-type]
    call = asyncio.ensure_future(bookings.accept("o1", Identity("alice", "token")))
    await asyncio.sleep(0.05)
    call.cancel()
    ledger.release.set()
    with pytest.raises(asyncio.CancelledError):
        await call
    for _ in range(100):
        if plugin.booked:
            break
        await asyncio.sleep(0.02)
    assert plugin.booked == ["b1"]
    await bookings.close()
    caller.close()


async def test_a_scheduled_ask_whose_plugin_gives_unstorable_serviceinfo_says_why(site):
    """A serviceinfo the ledger cannot store as JSON is the plugin's error
    (a reason in the answer), not the Ask's."""

    class Unstorable(Booker):
        @hookimpl
        async def ep_evaluate(self, query):
            return Verdict.yes(Offer("uri://docker-uws", {"when": datetime.now(UTC)}))

    stub, _, _, _ = await site(plugin=Unstorable())
    answer = await ask_as(stub, "alice", cores=1)
    assert answer.responseword == pb.NO
    [reason] = answer.reasons
    assert reason.plugin == "booker"
    assert "serviceinfo.when is a datetime" in reason.message


# --- Announcements recorded in the ledger, and swept -----------------------------------


def bookings_on(ledger, plugin, clock, *, threads=8, patience=60.0):
    registry = load_registry(build_settings({}), detect_host(), [FakeSource("booker", plugin)])
    caller = PluginCaller(threads=threads, deadline=1.0)
    return Bookings(ledger, registry, caller, clock, patience=patience), caller


def held_offer(ledger, at, ask_id="ask"):
    """The first offer held for an Ask of alice's (1 core, 1 h, within 4 h of ``at``)."""
    placement = Placement(
        "token:alice", ask_id,
        (Candidate("booker", "uri://docker-uws", {}, {"cores": 1}),),
        Schedule((Window(at, at + timedelta(hours=4)),), timedelta(hours=1)),
    )  # fmt: skip
    return ledger.place(placement, at)[0]


def made_elsewhere(ledger, at):
    """A booking made by another process that died before announcing it."""
    offer = held_offer(ledger, at, f"ask-{at.isoformat()}")
    booking, created = ledger.accept(offer.id, "token:alice", at)
    assert created
    return booking


async def until_heard(plugin, count, seconds=5.0):
    for _ in range(int(seconds / 0.02)):
        if len(plugin.booked) + len(plugin.cancelled) >= count:
            return
        await asyncio.sleep(0.02)


async def test_a_booking_no_process_announced_is_announced_by_a_sweep_once():
    ledger = SQLiteLedger(":memory:", {"cores": 8})
    clock = Clock()
    plugin = Booker()
    bookings, caller = bookings_on(ledger, plugin, clock)
    booking = made_elsewhere(ledger, clock())
    assert await bookings.sweep() == 0  # not yet due: its own process may still announce it
    clock.now += ANNOUNCE_AFTER
    assert await bookings.sweep() == 1
    await until_heard(plugin, 1)
    assert plugin.booked == [booking.id]
    await asyncio.sleep(RECORD_EVERY + 0.2)  # recorded
    clock.now += 10 * ANNOUNCE_AFTER
    assert await bookings.sweep() == 0
    await bookings.close()
    caller.close()
    assert plugin.booked == [booking.id]


async def test_announcements_made_are_recorded_so_no_sweep_repeats_them():
    ledger = SQLiteLedger(":memory:", {"cores": 8})
    clock = Clock()
    plugin = Booker()
    bookings, caller = bookings_on(ledger, plugin, clock)
    offer = held_offer(ledger, clock())
    booking = await bookings.accept(offer.id, Identity("alice", "token"))
    await bookings.cancel(booking.id, Identity("alice", "token"))
    await until_heard(plugin, 2)
    await asyncio.sleep(RECORD_EVERY + 0.2)
    clock.now += 10 * ANNOUNCE_AFTER
    assert await bookings.sweep() == 0
    await bookings.close()
    caller.close()
    assert (plugin.booked, plugin.cancelled) == ([booking.id], [booking.id])


async def test_an_announcement_its_busy_plugin_never_took_is_left_to_a_sweep():
    ledger = SQLiteLedger(":memory:", {"cores": 8})
    clock = Clock()
    release = threading.Event()
    heard = []

    class Stuck(Booker):
        @hookimpl
        def ep_resources(self, query):  # holds the plugin's only thread
            release.wait(10)
            return {"cores": 1}

        @hookimpl
        def ep_booked(self, booking):
            heard.append(booking.id)

    plugin = Stuck()
    bookings, caller = bookings_on(ledger, plugin, clock, threads=2, patience=0.3)
    impl = bookings.registry.ep_resources("booker")
    until = asyncio.get_running_loop().time() + 5
    blocker = asyncio.ensure_future(caller.gather([impl], until, None))
    await asyncio.sleep(0.05)
    offer = held_offer(ledger, clock())
    booking = await bookings.accept(offer.id, Identity("alice", "token"))
    await asyncio.sleep(0.6)  # past its patience: given up, not recorded
    assert heard == []
    release.set()
    await blocker
    clock.now += ANNOUNCE_AFTER
    assert await bookings.sweep() == 1
    for _ in range(100):
        if heard:
            break
        await asyncio.sleep(0.02)
    assert heard == [booking.id]
    await bookings.close()
    caller.close()


class InOrder(Booker):
    """Booker noting every announcement, in order, as (event, booking id)."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[tuple[str, str]] = []

    @hookimpl
    def ep_booked(self, booking):
        self.heard.append(("booked", booking.id))

    @hookimpl
    def ep_cancelled(self, booking):
        self.heard.append(("cancelled", booking.id))


async def test_a_cancellation_of_a_booking_never_announced_waits_for_the_sweep():
    """Another process made the booking and died before announcing it; this
    one cancels it: the plugin hears nothing now (a cancellation never comes
    before its booking), then the sweep announces both, in order."""
    ledger = SQLiteLedger(":memory:", {"cores": 8})
    clock = Clock()
    plugin = InOrder()
    bookings, caller = bookings_on(ledger, plugin, clock)
    booking = made_elsewhere(ledger, clock())
    await bookings.cancel(booking.id, Identity("alice", "token"))
    await asyncio.sleep(0.3)
    assert plugin.heard == []
    clock.now += ANNOUNCE_AFTER
    assert await bookings.sweep() == 1
    for _ in range(100):
        if len(plugin.heard) >= 2:
            break
        await asyncio.sleep(0.02)
    assert plugin.heard == [("booked", booking.id), ("cancelled", booking.id)]
    await asyncio.sleep(RECORD_EVERY + 0.2)  # recorded: nothing is due again
    clock.now += 10 * ANNOUNCE_AFTER
    assert await bookings.sweep() == 0
    await bookings.close()
    caller.close()
    assert plugin.heard == [("booked", booking.id), ("cancelled", booking.id)]


async def test_a_cancellation_of_a_booking_recorded_as_announced_is_announced_at_once():
    """Another process announced the booking and recorded it: a cancellation
    here is announced at once."""
    ledger = SQLiteLedger(":memory:", {"cores": 8})
    clock = Clock()
    plugin = InOrder()
    bookings, caller = bookings_on(ledger, plugin, clock)
    booking = made_elsewhere(ledger, clock())
    ledger.announced({booking.id: "booked"})
    await bookings.cancel(booking.id, Identity("alice", "token"))
    for _ in range(100):
        if plugin.heard:
            break
        await asyncio.sleep(0.02)
    assert plugin.heard == [("cancelled", booking.id)]
    await bookings.close()
    caller.close()


async def test_when_a_busy_plugin_never_took_the_booking_its_cancellation_waits_too():
    """The booking's announcement was given up (its plugin stayed busy), so
    the cancellation that follows is not announced on its own: the sweep
    announces both, in order."""
    ledger = SQLiteLedger(":memory:", {"cores": 8})
    clock = Clock()
    release = threading.Event()

    class Stuck(InOrder):
        @hookimpl
        def ep_resources(self, query):  # holds the plugin's only thread
            release.wait(10)
            return {"cores": 1}

    plugin = Stuck()
    bookings, caller = bookings_on(ledger, plugin, clock, threads=2, patience=0.3)
    impl = bookings.registry.ep_resources("booker")
    until = asyncio.get_running_loop().time() + 5
    blocker = asyncio.ensure_future(caller.gather([impl], until, None))
    await asyncio.sleep(0.05)
    offer = held_offer(ledger, clock())
    booking = await bookings.accept(offer.id, Identity("alice", "token"))
    await asyncio.sleep(0.6)  # past its patience: given up
    release.set()
    await blocker
    # The plugin is free again, but its booking was never announced.
    await bookings.cancel(booking.id, Identity("alice", "token"))
    await asyncio.sleep(0.3)
    assert plugin.heard == []
    clock.now += ANNOUNCE_AFTER
    assert await bookings.sweep() == 1
    for _ in range(100):
        if len(plugin.heard) >= 2:
            break
        await asyncio.sleep(0.02)
    assert plugin.heard == [("booked", booking.id), ("cancelled", booking.id)]
    await bookings.close()
    caller.close()


async def test_announcements_whose_recording_is_cut_short_by_closing_are_still_recorded(
    tmp_path,
):
    """Closing gives a recording queued behind a slow ledger call one second,
    then cancels it: the batch it held is written by the close itself, not
    dropped (which would make a sweep announce those bookings again)."""
    ledger = SQLiteLedger(tmp_path / "ledger.sqlite", {"cores": 8})
    clock = Clock()
    plugin = InOrder()
    bookings, caller = bookings_on(ledger, plugin, clock, threads=2)
    offer = held_offer(ledger, clock())
    booking = await bookings.accept(offer.id, Identity("alice", "token"))
    release = threading.Event()
    slow = bookings.submit(release.wait, 10)  # the ledger's one thread, busy
    await asyncio.sleep(RECORD_EVERY + 0.2)  # heard; its recording queued behind
    assert plugin.heard == [("booked", booking.id)]
    closing = asyncio.ensure_future(bookings.close())
    await asyncio.sleep(1.3)  # the recorder is cancelled after 1 s
    release.set()
    await closing
    caller.close()
    assert slow.result() is True
    with contextlib.closing(sqlite3.connect(tmp_path / "ledger.sqlite")) as db:
        stored = db.execute(
            "SELECT announced, announce_due_us FROM bookings WHERE id = ?", (booking.id,)
        ).fetchone()
    assert stored == (1, None)


# --- Occupancy ---------------------------------------------------------------------------


async def test_occupancy_reads_every_pool_from_now_on_without_owners_or_ids(ledger):
    """``ledger``: a ledger of each backend, with the pools cores, memory and gpus."""
    clock = Clock()
    bookings, caller = bookings_on(ledger, Booker(), clock)
    booking = made_elsewhere(ledger, clock())
    offer = held_offer(ledger, clock(), "another")  # and its two siblings, an hour apart
    occupancy = await bookings.occupancy(days=2)
    await bookings.close()
    caller.close()
    assert (occupancy.start, occupancy.end) == (T0, T0 + timedelta(days=2))
    assert sorted(occupancy.pools) == ["cores", "gpus", "memory"]
    assert occupancy.pools["cores"] == [
        OccupancyStep(T0, T0 + HOUR, 1, 1),
        OccupancyStep(T0 + HOUR, T0 + 3 * HOUR, 0, 1),
        OccupancyStep(T0 + 3 * HOUR, T0 + timedelta(days=2), 0, 0),
    ]
    assert occupancy.pools["gpus"] == [OccupancyStep(T0, T0 + timedelta(days=2), 0, 0)]
    text = repr(occupancy)
    assert "alice" not in text
    assert booking.id not in text
    assert offer.id not in text
