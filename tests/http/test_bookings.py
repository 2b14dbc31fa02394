"""The booking routes over HTTP, on a site that books with two callers
(alice and bob): a scheduled ``POST /v1/ask`` holds offers with ids,
``POST /v1/offers/{id}:accept`` books one, ``:reject`` releases one,
``GET /v1/bookings`` pages through the caller's bookings, ``GET
/v1/bookings/{id}`` reads one and ``POST /v1/bookings/{id}:cancel`` cancels
it.

Every booking route needs credentials: none, or a token the site does not
know, is 401 with ``WWW-Authenticate``. Another caller's offer or booking
is 404, exactly like one that does not exist: the service answers NOT_FOUND
rather than PERMISSION_DENIED so that ids cannot be probed for existence,
which is why 403 never occurs on these routes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from http_site import SEED, Reply, Site, booking_config
from schedule.rpc_site import HOUR, T0, Booker, Clock

OFFERS = "/v1/offers/{}"
BOOKINGS = "/v1/bookings/{}"


def scheduled(cores: int = 4, hours: int = 2, window_hours: int = 8) -> dict[str, Any]:
    return {
        **SEED,
        "taskinfo": {"cores": cores},
        "schedule": {
            "windows": [
                {
                    "start": T0.isoformat(),
                    "end": (T0 + window_hours * HOUR).isoformat(),
                }
            ],
            "min_duration": f"{hours * 3600}s",
        },
    }


async def offers_for(s: Site, user: str = "alice", **kwargs: Any) -> list[dict[str, Any]]:
    reply = await s.post("/v1/ask", json=scheduled(**kwargs), user=user)
    assert reply.status == 200, reply.json
    assert reply.json["responseword"] == "YES"
    return list(reply.json["offers"])


async def booked(s: Site, user: str = "alice") -> dict[str, Any]:
    offer = (await offers_for(s, user))[0]
    reply = await s.post(OFFERS.format(offer["id"]) + ":accept", user=user)
    assert reply.status == 200, reply.json
    return dict(reply.json["booking"])


def assert_unauthenticated(reply: Reply, reason: str) -> None:
    assert reply.status == 401, reply.json
    assert reply.json["code"] == 16  # UNAUTHENTICATED
    assert reply.reason() == reason
    assert reply.headers["WWW-Authenticate"].startswith("Bearer ")


def assert_not_found(reply: Reply, reason: str) -> None:
    assert reply.status == 404, reply.json
    assert reply.json["code"] == 5  # NOT_FOUND
    assert reply.reason() == reason


async def test_an_accepted_offer_is_a_booking_to_read_list_and_cancel(booking_site):
    s = booking_site
    first, *siblings = await offers_for(s, cores=6)
    assert all(o["id"] and o["expire_time"] for o in [first, *siblings])
    reply = await s.post(OFFERS.format(first["id"]) + ":accept", user="alice")
    assert reply.status == 200
    booking = reply.json["booking"]
    assert booking["state"] == "BOOKING_STATE_BOOKED"
    assert booking["owner"] == "token:alice"
    assert booking["hold"] == {"cores": "6"}
    assert booking["slot"] == first["slot"]
    # Accepting one offer released its siblings.
    for sibling in siblings:
        gone = await s.post(OFFERS.format(sibling["id"]) + ":accept", user="alice")
        assert_not_found(gone, "OFFER_NOT_FOUND")

    got = await s.get(BOOKINGS.format(booking["id"]), user="alice")
    assert (got.status, got.json) == (200, {"booking": booking})
    listed = await s.get("/v1/bookings", user="alice")
    assert (listed.status, listed.json) == (200, {"bookings": [booking]})

    cancelled = await s.post(BOOKINGS.format(booking["id"]) + ":cancel", user="alice")
    assert cancelled.status == 200
    assert cancelled.json["booking"]["state"] == "BOOKING_STATE_CANCELLED"
    again = await s.post(BOOKINGS.format(booking["id"]) + ":cancel", user="alice")
    assert (again.status, again.json) == (200, cancelled.json)
    assert s.plugins[0].booked == [booking["id"]]


async def test_a_rejected_offer_is_gone(booking_site):
    s = booking_site
    offer, *_ = await offers_for(s)
    reply = await s.post(OFFERS.format(offer["id"]) + ":reject", user="alice")
    assert (reply.status, reply.json) == (200, {})
    gone = await s.post(OFFERS.format(offer["id"]) + ":accept", user="alice")
    assert_not_found(gone, "OFFER_NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"data": b"", "headers": {"Content-Type": "application/json"}},
        {"data": b"{}", "headers": {"Content-Type": "application/json"}},
        {"json": {}},
    ],
    ids=["no body", "empty json body", "{}", "{} by json="],
)
async def test_accept_and_cancel_take_no_body_or_an_empty_object(booking_site, body):
    s = booking_site
    offer, *_ = await offers_for(s)
    accepted = await s.post(OFFERS.format(offer["id"]) + ":accept", user="alice", **body)
    assert accepted.status == 200, accepted.json
    booking_id = accepted.json["booking"]["id"]
    cancelled = await s.post(BOOKINGS.format(booking_id) + ":cancel", user="alice", **body)
    assert cancelled.status == 200, cancelled.json


async def test_the_path_names_the_offer_whatever_the_body_says(booking_site):
    s = booking_site
    mine, *_ = await offers_for(s)
    body = {"offer_id": "someone-elses"}
    reply = await s.post(OFFERS.format(mine["id"]) + ":accept", user="alice", json=body)
    assert reply.status == 200, reply.json
    assert reply.json["booking"]["slot"] == mine["slot"]
    query = await s.post(OFFERS.format(mine["id"]) + ":accept?offer_id=x", user="alice")
    assert query.status == 400
    assert query.violations() == {"offer_id": "is not read: the body carries the request"}


ROUTES = [
    ("POST", "/v1/offers/{offer}:accept"),
    ("POST", "/v1/offers/{offer}:reject"),
    ("GET", "/v1/bookings"),
    ("GET", "/v1/bookings/{booking}"),
    ("POST", "/v1/bookings/{booking}:cancel"),
]


@pytest.fixture
async def alices(booking_site):
    """The booking site, with an offer and a booking of alice's."""
    booking = await booked(booking_site)
    offer, *_ = await offers_for(booking_site, window_hours=24)
    return booking_site, {"offer": offer["id"], "booking": booking["id"]}


@pytest.mark.parametrize(("method", "route"), ROUTES)
async def test_each_booking_route_needs_credentials(alices, method, route):
    s, ids = alices
    path = route.format(**ids)
    assert_unauthenticated(await s.request(method, path), "CREDENTIALS_REQUIRED")
    assert_unauthenticated(await s.request(method, path, user="not-a-token"), "TOKEN_UNKNOWN")
    bearer_less = await s.request(method, path, headers={"Authorization": "Basic YWxpY2U6eA=="})
    assert bearer_less.status == 401


@pytest.mark.parametrize(("method", "route"), ROUTES)
async def test_another_caller_s_offer_or_booking_is_not_found(alices, method, route):
    s, ids = alices
    path = route.format(**ids)
    reply = await s.request(method, path, user="bob")
    # NOT_FOUND, never PERMISSION_DENIED: bob must not learn that alice's
    # ids exist, so 403 does not occur here.
    if route == "/v1/bookings":
        assert (reply.status, reply.json) == (200, {})  # bob's own list is empty
    else:
        assert_not_found(reply, "OFFER_NOT_FOUND" if "offers" in route else "BOOKING_NOT_FOUND")
    # ...and alice's are untouched.
    assert (await s.request(method, path, user="alice")).status == 200


async def test_an_unknown_id_is_not_found(booking_site):
    s = booking_site
    assert_not_found(await s.post("/v1/offers/nope:accept", user="alice"), "OFFER_NOT_FOUND")
    assert_not_found(await s.get("/v1/bookings/nope", user="alice"), "BOOKING_NOT_FOUND")


async def test_an_expired_offer_is_400_failed_precondition(booking_site):
    s = booking_site
    offer, *_ = await offers_for(s)
    s.clock.now += timedelta(minutes=6)
    reply = await s.post(OFFERS.format(offer["id"]) + ":accept", user="alice")
    assert (reply.status, reply.json["code"], reply.reason()) == (400, 9, "OFFER_EXPIRED")


async def test_bookings_are_listed_a_page_at_a_time(site, tmp_path):
    config = booking_config(tmp_path)
    config["schedule"] |= {"max_offers": 1, "max_outstanding_offers": 100}
    s = await site(config, Booker(), clock=Clock())
    for _ in range(5):
        [offer] = await offers_for(s, cores=8, hours=1, window_hours=100)
        assert (await s.post(OFFERS.format(offer["id"]) + ":accept", user="alice")).status == 200
    seen, token, pages = [], "", 0
    while True:
        reply = await s.get(
            "/v1/bookings", user="alice", params={"page_size": 2, "page_token": token}
        )
        assert reply.status == 200
        assert len(reply.json["bookings"]) <= 2
        seen += [b["id"] for b in reply.json["bookings"]]
        pages += 1
        token = reply.json.get("next_page_token", "")
        if not token:
            break
    assert (len(seen), len(set(seen)), pages) == (5, 5, 3)
    # The JSON name works in a query string too.
    camel = await s.get("/v1/bookings", user="alice", params={"pageSize": 4})
    assert len(camel.json["bookings"]) == 4
    for params, field in (
        ({"page_token": "not-a-token"}, "page_token"),
        ({"page_size": "-1"}, "page_size"),
        ({"page_size": "many"}, "page_size"),
        ({"page_size": ["1", "2"]}, "page_size"),
        ({"colour": "blue"}, "colour"),
    ):
        bad = await s.get("/v1/bookings", user="alice", params=list(_pairs(params)))
        assert bad.status == 400, params
        assert list(bad.violations()) == [field], bad.json


def _pairs(params: dict[str, Any]) -> Any:
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            yield key, item
