"""Fixtures of the HTTP door's tests, each on a real EP in this process
(gRPC and HTTP on free loopback ports):

- ``site`` starts EPs with fake plugins and any configuration, each with a
  gRPC stub and an aiohttp client for its HTTP door (tests/http_site.py);
  ``booking_site`` is one that takes bookings, with two callers (alice and
  bob, ``schedule.rpc_site.TOKENS``) and a clock the test sets.
- ``page_site(books=True)`` starts an EP (a booking plugin, a plugin that
  fails to load with a hostile error, a blocked one), makes a booking and
  leaves offers outstanding when it books; its HTTP door serves the
  operator page at ``GET /``.

Everything is stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from fake_plugins.common import FakeSource
from http_site import Site, StartSite, booking_config, sites
from schedule.rpc_site import HOUR, T0, Booker, Clock, accept, ask_as, tokens_file

from ep_server.model import HostInfo
from ep_server.pb import execution_planner_pb2 as pb
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import load_registry
from ep_server.server import start_server
from ep_server.testing import build_settings

HOST = HostInfo(cores=16, memory=64 * 2**30, architecture="x86_64", os="linux")
#: A plugin's error as hostile as third-party text can be.
HOSTILE = '<script>alert("owned")</script> & <img src=x onerror=alert(1)>'


@dataclass
class PageSite:
    """A running EP and its page."""

    url: str
    #: Strings the page must never show: owners and booking and offer ids.
    secrets: list[str] = field(default_factory=list)
    #: The error of the plugin that failed to load, to be shown as text.
    hostile: str = HOSTILE


@pytest.fixture
async def site() -> AsyncIterator[StartSite]:
    async with sites() as start:
        yield start


@pytest.fixture
async def booking_site(site: StartSite, tmp_path: Path) -> Site:
    """A site that books (the Booker plugin, a clock at ``rpc_site.T0``)."""
    return await site(booking_config(tmp_path), Booker(), clock=Clock())


@pytest.fixture
async def page_site(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[PageSite]]]:
    stops: list[Callable[[], Awaitable[None]]] = []

    async def start(*, books: bool) -> PageSite:
        config = {
            "plugins": {"block": ["unwanted"]},
            "auth": {"tokens_file": str(tokens_file(tmp_path))},
            "schedule": {
                "enabled": books,
                "pools": {"cores": 8, "memory": "16GiB", "gpus": 2},
            },
        }
        settings = build_settings(config)
        sources = [
            FakeSource("booker", Booker()),
            FakeSource("hostile", error=RuntimeError(HOSTILE)),
            FakeSource("unwanted", Booker()),
        ]
        running = await start_server(settings, load_registry(settings, HOST, sources), Clock())
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
        stub = pb_grpc.ExecutionPlannerServiceStub(channel)
        info = await stub.GetServiceInfo(pb.GetServiceInfoRequest(), timeout=10)
        assert info.plugins  # the site answers
        secrets = await _book(stub) if books else []

        async def stop() -> None:
            await channel.close()
            await running.shutdown(0)

        stops.append(stop)
        # The page as the server's HTTP door serves it.
        return PageSite(f"http://127.0.0.1:{running.http_port}/", secrets)

    yield start
    for stop in stops:
        await stop()


#: (caller, cores, hours, window: hours after the clock's now, accepted)
_ASKS = [
    ("alice", 5, 3, (0, 8), True),
    ("bob", 2, 4, (20, 30), False),
    ("alice", 8, 6, (50, 60), True),
    ("bob", 3, 10, (75, 80), True),
    ("alice", 6, 5, (110, 120), False),
]


async def _book(stub: pb_grpc.ExecutionPlannerServiceStub) -> list[str]:
    """Bookings and outstanding offers of alice's and bob's over the coming
    days; their owners and ids."""
    secrets = ["alice", "bob"]
    for caller, cores, hours, (start, end), accepted in _ASKS:
        window = ((T0 + start * HOUR, T0 + end * HOUR),)
        answer = await ask_as(stub, caller, cores=cores, hours=hours, windows=window)
        assert answer.offers, (caller, cores, hours, start)
        secrets.extend(o.id for o in answer.offers)
        if accepted:
            booked = (await accept(stub, answer.offers[0].id, caller)).booking
            secrets.extend([booked.id, booked.owner])
    return secrets
