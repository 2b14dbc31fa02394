"""Replicas of one site, as separate ``ep-server serve`` processes on one
PostgreSQL ledger, under a flood of 200 concurrent clients that ask and
accept across them (tests/replica_flood.py): they never overbook together,
an offer accepted through two replicas at once is one booking announced
once, and one caller never sees another's offers or bookings. Faults
during a flood: a replica killed with SIGKILL loses nothing it
acknowledged and its offers stay acceptable through the others;
PostgreSQL restarted makes calls UNAVAILABLE with a RetryInfo and the
health service NOT_SERVING while it is down, never a wrong answer, and all
is well again soon after it is back. And ``ep-server serve --workers 2``
on the ledger.

PostgreSQL is a throwaway server of the tests' own (tests/replica_site.py),
so that restarting it disturbs nothing else; its programs are required:
without them these tests fail, never skip. Every wait is bounded; the
timings measured are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2
from replica_flood import CALL_SECONDS, Answer, Flood, Seen, ask_request, classify
from replica_site import (
    ANNOUNCE_RETRY_AFTER,
    OWNERS,
    POOLS,
    Site,
    health,
    throwaway_postgres,
    token_of,
)
from schedule.ledgers import assert_within

from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.schedule.ledger import to_us
from tools.cluster.postgres import ThrowawayPostgres

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: The most any one flood may take, in seconds (they take a few).
FLOOD_SECONDS = 60.0
#: The most the health service may take to follow the ledger, in seconds
#: (it checks once a second).
HEALTH_SECONDS = 5.0


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    with throwaway_postgres() as server:
        yield server


@pytest.fixture
async def site(
    postgres: ThrowawayPostgres, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Site]:
    """A database of this test's own on the throwaway server, and the
    site's config; the test starts replicas, stopped here."""
    folder = tmp_path_factory.mktemp("site")
    made = Site.create(postgres, folder / "site", f"site_{folder.name}")
    yield made
    if postgres.server is not None and not postgres.server.running():
        postgres.serve()  # a test that failed while the database was down
    await made.stop()


def who(owner: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token_of(owner)}"),)


def now() -> datetime:
    return datetime.now(UTC)


def assert_never_overbooked(site: Site) -> None:
    """In SQL from the final state, and by brute force over the same rows."""
    assert site.overbooked() == []
    holds = site.holds()
    assert holds
    assert_within(holds, POOLS)


def assert_acknowledged_bookings_kept(site: Site, seen: Seen) -> None:
    """Every booking a client was told of is in the ledger, for its offer, BOOKED."""
    stored = site.bookings()
    for offer_id, booking_id in seen.booked.items():
        assert stored.get(booking_id) == (offer_id, 1), f"booking {booking_id} was not kept"


async def announced(site: Site, count: int, seconds: float = 10.0) -> list[str]:
    """The announcements, once ``count`` have landed (or after ``seconds``:
    they are made after the answer)."""
    for _ in range(int(seconds / 0.1)):
        if len(site.announced()) >= count:
            break
        await asyncio.sleep(0.1)
    return site.announced()


async def announced_all(site: Site, ids: set[str], seconds: float) -> list[str]:
    """The announcements, once every one of ``ids`` is among them (or after
    ``seconds``)."""
    for _ in range(int(seconds / 0.2)):
        if ids <= set(site.announced()):
            break
        await asyncio.sleep(0.2)
    return site.announced()


async def ask_and_accept(
    stub: pb_grpc.ExecutionPlannerServiceStub,
    owner: str,
    seed: int,
    through: pb_grpc.ExecutionPlannerServiceStub | None = None,
) -> pb.Booking:
    """A held Ask through ``stub``, its first offer accepted through
    ``through`` (the same replica unless given), a week ahead: after the
    time any flood books."""
    request = ask_request(random.Random(seed), now(), after=timedelta(days=7))
    answer = await stub.Ask(request, metadata=who(owner), timeout=CALL_SECONDS)
    assert answer.responseword == pb.YES, answer
    accept = pb.AcceptOfferRequest(offer_id=answer.offers[0].id)
    booker = through if through is not None else stub
    reply = await booker.AcceptOffer(accept, metadata=who(owner), timeout=CALL_SECONDS)
    assert reply.booking.state == pb.BOOKING_STATE_BOOKED
    return reply.booking


# --- Many clients, three replicas ------------------------------------------------------


async def test_replicas_flooded_never_overbook_and_book_each_offer_once(site: Site) -> None:
    await site.start(3)
    flood = Flood(site.stubs(), OWNERS, token_of, clients=200, rounds=3, seconds=FLOOD_SECONDS)
    started = time.monotonic()
    seen = await flood.run()
    print(f"flood: {time.monotonic() - started:.1f} s, {seen.yes} YES, {seen.no} NO")
    assert seen.wrong == []
    assert seen.unavailable == seen.unreachable == 0
    assert seen.yes == len(seen.booked) > 100
    assert seen.no > 0  # the pools filled up: the replicas competed for the last room
    assert_never_overbooked(site)
    assert_acknowledged_bookings_kept(site, seen)
    # Each offer was accepted through two replicas at once: one booking,
    # announced once, by whichever replica made it.
    said = await announced(site, len(seen.booked))
    assert sorted(said) == sorted(seen.booked.values())


async def test_another_owners_offers_and_bookings_are_not_found_through_every_replica(
    site: Site,
) -> None:
    await site.start(3)
    stubs = site.stubs()
    alice, bob = OWNERS[:2]
    mine = [await ask_and_accept(stubs[i], alice, seed=i, through=stubs[i - 1]) for i in range(3)]
    request = ask_request(random.Random(7), now())
    held = await stubs[0].Ask(request, metadata=who(alice), timeout=CALL_SECONDS)
    assert held.responseword == pb.YES
    for stub in stubs:
        for booking in mine:
            get = pb.GetBookingRequest(booking_id=booking.id)
            await assert_not_found(stub.GetBooking(get, metadata=who(bob)))
            cancel = pb.CancelBookingRequest(booking_id=booking.id)
            await assert_not_found(stub.CancelBooking(cancel, metadata=who(bob)))
        for offer in held.offers:
            accept = pb.AcceptOfferRequest(offer_id=offer.id)
            await assert_not_found(stub.AcceptOffer(accept, metadata=who(bob)))
            reject = pb.RejectOfferRequest(offer_id=offer.id)
            await assert_not_found(stub.RejectOffer(reject, metadata=who(bob)))
        listed = await stub.ListBookings(pb.ListBookingsRequest(), metadata=who(bob))
        assert list(listed.bookings) == []
    # Bob's tries changed nothing: alice's bookings are BOOKED, her offer acceptable.
    for stub in stubs:
        listed = await stub.ListBookings(pb.ListBookingsRequest(), metadata=who(alice))
        assert {(b.id, b.state) for b in listed.bookings} == {
            (b.id, pb.BOOKING_STATE_BOOKED) for b in mine
        }
    accept = pb.AcceptOfferRequest(offer_id=held.offers[0].id)
    booked = await stubs[2].AcceptOffer(accept, metadata=who(alice), timeout=CALL_SECONDS)
    assert booked.booking.state == pb.BOOKING_STATE_BOOKED


async def assert_not_found(call: object) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


# --- Faults during a flood ------------------------------------------------------------


async def test_a_replica_killed_mid_flood_loses_nothing_it_acknowledged(site: Site) -> None:
    await site.start(3)
    stubs = site.stubs()
    victim, alice = site.replicas[0], OWNERS[0]
    # Offers the victim makes, left unaccepted until it is gone.
    orphans = []
    for seed in range(10):
        request = ask_request(random.Random(1000 + seed), now())
        answer = await stubs[0].Ask(request, metadata=who(alice), timeout=CALL_SECONDS)
        assert answer.responseword == pb.YES
        orphans.append(answer.offers[0].id)
    flood = Flood(stubs, OWNERS, token_of, clients=200, rounds=3, seconds=FLOOD_SECONDS)
    running = asyncio.ensure_future(flood.run())
    await flood.progress(bookings=60, seconds=30)
    killed, killed_at = time.monotonic(), now()
    await site.kill(victim)
    seen = await running
    after = sum(at > killed for at in seen.booked_at.values())
    print(f"killed after {len(seen.booked) - after} bookings; {after} acknowledged after")
    assert seen.wrong == []
    assert after > 0
    assert seen.unreachable > 0  # clients did meet the replica gone, and went on
    assert_acknowledged_bookings_kept(site, seen)
    assert_never_overbooked(site)
    for i, offer_id in enumerate(orphans):
        accept = pb.AcceptOfferRequest(offer_id=offer_id)
        reply = await stubs[1 + i % 2].AcceptOffer(
            accept, metadata=who(alice), timeout=CALL_SECONDS
        )
        assert reply.booking.state == pb.BOOKING_STATE_BOOKED
        assert reply.booking.offer_id == offer_id
    # Every booking is announced: those the victim made and had not yet
    # announced (or recorded as announced) when it was killed, by the
    # others' sweeps, announce_retry_after later. A booking may be announced
    # twice: by the victim and not recorded, or by a replica whose record
    # of it waited behind the flood for longer than announce_retry_after
    # (10 s here); never more.
    everything = set(site.bookings())
    said = await announced_all(site, everything, 3 * ANNOUNCE_RETRY_AFTER + 10)
    assert set(said) == everything
    twice = {booking for booking in said if said.count(booking) > 1}
    made = dict(site.query("SELECT id, create_us FROM ep_bookings"))
    later = sum(made[booking] > to_us(killed_at) for booking in twice)
    print(
        f"{len(everything)} bookings announced, {len(twice)} of them twice"
        f" ({later} of those made after the kill)"
    )
    assert all(said.count(booking) == 2 for booking in twice)


async def test_postgresql_restarted_mid_flood_is_unavailable_then_well_again(
    site: Site, postgres: ThrowawayPostgres
) -> None:
    channels = await site.start(3)
    stubs = site.stubs()
    flood = Flood(stubs, OWNERS, token_of, clients=200, rounds=4, seconds=FLOOD_SECONDS)
    running = asyncio.ensure_future(flood.run())
    await flood.progress(bookings=40, seconds=30)
    stopped = time.monotonic()
    await asyncio.to_thread(postgres.stop)  # a fast shutdown, as pg_ctl restart does
    took_down = await site.until_health(channels, NOT_SERVING, HEALTH_SECONDS)
    alive = await asyncio.gather(*(health(c, "") for c in channels))
    assert alive == [SERVING] * 3  # the processes themselves are well
    # While it is down, a call that needs the ledger through each replica.
    probes = await asyncio.gather(*(probe(stub) for stub in stubs))
    for answer in probes:
        assert answer.code == grpc.StatusCode.UNAVAILABLE, answer
        assert answer.reason == "LEDGER_UNAVAILABLE", answer
        assert answer.retry_after is not None
        assert answer.retry_after > 0
    down = time.monotonic() - stopped
    postgres.serve()  # on this thread, which outlives the server (see Child)
    back = time.monotonic()
    took_up = await site.until_health(channels, SERVING, HEALTH_SECONDS)
    for i, stub in enumerate(stubs):  # at once, through every replica
        await ask_and_accept(stub, OWNERS[5], seed=i, through=stubs[i - 1])
    seen = await running
    after = sum(at > back for at in seen.booked_at.values())
    print(
        f"down {down:.1f} s: NOT_SERVING {took_down:.1f} s after the stop, SERVING "
        f"{took_up:.1f} s after the start; {seen.unavailable} calls UNAVAILABLE meanwhile, "
        f"{after} bookings acknowledged after"
    )
    assert seen.wrong == []
    assert seen.unavailable > 0
    assert after > 0
    assert_acknowledged_bookings_kept(site, seen)
    assert_never_overbooked(site)
    said = await announced(site, len(seen.booked))
    assert len(said) == len(set(said))


async def probe(stub: pb_grpc.ExecutionPlannerServiceStub) -> Answer:
    """How an Ask with a schedule ends: its reply, or how it failed."""
    request = ask_request(random.Random(3), now())
    try:
        return Answer(await stub.Ask(request, metadata=who(OWNERS[5]), timeout=CALL_SECONDS))
    except grpc.aio.AioRpcError as error:
        return classify(error)


# --- --workers -------------------------------------------------------------------------


async def test_workers_on_a_postgresql_ledger_answer_and_book(site: Site) -> None:
    await site.start(1, workers=2)
    address = site.replicas[0].address
    # Connections of their own, which the kernel spreads over the workers.
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(6)]
    site.channels += channels
    stubs = [pb_grpc.ExecutionPlannerServiceStub(c) for c in channels]
    booked = [await ask_and_accept(stub, OWNERS[0], seed=i) for i, stub in enumerate(stubs)]
    for stub in stubs:
        listed = await stub.ListBookings(pb.ListBookingsRequest(), metadata=who(OWNERS[0]))
        assert {b.id for b in listed.bookings} == {b.id for b in booked}
    # Both workers hold the ledger open: 4 connections each.
    count = (
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = 'ep-server ledger'"
    )
    for _ in range(100):
        if site.query(count)[0][0] >= 8:
            break
        await asyncio.sleep(0.1)
    assert site.query(count)[0][0] >= 8
