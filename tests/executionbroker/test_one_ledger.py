"""The ExecutionBroker routes and gRPC share one ledger: the same slots are
offered and booked through either door, never more than the pools hold."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from executionbroker.conftest import Broker, docker_request
from google.protobuf import json_format
from psycopg.conninfo import conninfo_to_dict
from schedule.ledgers import PostgresStore
from schedule.rpc_site import T0, who

from ep_server.model import Slot
from ep_server.pb import execution_planner_pb2 as pb

CORES = 8  # the fixture's pool


def grpc_ask(cores: int, start: datetime, end: datetime, hours: int = 2) -> pb.AskRequest:
    request = {
        "tasktype": "uri://docker-container",
        "taskinfo": {"image": "docker.io/example:1.0"},
        "resources": {"cores": {"min": cores, "max": cores}},
        "schedule": {
            "windows": [{"start": start.isoformat(), "end": end.isoformat()}],
            "min_duration": f"{hours * 3600}s",
        },
    }
    return json_format.ParseDict(request, pb.AskRequest())


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def zulu(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def peak(b: Broker) -> int:
    assert b.running.bookings is not None
    ledger = b.running.bookings.ledger
    return ledger.peak("cores", Slot(T0, T0 + timedelta(days=30)), b.clock.now)


async def test_an_offer_held_over_http_is_not_offered_over_grpc(broker: Any) -> None:
    b: Broker = await broker()
    request = docker_request(cores=6, at=zulu(at(1)), window="PT0S")
    [session] = (await b.offerset(request)).data["offers"]
    assert session["schedule"]["executing"]["start"] == f"{zulu(at(1))}/PT0S"

    squeezed = await b.stub.Ask(grpc_ask(4, at(1), at(1)), metadata=who("bob"), timeout=10)
    assert not squeezed.offers  # 6 + 4 > 8 from 10:00
    later = await b.stub.Ask(grpc_ask(4, at(1), at(5)), metadata=who("bob"), timeout=10)
    assert later.offers
    assert later.offers[0].slot.start.ToDatetime(tzinfo=UTC) >= at(3)  # after alice's

    await b.update(session, "ACCEPTED")
    booked = pb.AcceptOfferRequest(offer_id=later.offers[0].id)
    await b.stub.AcceptOffer(booked, metadata=who("bob"), timeout=10)
    assert peak(b) <= CORES


async def test_an_offer_made_over_http_is_booked_over_grpc_and_its_session_follows(
    broker: Any,
) -> None:
    b: Broker = await broker()
    session = (await b.offerset(docker_request(at=zulu(at(1))))).data["offers"][0]
    request = pb.AcceptOfferRequest(offer_id=session["uuid"].replace("-", ""))
    booking = (await b.stub.AcceptOffer(request, metadata=who("alice"), timeout=10)).booking
    read = await b.call("GET", f"/sessions/{session['uuid']}")
    assert read.data["state"] == "WAITING"
    cancel = pb.CancelBookingRequest(booking_id=booking.id)
    await b.stub.CancelBooking(cancel, metadata=who("alice"), timeout=10)
    assert (await b.call("GET", f"/sessions/{session['uuid']}")).data["state"] == "CANCELLED"


async def test_asks_through_both_doors_never_overbook(broker: Any) -> None:
    b: Broker = await broker(max_outstanding_offers=100)
    rng = random.Random(14)
    booked = 0
    for turn in range(24):
        cores, start = rng.randint(1, 6), rng.randint(0, 8)
        if turn % 2:
            answer = await b.stub.Ask(
                grpc_ask(cores, at(start), at(start + 2)), metadata=who("bob"), timeout=10
            )
            if answer.offers and rng.random() < 0.7:
                accept = pb.AcceptOfferRequest(offer_id=answer.offers[0].id)
                await b.stub.AcceptOffer(accept, metadata=who("bob"), timeout=10)
                booked += 1
        else:
            request = docker_request(cores=cores, at=zulu(at(start)), window="PT2H")
            offers = (await b.offerset(request)).data["offers"]
            if offers and rng.random() < 0.7:
                assert (await b.update(offers[0], "ACCEPTED")).status == 200
                booked += 1
        assert peak(b) <= CORES
    assert booked >= 6  # the pool filled up through both doors


@pytest.fixture
def postgres_ledger() -> Iterator[str]:
    """A ``[schedule] ledger`` URI naming an empty schema of its own in the
    test PostgreSQL database."""
    store = PostgresStore()
    params = conninfo_to_dict(store.dsn)
    options = quote(str(params.get("options", "")))
    user, host = params.get("user", "postgres"), params.get("host", "127.0.0.1")
    where = f"{host}:{params.get('port', 5432)}/{params['dbname']}"
    yield f"postgresql://{user}@{where}?options={options}"
    store.close()


async def test_two_replicas_on_postgresql_share_offer_sets_sessions_and_slots(
    broker: Any, postgres_ledger: str
) -> None:
    one: Broker = await broker(ledger=postgres_ledger)
    two: Broker = await broker(clock=one.clock, ledger=postgres_ledger)
    request = docker_request(cores=6, at=zulu(at(1)), window="PT0S")
    made = (await one.offerset(request)).data
    [session] = made["offers"]
    read = (await two.call("GET", f"/offersets/{made['uuid']}")).data
    assert [s["uuid"] for s in read["offers"]] == [session["uuid"]]
    assert read["offers"][0]["state"] == "OFFERED"
    squeezed = await two.stub.Ask(grpc_ask(4, at(1), at(1)), metadata=who("bob"), timeout=10)
    assert not squeezed.offers  # the offer one made holds the slot for both

    assert (await two.update(session, "ACCEPTED")).data["state"] == "ACCEPTED"
    assert (await one.call("GET", f"/sessions/{session['uuid']}")).data["state"] == "WAITING"
    assert (await one.update(session, "CANCELLED")).data["state"] == "CANCELLED"
    assert peak(one) == 0
