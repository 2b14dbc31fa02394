"""The operator page (ep_server.http.page, ep_server.http.timeline) without
a browser: the view built from plain data, the HTML drawn from it, and the
aiohttp handler on loopback."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from types import SimpleNamespace
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ep_server.http.page import (
    HEADERS,
    HostView,
    PageView,
    PluginView,
    PoolView,
    page_handler,
    page_view,
    render_page,
)
from ep_server.http.timeline import DaySummary, days, midnights, timeline_svg
from ep_server.model import Schedule, Window
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.schedule.bookings import Occupancy
from ep_server.schedule.ledger import (
    Candidate,
    LedgerUnavailable,
    OccupancyStep,
    Placement,
)
from ep_server.schedule.sqlite import SQLiteLedger

T0 = datetime(2031, 3, 4, 9, tzinfo=UTC)
H = timedelta(hours=1)
GIB = 2**30
HOSTILE = "<script>alert('x')</script> & \"quoted\""

INFO: dict[str, Any] = {
    "server_version": "0.1.0",
    "plugins": [
        {
            "name": "docker",
            "distribution": "ep-plugin-docker",
            "version": "0.2.0",
            "state": "LOADED",
            "tasktypes": ["uri://docker-container"],
            "servicetypes": ["uri://docker-uws"],
        },
        {"name": "broken", "distribution": "ep-plugin-broken", "state": "FAILED", "error": "boom"},
        {"name": "unwanted", "state": "BLOCKED"},
    ],
    "capacity": {"cores": 16, "memory": 64 * GIB, "architecture": "aarch64", "os": "linux"},
    "pools": {"memory": 16 * GIB, "cores": 8},
}


def occupancy(**pools: list[tuple[float, float, int, int]]) -> Occupancy:
    """Steps given in hours after T0, over a week from T0."""
    return Occupancy(
        T0,
        T0 + 7 * 24 * H,
        {
            name: [
                OccupancyStep(T0 + a * H, T0 + b * H, booked, offered)
                for a, b, booked, offered in steps
            ]
            for name, steps in pools.items()
        },
    )


WEEK = occupancy(
    cores=[(0, 2, 3, 0), (2, 5, 3, 2), (5, 168, 0, 0)],
    memory=[(0, 30, 0, 4 * GIB), (30, 168, 0, 0)],
)


def text_of(html: str) -> str:
    """What a reader sees: the document without tags, entities decoded."""

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []

        def handle_data(self, data: str) -> None:
            self.parts.append(data)

    parser = Text()
    parser.feed(html)
    return " ".join(" ".join(parser.parts).split())


class Structure(HTMLParser):
    """Checks that elements nest and close, and records tags and attributes."""

    VOID = frozenset({"meta", "br", "img", "input", "link", "hr"})
    #: SVG elements written self-closing (``<line .../>``).
    SELF_CLOSING = frozenset({"line", "path", "rect"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.tags: list[str] = []
        self.attributes: set[str] = set()
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.update(name for name, _ in attrs)
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.update(name for name, _ in attrs)
        if tag not in self.SELF_CLOSING:
            self.problems.append(f"<{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.problems.append(f"</{tag}> closes nothing open")


def structure(html: str) -> Structure:
    parser = Structure()
    parser.feed(html)
    parser.close()
    return parser


# --- The view and the document ------------------------------------------------------


def test_the_page_shows_version_plugins_host_and_pools() -> None:
    text = text_of(render_page(page_view(INFO, WEEK, books=True)))
    for shown in [
        "Server version ep-server 0.1.0",
        "As of 2031-03-04 09:00 UTC",
        "docker loaded Distribution ep-plugin-docker 0.2.0",
        "Task types uri://docker-container Service types uri://docker-uws",
        "broken failed Distribution ep-plugin-broken Task types none Service types none Error boom",
        "unwanted blocked",
        "Blocked by this site's configuration",
        "Cores 16 Memory 64GiB Architecture aarch64 Operating system linux",
        "Pools cores 8 memory 16GiB",
        "over the coming 7 days, from 2031-03-04 09:00 UTC to 2031-03-11 09:00 UTC",
    ]:
        assert shown in text, shown


def test_the_view_is_plain_data_with_amounts_only() -> None:
    view = page_view(INFO, WEEK, books=True)
    assert view.host == HostView(16, 64 * GIB, "aarch64", "linux")
    assert [p.name for p in view.pools] == ["cores", "memory"]  # by name
    assert view.pools[0] == PoolView("cores", 8, tuple(WEEK.pools["cores"]))
    assert view.plugins[2] == PluginView("unwanted", "", "", "BLOCKED", "", (), ())
    names = {
        f.name for cls in (PageView, PluginView, HostView, PoolView, OccupancyStep)
        for f in dataclasses.fields(cls)
    }  # fmt: skip
    assert not {n for n in names if "owner" in n or n == "id" or n.endswith("_id")}


def test_third_party_text_is_escaped_everywhere() -> None:
    info = {
        **INFO,
        "server_version": HOSTILE,
        "plugins": [
            {
                "name": HOSTILE,
                "distribution": HOSTILE,
                "version": HOSTILE,
                "state": "FAILED",
                "error": HOSTILE,
                "tasktypes": [HOSTILE],
                "servicetypes": [HOSTILE],
            }
        ],
        "pools": {HOSTILE: 4},
        "capacity": {"architecture": HOSTILE, "os": HOSTILE},
    }
    html = render_page(page_view(info, occupancy(**{HOSTILE: [(0, 1, 1, 1)]}), books=True))
    assert "<script" not in html
    assert "alert('x')" not in html  # quotes are escaped too
    assert html.count("&lt;script&gt;") >= 10
    assert text_of(html).count(HOSTILE) >= 10
    assert structure(html).problems == []


def test_no_owner_or_id_is_shown_when_there_are_bookings_and_offers() -> None:
    ledger = SQLiteLedger(":memory:", {"cores": 8})
    candidate = Candidate("p", "uri://svc", {"endpoint": "http://x"}, {"cores": 2})
    schedule = Schedule((Window(T0, T0 + 10 * H),), 2 * H)
    offers = [
        *ledger.place(Placement("token:alice", "ask-1", (candidate,), schedule), T0),
        *ledger.place(Placement("jwt:bob", "ask-2", (candidate,), schedule), T0),
    ]
    booking, _ = ledger.accept(offers[0].id, "token:alice", T0)
    steps = ledger.occupancy("cores", T0, T0 + 7 * 24 * H, T0)
    ledger.close()
    week = Occupancy(T0, T0 + 7 * 24 * H, {"cores": steps})
    html = render_page(page_view({**INFO, "pools": {"cores": 8}}, week, books=True))
    secrets = ["alice", "bob", "ask-1", "ask-2", booking.id, *(o.id for o in offers)]
    assert [s for s in secrets if s in html] == []
    assert '<path class="booked"' in html
    assert '<path class="offered"' in html


def test_a_booking_site_has_a_picture_and_a_table_per_pool() -> None:
    html = render_page(page_view(INFO, WEEK, books=True))
    assert html.count('<svg class="timeline"') == 2
    assert html.count("<table>") == 2
    assert 'aria-labelledby="pool-0"' in html
    assert '<title id="pool-0">cores: at most 3 booked and 2 offered of 8</title>' in html
    assert '<title id="pool-1">memory: at most 0B booked and 4GiB offered of 16GiB</title>' in html
    rows = re.findall(r"<tr><th scope=row>([^<]*)</th><td>([^<]*)</td><td>([^<]*)</td>"
                      r"<td>([^<]*)</td></tr>", html)  # fmt: skip
    assert rows[:3] == [("Tue 4 Mar", "3", "2", "3"), ("Wed 5 Mar", "0", "0", "8"),
                        ("Thu 6 Mar", "0", "0", "8")]  # fmt: skip
    assert len(rows) == 16  # 7 days from 09:00 touch 8 dates


def test_a_site_without_bookings_says_so_and_draws_nothing() -> None:
    html = render_page(page_view({**INFO, "pools": {}}, None, books=False))
    assert "This site takes no bookings" in text_of(html)
    assert "<svg" not in html
    assert "<table" not in html
    assert "As of" not in html


def test_a_booking_site_whose_occupancy_is_unknown_says_why() -> None:
    html = render_page(page_view(INFO, None, books=True, problem="The ledger is away."))
    text = text_of(html)
    assert "Pools cores 8 memory 16GiB The ledger is away." in text
    assert "<svg" not in html


def test_the_document_is_well_formed_self_contained_and_scriptless() -> None:
    html = render_page(page_view(INFO, WEEK, books=True))
    assert html.startswith('<!doctype html>\n<html lang="en">')
    parsed = structure(html)
    assert parsed.problems == []
    assert parsed.open == []
    assert parsed.tags.count("h1") == 1
    assert {"h2", "h3", "dl", "table", "caption", "svg", "title"} <= set(parsed.tags)
    assert "script" not in parsed.tags
    assert not {"src", "href", "style"} & parsed.attributes  # nothing loaded, no inline style
    assert not {a for a in parsed.attributes if a.startswith("on")}
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html


def test_the_policy_allows_the_style_sheet_by_its_hash_and_nothing_else() -> None:
    html = render_page(page_view(INFO, WEEK, books=True))
    [sheet] = re.findall(r"<style>(.*?)</style>", html, re.S)
    digest = base64.b64encode(hashlib.sha256(sheet.encode()).digest()).decode()
    policy = HEADERS["Content-Security-Policy"]
    assert policy.startswith("default-src 'none'; ")
    assert f"style-src 'sha256-{digest}';" in policy
    assert "unsafe" not in policy
    assert HEADERS["Cache-Control"] == "no-store"


# --- The picture and the days ---------------------------------------------------------


def test_midnights_are_those_strictly_inside_the_stretch() -> None:
    midnight = datetime(2031, 3, 5, tzinfo=UTC)
    assert midnights(T0, T0 + 2 * 24 * H) == [midnight, midnight + 24 * H]
    assert midnights(midnight, midnight + 24 * H) == []
    assert midnights(midnight, midnight + 24 * H + H) == [midnight + 24 * H]


def test_days_give_the_most_booked_and_offered_and_the_least_free() -> None:
    midnight = datetime(2031, 3, 5, tzinfo=UTC)
    steps = [
        OccupancyStep(T0, midnight + 2 * H, 5, 1),  # across midnight
        OccupancyStep(midnight + 2 * H, midnight + 3 * H, 1, 6),
        OccupancyStep(midnight + 3 * H, T0 + 48 * H, 0, 0),
    ]
    assert days(steps, 8, T0, T0 + 48 * H) == [
        DaySummary(T0, 5, 1, 2),
        DaySummary(midnight, 5, 6, 1),
        DaySummary(midnight + 24 * H, 0, 0, 8),
    ]
    assert days([], 8, T0, T0 + H) == [DaySummary(T0, 0, 0, 8)]


def test_the_picture_stacks_offered_on_booked_below_the_capacity_line() -> None:
    steps = [OccupancyStep(T0, T0 + 84 * H, 4, 2), OccupancyStep(T0 + 84 * H, T0 + 168 * H, 0, 0)]
    svg = timeline_svg(steps, 8, T0, T0 + 168 * H, title="t", title_id="p")
    # Half the width; the plot is 1000 high with capacity 8 at 1000 - 1000 / 1.12.
    booked = re.search(r'<path class="booked" d="([^"]*)"', svg)
    offered = re.search(r'<path class="offered" d="([^"]*)"', svg)
    assert booked
    assert offered
    assert "L0.0 553.6 L5000.0 553.6" in booked[1]  # 4 of 8.96
    assert "L0.0 330.4 L5000.0 330.4" in offered[1]  # 6 of 8.96
    assert 'class="capacity" x1="0" x2="10000" y1="107.1" y2="107.1"' in svg
    assert svg.count('class="midnight"') == 7
    assert '<text class="label day" x="' in svg


def test_an_empty_pool_draws_no_band() -> None:
    svg = timeline_svg([OccupancyStep(T0, T0 + H, 0, 0)], 0, T0, T0 + H, title="t", title_id="p")
    assert "<path" not in svg
    assert "capacity 0" in svg


# --- The handler -----------------------------------------------------------------------


class Unreachable:
    async def occupancy(self, days: int) -> Occupancy:
        raise LedgerUnavailable("db.example:5432: connection refused")


async def fetch(site: Any) -> tuple[int, dict[str, str], str]:
    app = web.Application()
    app.router.add_get("/", page_handler(site))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        response = await client.get("/")
        return response.status, dict(response.headers), await response.text()


def service_info(pools: dict[str, int]) -> pb.GetServiceInfoResponse:
    info = pb.GetServiceInfoResponse(server_version="9.9.9", pools=pools)
    info.plugins.add(name="docker", state=pb.PLUGIN_STATE_LOADED, tasktypes=["uri://a"])
    info.capacity.cores = 4
    return info


async def test_the_handler_serves_the_page_with_its_headers() -> None:
    status, headers, body = await fetch(SimpleNamespace(info=service_info({}), bookings=None))
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    for name, value in HEADERS.items():
        assert headers[name] == value
    text = text_of(body)
    assert "ep-server 9.9.9" in text
    assert "docker loaded" in text
    assert "This site takes no bookings" in text


async def test_the_handler_says_when_the_ledger_cannot_be_reached() -> None:
    site = SimpleNamespace(info=service_info({"cores": 4}), bookings=Unreachable())
    status, _, body = await fetch(site)
    assert status == 200
    assert "The booking ledger cannot be reached now" in text_of(body)
    assert "db.example" not in body  # where the ledger lives is for the log


class Counting:
    """A booking site whose occupancy reads are counted, each taking a while."""

    def __init__(self) -> None:
        self.reads = 0

    async def occupancy(self, days: int) -> Occupancy:
        self.reads += 1
        await asyncio.sleep(0.05)
        return Occupancy(T0, T0 + timedelta(days=days), {"cores": []})


async def test_loads_share_one_ledger_read_while_it_is_fresh() -> None:
    now = [0.0]
    site = SimpleNamespace(info=service_info({"cores": 4}), bookings=Counting())
    app = web.Application()
    app.router.add_get("/", page_handler(site, fresh_for=2.0, clock=lambda: now[0]))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        loads = await asyncio.gather(*(client.get("/") for _ in range(20)))
        assert {response.status for response in loads} == {200}
        assert site.bookings.reads == 1  # twenty loads at once, one read
        now[0] = 1.9
        assert (await client.get("/")).status == 200
        assert site.bookings.reads == 1
        now[0] = 2.1  # stale: read again
        assert (await client.get("/")).status == 200
        assert site.bookings.reads == 2


async def test_a_site_that_describes_itself_to_known_callers_only_shows_occupancy_alone() -> None:
    site = SimpleNamespace(info=service_info({"cores": 4}), bookings=Counting())
    app = web.Application()
    app.router.add_get("/", page_handler(site, describe=False))
    async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
        body = await (await client.get("/")).text()
    text = text_of(body)
    assert "9.9.9" not in text  # the version
    assert "docker" not in text  # the plugins
    assert "to callers with credentials only" in text
    assert "<svg" in body  # the pools' occupancy is still there


def test_the_door_describes_the_site_on_its_page_only_where_anyone_may_ask(ep_server) -> None:
    import urllib.request

    for anonymous, shown in ((["Ask", "GetServiceInfo"], True), (["Ask"], False)):
        url = ep_server({"auth": {"anonymous": anonymous}}, allow=["static"]).http_url
        with urllib.request.urlopen(f"{url}/", timeout=10) as response:
            text = response.read().decode()
        assert ("static" in text) is shown, anonymous
