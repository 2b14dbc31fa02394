"""What the ledger tests share: times, placements, brute-force checks, and
the backends the ledger contract runs against.

Times are whole hours/minutes after T0 so that boundaries touch exactly.
The invariant is checked against a brute-force sweep, never only against
the ledger's own ``peak``.

A backend is a :class:`Store` factory: each store is one empty place for a
ledger's data (a SQLite file, or a schema of its own in the test PostgreSQL
database) that tests open a ledger on, and open again to see what survived.

PostgreSQL is required: the server at :data:`POSTGRES` (``EP_TEST_POSTGRES``
overrides it) must be running, or every PostgreSQL test fails saying so.
"""

from __future__ import annotations

import abc
import itertools
import json
import os
import random
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ep_server.model import Booking, Schedule, Slot, Window
from ep_server.schedule.ledger import Candidate, HeldOffer, Ledger, OccupancyStep, Placement
from ep_server.schedule.postgres import PostgresLedger
from ep_server.schedule.sqlite import SQLiteLedger

T0 = datetime(2030, 1, 7, tzinfo=UTC)
H = timedelta(hours=1)
M = timedelta(minutes=1)
GIB = 2**30
POOLS = {"cores": 16, "memory": 16 * GIB, "gpus": 2}
ALL_TIME = Slot(T0 - 1000 * H, T0 + 20_000 * H)
HORIZON = timedelta(days=366)
PURGE_AFTER = timedelta(days=1)


def at(hours: float) -> datetime:
    return T0 + hours * H


def cand(plugin: str = "p", **need: int) -> Candidate:
    return Candidate(plugin, f"svc-{plugin}", {"plugin": plugin}, need)


def ask(
    *windows: tuple[float, float],
    need: Mapping[str, int] | None = None,
    owner: str = "alice",
    ask_id: str = "a1",
    shortest: float = 2,
    longest: float | None = None,
    candidates: tuple[Candidate, ...] | None = None,
    **kw: object,
) -> Placement:
    """A placement for windows given in hours after T0."""
    schedule = Schedule(
        tuple(Window(at(a), at(b)) for a, b in windows),
        shortest * H,
        None if longest is None else longest * H,
    )
    only = Candidate("p", "svc-p", {"plugin": "p"}, need or {"cores": 1})
    cands = candidates if candidates is not None else (only,)
    return Placement(owner, ask_id, cands, schedule, **kw)  # type: ignore[arg-type]


def book(led: Ledger, start: float, end: float, owner: str = "alice", **need: int) -> Booking:
    """Hold exactly [start, end) hours and accept it (fails if it does not fit there)."""
    ask_id = f"book-{owner}-{start}-{end}-{sorted(need.items())}-{random.random()}"
    offers = led.place(
        ask((start, start), need=need, owner=owner, ask_id=ask_id, shortest=end - start), T0
    )
    assert offers, f"[{start}, {end}) does not fit {need}"
    assert offers[0].slot == Slot(at(start), at(end))
    booking, created = led.accept(offers[0].id, owner, T0)
    assert created
    return booking


def starts(offers: Iterable[HeldOffer]) -> list[datetime]:
    return [o.slot.start for o in offers]


# --- Brute force ------------------------------------------------------------------

Interval = tuple[datetime, datetime, Mapping[str, int]]


def brute_peak(holds: list[Interval], pool: str) -> int:
    """Max usage at any instant: usage is highest at some hold's start."""
    best = 0
    for start, _, _ in holds:
        usage = sum(n.get(pool, 0) for s, e, n in holds if s <= start < e)
        best = max(best, usage)
    return best


def assert_occupancy(
    steps: list[OccupancyStep],
    booked: list[Interval],
    offered: list[Interval],
    pool: str,
    lo: datetime,
    hi: datetime,
) -> None:
    """``steps`` are contiguous over ``[lo, hi)``, no two neighbours alike,
    and at every instant where a hold starts or ends (and at ``lo``) say
    what a sweep of ``booked`` and ``offered`` holds."""
    if hi <= lo:
        assert steps == []
        return
    assert [steps[0].start, steps[-1].end] == [lo, hi]
    for a, b in itertools.pairwise(steps):
        assert a.end == b.start
        assert (a.booked, a.offered) != (b.booked, b.offered)
    assert all(s.start < s.end for s in steps)
    instants = {lo} | {t for s, e, _ in booked + offered for t in (s, e) if lo <= t < hi}
    for t in instants:
        [step] = [s for s in steps if s.start <= t < s.end]
        held = [sum(n.get(pool, 0) for s, e, n in hs if s <= t < e) for hs in (booked, offered)]
        assert [step.booked, step.offered] == held, t


def assert_within(holds: list[Interval], pools: Mapping[str, int]) -> None:
    for pool, cap in pools.items():
        assert brute_peak(holds, pool) <= cap, f"pool {pool} overbooked"


def file_holds(path: Path, now: datetime) -> list[Interval]:
    """BOOKED bookings and unexpired offers, read straight from a closed
    SQLite ledger file, after checking the file's integrity."""
    us = int((now - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
    db = sqlite3.connect(path)
    try:
        rows = db.execute(
            "SELECT start_us, end_us, need FROM bookings WHERE state = 1 UNION ALL "
            "SELECT start_us, end_us, need FROM offers WHERE expire_us > ?",
            (us,),
        ).fetchall()
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        db.close()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    micro = timedelta(microseconds=1)
    return [(epoch + s * micro, epoch + e * micro, json.loads(n)) for s, e, n in rows]


def prepare_offers(open_ledger: Callable[[], Ledger], count: int) -> list[HeldOffer]:
    """One held offer each for ``count`` owners, crowded into two weeks."""
    rng = random.Random(5)
    led = open_ledger()
    offers: list[HeldOffer] = []
    for i in range(count):
        need = {"cores": rng.randint(1, 16), "memory": rng.randint(1, 64) * GIB}
        start = rng.randint(0, 72)
        placement = ask(
            (start, start + 14 * 24),
            need=need,
            owner=f"owner{i}",
            ask_id=f"ask{i}",
            shortest=rng.randint(1, 8),
            ttl=timedelta(days=1),
            max_offers=1,
        )
        offers.extend(led.place(placement, T0))
    led.close()
    return offers


# --- Backends ---------------------------------------------------------------------


class Store(abc.ABC):
    """One empty store of a backend. Every ledger opened on it sees what the
    ones before it committed; :meth:`close` closes them all and removes the
    store."""

    #: Whether several ledgers may be open on the store at once (replicas).
    shared = False

    def __init__(self) -> None:
        self.opened: list[Ledger] = []

    def open(
        self,
        pools: Mapping[str, int] = POOLS,
        horizon: timedelta = HORIZON,
        purge_after: timedelta = PURGE_AFTER,
    ) -> Ledger:
        """A ledger on this store: ``pools``' capacities, slots starting at
        most ``horizon`` after now, expired offers kept ``purge_after``."""
        ledger = self._open(pools, horizon, purge_after)
        self.opened.append(ledger)
        return ledger

    @abc.abstractmethod
    def _open(self, pools: Mapping[str, int], horizon: timedelta, purge_after: timedelta) -> Ledger:
        """Open a ledger of this backend on the store."""

    @abc.abstractmethod
    def holds(self, now: datetime) -> list[Interval]:
        """BOOKED bookings and offers unexpired at ``now``, read straight
        from the store (no ledger open), after checking its integrity."""

    def close(self) -> None:
        for ledger in self.opened:
            ledger.close()


class SQLiteStore(Store):
    """A SQLite file. ``synchronous=OFF``: these tests reopen a ledger after
    closing it, never after a crash (``test_sqlite.py`` kills one)."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "ledger.sqlite3"

    def _open(self, pools: Mapping[str, int], horizon: timedelta, purge_after: timedelta) -> Ledger:
        return SQLiteLedger(self.path, pools, horizon, synchronous="OFF", purge_after=purge_after)

    def holds(self, now: datetime) -> list[Interval]:
        return file_holds(self.path, now)

    def close(self) -> None:
        super().close()
        for path in self.path.parent.glob(self.path.name + "*"):
            path.unlink()


#: The PostgreSQL database the tests use (trust authentication); each store
#: is a schema of its own in it, dropped when the store closes.
POSTGRES = os.environ.get("EP_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_connect(dsn: str = POSTGRES) -> psycopg.Connection[Any]:
    """An autocommit connection; a test fails (never skips) when the
    server cannot be reached."""
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"these tests need PostgreSQL at {dsn} (EP_TEST_POSTGRES): {exc}\nStart it "
            "with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
            pytrace=False,
        )


class PostgresStore(Store):
    """A schema of its own in the test database; its ledgers find it
    through the DSN's ``search_path``, as a site's replicas do.
    ``synchronous_commit=off``: as for SQLiteStore, these tests reopen a
    ledger after closing it, never after a crash of the server."""

    shared = True

    def __init__(self, directory: Path | None = None) -> None:
        super().__init__()
        self.schema = f"ep_test_{uuid.uuid4().hex[:16]}"
        self.dsn = make_conninfo(
            POSTGRES, options=f"-csearch_path={self.schema} -csynchronous_commit=off"
        )
        with postgres_connect() as admin:
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(self.schema)))

    def _open(self, pools: Mapping[str, int], horizon: timedelta, purge_after: timedelta) -> Ledger:
        return PostgresLedger(self.dsn, pools, horizon, purge_after, connections=2, timeout=30)

    def holds(self, now: datetime) -> list[Interval]:
        us = int((now - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
        with postgres_connect(self.dsn) as db:
            rows = db.execute(
                "SELECT start_us, end_us, need FROM ep_bookings WHERE state = 1 UNION ALL "
                "SELECT start_us, end_us, need FROM ep_offers WHERE expire_us > %s",
                (us,),
            ).fetchall()
            accepted_still_offered = db.execute(
                "SELECT count(*) FROM ep_offers o JOIN ep_bookings b ON b.offer_id = o.id"
            ).fetchone()
            states = db.execute("SELECT DISTINCT state FROM ep_bookings").fetchall()
        assert accepted_still_offered == (0,), "an accepted offer is still offered"
        assert {state for (state,) in states} <= {1, 2}
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        micro = timedelta(microseconds=1)
        return [(epoch + s * micro, epoch + e * micro, n) for s, e, n in rows]

    def close(self) -> None:
        super().close()
        with postgres_connect() as admin:
            admin.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
            )


#: Backend name -> a store factory given a fresh, empty directory.
BACKENDS: dict[str, Callable[[Path], Store]] = {"sqlite": SQLiteStore, "postgres": PostgresStore}
