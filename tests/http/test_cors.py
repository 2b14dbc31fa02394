"""CORS: off by default (no ``Access-Control-*`` header, a preflight is a
method the route does not take); with ``[http] cors_origins``, a preflight
from a listed origin gets 204 with what it may send, and that origin's
requests, answers and errors alike, carry ``Access-Control-Allow-Origin``;
any other origin gets nothing."""

from __future__ import annotations

import pytest
from http_site import SEED, Reply

PORTAL = "https://portal.example.org"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type, authorization",
}


def cors_headers(reply: Reply) -> dict[str, str]:
    return {k: v for k, v in reply.headers.items() if k.lower().startswith("access-control-")}


async def test_cors_is_off_by_default(site):
    s = await site()
    reply = await s.post("/v1/ask", json=SEED, headers={"Origin": PORTAL})
    assert reply.status == 200
    assert cors_headers(reply) == {}
    preflight = await s.request("OPTIONS", "/v1/ask", headers={"Origin": PORTAL, **PREFLIGHT})
    assert preflight.status == 405
    assert cors_headers(preflight) == {}


@pytest.fixture
async def portal_site(site):
    return await site({"http": {"cors_origins": [PORTAL]}})


async def test_a_listed_origin_s_preflight_gets_204_with_what_it_may_send(portal_site):
    reply = await portal_site.request("OPTIONS", "/v1/ask", headers={"Origin": PORTAL, **PREFLIGHT})
    assert reply.status == 204
    headers = cors_headers(reply)
    assert headers["Access-Control-Allow-Origin"] == PORTAL
    assert "POST" in headers["Access-Control-Allow-Methods"]
    allowed = {h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "authorization", "x-request-id"} <= allowed
    assert "Origin" in reply.headers.getall("Vary")


async def test_a_listed_origin_s_answers_and_errors_may_be_read_by_its_page(portal_site):
    for reply in (
        await portal_site.post("/v1/ask", json=SEED, headers={"Origin": PORTAL}),
        await portal_site.post("/v1/ask", json={"tasktype": ""}, headers={"Origin": PORTAL}),
        await portal_site.get("/v1/bookings", headers={"Origin": PORTAL}),
        await portal_site.get("/v1/nowhere", headers={"Origin": PORTAL}),
    ):
        assert reply.headers["Access-Control-Allow-Origin"] == PORTAL, reply.status
        exposed = reply.headers["Access-Control-Expose-Headers"].lower()
        assert "x-request-id" in exposed
        assert "retry-after" in exposed
        assert "Origin" in reply.headers.getall("Vary")


async def test_another_origin_gets_no_cors_headers(portal_site):
    other = {"Origin": "https://evil.example.com"}
    reply = await portal_site.post("/v1/ask", json=SEED, headers=other)
    assert reply.status == 200  # CORS is the browser's check; the answer is sent
    assert cors_headers(reply) == {}
    preflight = await portal_site.request("OPTIONS", "/v1/ask", headers={**other, **PREFLIGHT})
    assert preflight.status == 405
    assert cors_headers(preflight) == {}


async def test_every_answer_varies_by_origin_when_only_some_origins_are_allowed(portal_site):
    # Else a cache may keep the answer without Access-Control-Allow-Origin
    # and serve it to the portal's page (or the portal's to anyone).
    for headers in ({}, {"Origin": "https://evil.example.com"}):
        for reply in (
            await portal_site.get("/v1/serviceinfo", headers=headers),
            await portal_site.get("/openapi.json", headers=headers),
        ):
            assert "Origin" in reply.headers.getall("Vary", []), (headers, reply.status)


async def test_any_origin_with_a_star(site):
    s = await site({"http": {"cors_origins": ["*"]}})
    reply = await s.post("/v1/ask", json=SEED, headers={"Origin": "https://anywhere.example"})
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
