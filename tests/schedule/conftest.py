"""Fixtures for the schedule's tests.

The ledger contract: every test that takes ``ledger``, ``store`` or
``new_store`` runs once per backend in ``ledgers.BACKENDS``; ``pg_store``
is an empty PostgreSQL store, for what only that backend promises.
Bookings on a real server: ``site`` starts EPs with a booking plugin and
two callers with tokens; ``slot_site`` starts EPs with a 0.3 s plugin deadline for the
``ep_slot``/``ep_resources`` budget tests."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from fake_plugins.common import FakeSource
from schedule.ledgers import BACKENDS, PostgresStore, Store
from schedule.rpc_site import Booker, Clock, tokens_file

from ep_server.host import detect_host
from ep_server.pb import execution_planner_pb2_grpc as pb_grpc
from ep_server.plugins import load_registry
from ep_server.schedule.ledger import Ledger
from ep_server.server import start_server
from ep_server.testing import build_settings


@pytest.fixture(params=sorted(BACKENDS))
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """Make empty stores of one backend (closed and removed at teardown)."""
    make = BACKENDS[request.param]
    stores: list[Store] = []
    count = itertools.count()

    def new() -> Store:
        stores.append(make(tmp_path / f"store{next(count)}"))
        return stores[-1]

    yield new
    for store in stores:
        store.close()


@pytest.fixture
def pg_store() -> Iterator[PostgresStore]:
    """An empty schema of its own in the test PostgreSQL database."""
    store = PostgresStore()
    yield store
    store.close()


@pytest.fixture
def store(new_store: Callable[[], Store]) -> Store:
    """One empty store."""
    return new_store()


@pytest.fixture
def ledger(store: Store) -> Ledger:
    """A ledger with ``ledgers.POOLS`` on an empty store."""
    return store.open()


@pytest.fixture
async def site(tmp_path):
    running = []

    async def start(schedule=None, plugin=None, ledger=":memory:", plugins=None):
        clock = Clock()
        plugin = plugin or Booker()
        config = {
            "plugins": plugins or {},
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
