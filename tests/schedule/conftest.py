"""Fixtures for the ledger contract: every test that takes ``ledger``,
``store`` or ``new_store`` runs once per backend in ``ledgers.BACKENDS``."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from schedule.ledgers import BACKENDS, Store

from ep_server.schedule.ledger import Ledger


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
def store(new_store: Callable[[], Store]) -> Store:
    """One empty store."""
    return new_store()


@pytest.fixture
def ledger(store: Store) -> Ledger:
    """A ledger with ``ledgers.POOLS`` on an empty store."""
    return store.open()
