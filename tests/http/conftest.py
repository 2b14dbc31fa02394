"""The HTTP door on a real server: ``site`` starts EPs in this process
(gRPC and HTTP on free loopback ports, fake plugins, any configuration),
each with a gRPC stub and an aiohttp client for its HTTP door (see
tests/http_site.py); ``booking_site`` is one that takes bookings, with two
callers (alice and bob, ``schedule.rpc_site.TOKENS``) and a clock the test
sets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from http_site import Site, StartSite, booking_config, sites
from schedule.rpc_site import Booker, Clock


@pytest.fixture
async def site() -> AsyncIterator[StartSite]:
    async with sites() as start:
        yield start


@pytest.fixture
async def booking_site(site: StartSite, tmp_path: Path) -> Site:
    """A site that books (the Booker plugin, a clock at ``rpc_site.T0``)."""
    return await site(booking_config(tmp_path), Booker(), clock=Clock())
