"""Issue 5 on a real server: time-slot offers, accepting, bookings."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from fake_plugins.common import FakeSource
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ep_server import Cause, Claim, Offer, Reason, TaskQuery, Verdict, hookimpl
from ep_server.host import detect_host
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import load_registry
from ep_server.server import start_server
from ep_server.testing import build_settings

DOCKER = "uri://docker-container"
T0 = datetime(2031, 3, 4, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
TOKENS = {"alice": "alice-token-0123456789abcdef-0001", "bob": "bob-token-0123456789abcdef-00002"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Booker:
    """Offers a docker service; holds what the taskinfo says; refuses slots
    starting at 13:00; records bookings and cancellations."""

    def __init__(self) -> None:
        self.booked: list[str] = []
        self.cancelled: list[str] = []

    @hookimpl
    def ep_claims(self):
        return [Claim(DOCKER, ("uri://docker-uws",))]

    @hookimpl
    async def ep_evaluate(self, query: TaskQuery):
        return Verdict.yes(Offer("uri://docker-uws", {"endpoint": "http://127.0.0.1:1/uws"}))

    @hookimpl
    def ep_resources(self, query: TaskQuery):
        return {"cores": int(query.taskinfo.get("cores", 1)), "memory": 0}

    @hookimpl
    def ep_slot(self, slot):
        if slot.start.hour == 13:
            return Reason("LUNCH", "no tasks start at lunch", Cause.POLICY)
        return None

    @hookimpl
    async def ep_booked(self, booking):
        self.booked.append(booking.id)

    @hookimpl
    def ep_cancelled(self, booking):
        self.cancelled.append(booking.id)


def tokens_file(tmp_path):
    lines = []
    for name, token in TOKENS.items():
        lines.append(
            f'[tokens.{name}]\ntoken_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n'
        )
    path = tmp_path / "tokens.toml"
    path.write_text("".join(lines))
    return path


def who(name):
    return (("authorization", f"Bearer {TOKENS[name]}"),)


async def ask_as(stub, user=None, **schedule):
    metadata = who(user) if user else None
    return await stub.Ask(scheduled(**schedule), metadata=metadata, timeout=10)


def accept(stub, offer_id, user="alice", **kwargs):
    request = pb.AcceptOfferRequest(offer_id=offer_id)
    return stub.AcceptOffer(request, metadata=who(user), **kwargs)


@pytest.fixture
async def site(tmp_path):
    running = []

    async def start(schedule=None, plugin=None, ledger=":memory:"):
        clock = Clock()
        plugin = plugin or Booker()
        config = {
            "auth": {"tokens_file": str(tokens_file(tmp_path))},
            "schedule": {
                "ledger": ledger,
                "pools": {"cores": 8, "memory": "16GiB"},
                **(schedule or {}),
            },
        }
        settings = build_settings(config)
        registry = load_registry(settings, detect_host(), [FakeSource("booker", plugin)])
        server = await start_server(settings, registry, clock)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        running.append((server, channel))
        return pb_grpc.ExecutionPlannerServiceStub(channel), clock, plugin, server

    yield start
    for server, channel in running:
        await channel.close()
        await server.shutdown(0)


def scheduled(cores=4, windows=((T0, T0 + 8 * HOUR),), hours=2, max_hours=None):
    request = {
        "tasktype": DOCKER,
        "taskinfo": {"cores": cores},
        "schedule": {
            "windows": [{"start": s.isoformat(), "end": e.isoformat()} for s, e in windows],
            "min_duration": f"{hours * 3600}s",
        },
    }
    if max_hours:
        request["schedule"]["max_duration"] = f"{max_hours * 3600}s"
    return json_format.ParseDict(request, pb.AskRequest())


def reason_of(error):
    status = rpc_status.from_call(error)
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return None


def start_of(offer):
    return offer.slot.start.ToDatetime(tzinfo=UTC)


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


async def test_a_booking_finishes_when_its_slot_ends(site):
    stub, clock, _, _ = await site()
    answer = await ask_as(stub, "alice", hours=1)
    offer = answer.offers[0]
    booking = (await accept(stub, offer.id, "alice")).booking
    clock.now = offer.slot.end.ToDatetime(tzinfo=UTC)
    got = await stub.GetBooking(pb.GetBookingRequest(booking_id=booking.id), metadata=who("alice"))
    assert got.booking.state == pb.BOOKING_STATE_FINISHED


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


async def test_scheduling_can_be_off(site):
    stub, _, _, _ = await site({"enabled": False})
    answer = await ask_as(stub, "alice")
    assert [r.code for r in answer.reasons] == ["SCHEDULING_UNSUPPORTED"]
    info = await stub.GetServiceInfo(pb.GetServiceInfoRequest())
    assert not info.pools


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
    import time

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


class Offers:
    """Offers its own service type (``uri://<name>``) for DOCKER, and nothing
    else: whatever slot is found is held."""

    def __init__(self, name, release=None):
        self.name, self.release = name, release

    @hookimpl
    def ep_claims(self):
        return [Claim(DOCKER, (f"uri://{self.name}",))]

    @hookimpl
    async def ep_evaluate(self, query: TaskQuery):
        return Verdict.yes(Offer(f"uri://{self.name}", {"endpoint": "http://127.0.0.1:1/x"}))


class SlotPlugin(Offers):
    """Offers; its ep_slot is quick, or stuck until ``release`` is set."""

    @hookimpl
    def ep_slot(self, slot):
        if self.release is not None:
            self.release.wait(30)
        return None


@pytest.fixture
async def slot_site(tmp_path):
    """An EP (plugin deadline 0.3 s) with the given SlotPlugins; stuck ones
    are released when the test ends."""
    release = threading.Event()
    running = []

    async def start(*plugins):
        config = {
            "plugins": {"deadline": 0.3},
            "auth": {"tokens_file": str(tokens_file(tmp_path))},
            "schedule": {
                "ledger": ":memory:",
                "pools": {"cores": 64, "memory": "16GiB"},
                "max_outstanding_offers": 1000,
            },
        }
        settings = build_settings(config)
        sources = [FakeSource(p.name, p) for p in plugins]
        registry = load_registry(settings, detect_host(), sources)
        server = await start_server(settings, registry, Clock())
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        running.append((server, channel))
        return pb_grpc.ExecutionPlannerServiceStub(channel)

    try:
        yield start, release
    finally:
        release.set()
        for server, channel in running:
            await channel.close()
            await server.shutdown(0)


async def timed_ask(stub):
    loop = asyncio.get_running_loop()
    started = loop.time()
    answer = await stub.Ask(scheduled(cores=1), metadata=who("alice"), timeout=10)
    return answer, loop.time() - started


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


class SlowSlots(SlotPlugin):
    """ep_slot returns (or raises ``error``) after ``seconds`` every call."""

    def __init__(self, name, seconds, error=None):
        super().__init__(name)
        self.seconds, self.error, self.calls = seconds, error, 0

    @hookimpl
    def ep_slot(self, slot):
        self.calls += 1
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        return None


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


class StuckResources(Offers):
    """Offers; its plain ep_resources blocks until released (a hung lookup)."""

    @hookimpl
    def ep_resources(self, query: TaskQuery):
        self.release.wait(30)
        return {"cores": 3}


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
